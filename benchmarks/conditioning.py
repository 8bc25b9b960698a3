"""Benchmark: do fine-tuned checkpoints steer generation? Adherence to the conditions (issue 19).

    python benchmarks/conditioning.py [--chemsys-checkpoint CKPT] [--systems Li-Co-O,Sr-Ti-O]
        [--scalar-checkpoint CKPT --property hhi --targets "<=1500" "1500..3000" ">=6000"]
        [--samples 32] [--steps N] [--jobs 2] [--sun-systems Li-Co-O] [--work runs/conditioning]

Chemical system (paper D.4, MatterGen issues #96/#117): for each target system, ``--samples``
crystals from each arm:

* ``conditioned``: the fine-tuned checkpoint, ``chemical_system`` (and ``energy_above_hull=0``
  when it knows it) with guidance 2 and **no** element mask: the share of samples whose
  elements lie inside the system (1 - leakage) and the share with exactly the system;
* ``conditioned+mask``: the same with the element mask (leakage 0 by construction);
* ``base+mask``: the unconditional base model restricted to the system's elements by masking
  alone (what campaigns did before fine-tuning).

With ``--sun-systems`` each arm of those systems is also evaluated as
``benchmarks/generation_quality.py`` does
(``crystalforge evaluate --relax chgnet`` on the DFT hull of the known phases): S.U.N. rate
inside the system.

Scalar property (paper Fig. 5, ranges beyond it): for each ``--targets`` entry, samples of the
scalar checkpoint conditioned on it, against unconditioned samples of the same checkpoint: the
property of every sample (computable offline for ``hhi``, from the composition, at the labels'
own level), the share inside the target range, mean and quartiles. Results go to
``benchmarks/results/conditioning.{json,md}`` (merged by section); samples are kept in
``--work`` and reused.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = ROOT / "configs" / "evaluation" / "benchmark.yaml"
DEFAULT_SYSTEMS = ("Li-Co-O", "Sr-Ti-O", "Mg-Al-O", "Li-Fe-P-O")


def sample_arm(job: dict[str, Any]) -> dict[str, Any]:
    """One arm's samples (cached as extxyz under the work folder); runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    from evaluation.io.crystals import read_crystals, write_extxyz
    from flows.generators.mattergen import generate_structures

    out = Path(job["out"])
    if out.exists():
        records = read_crystals(out).records
        return {"out": str(out), "seconds": None, "kept": len(records), "cached": True}
    started = time.perf_counter()
    result = generate_structures(
        job["checkpoint"],
        job["samples"],
        batch_size=job["samples"],
        seed=job["seed"],
        num_steps=job["steps"],
        elements=job.get("elements"),
        device="cpu",
        conditions=job.get("conditions"),
        guidance=job.get("guidance", 2.0),
        element_mask=job.get("element_mask", True),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if result.records:
        write_extxyz(result.records, out)
    return {
        "out": str(out),
        "seconds": time.perf_counter() - started,
        "kept": len(result.records),
        "dropped": result.dropped,
        "cached": False,
    }


def run_jobs(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1:
        return [sample_arm(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(sample_arm, jobs))


def elements_of(path: Path) -> list[set[str]]:
    from evaluation.io.crystals import read_crystals

    if not path.exists():
        return []
    return [set(r.structure.symbol_set) for r in read_crystals(path).records]


def adherence(samples: list[set[str]], system: set[str]) -> dict[str, Any]:
    """Shares of samples inside the system and with exactly its elements."""
    n = len(samples)
    inside = sum(s <= system for s in samples)
    exact = sum(s == system for s in samples)
    return {
        "samples": n,
        "inside_system": inside / n if n else None,
        "leakage": 1 - inside / n if n else None,
        "exact_system": exact / n if n else None,
        "mean_elements": float(np.mean([len(s) for s in samples])) if n else None,
    }


def evaluate_sun(path: Path, out: Path, jobs: int) -> dict[str, Any] | None:
    """S.U.N. verdicts of ``crystalforge evaluate`` (as generation_quality.py runs it)."""
    if not path.exists():
        return None
    if not (out / "summary.json").exists():
        command = [sys.executable, "-m", "pipeline", "evaluate", str(path), "--relax", "chgnet"]
        command += ["--config", str(CONFIG), "--n-jobs", str(jobs), "--hull", "known-phases"]
        command += ["--output", str(out)]
        subprocess.run(command, check=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    keys = ("n_structures", "frac_sun", "frac_stable", "frac_novel", "avg_e_above_hull")
    return {key: summary.get(key) for key in keys}


def chemsys_section(args: argparse.Namespace) -> dict[str, Any]:
    from flows.generate import chemical_system_conditions
    from flows.generators.mattergen import checkpoint_for

    checkpoint = str(args.chemsys_checkpoint or checkpoint_for(frozenset({"chemical_system"})))
    work = args.work / "chemsys"
    jobs, plan = [], []
    for system in args.systems:
        _, conditions = chemical_system_conditions(checkpoint, system)
        if "chemical_system" not in conditions:
            raise SystemExit(f"{checkpoint} is not fine-tuned on chemical_system")
        elements = system.split("-")
        arms = {
            "conditioned": dict(checkpoint=checkpoint, conditions=conditions, element_mask=False),
            "conditioned+mask": dict(checkpoint=checkpoint, conditions=conditions),
            "base+mask": dict(checkpoint=str(args.base or ""), elements=elements),
        }
        for arm, settings in arms.items():
            out = work / f"{system}-{arm}.extxyz"
            jobs.append(
                dict(settings, out=str(out), samples=args.samples, seed=args.seed, steps=args.steps)
            )
            plan.append((system, arm, out))
    timings = run_jobs(jobs, args.jobs)
    section: dict[str, Any] = {"checkpoint": checkpoint, "samples": args.samples, "systems": {}}
    for (system, arm, out), timing in zip(plan, timings, strict=True):
        row = adherence(elements_of(out), set(system.split("-")))
        row["sampling_seconds"] = timing["seconds"]
        if system in args.sun_systems:
            row["sun"] = evaluate_sun(out, out.with_suffix(""), args.jobs)
        section["systems"].setdefault(system, {})[arm] = row
    section["mean"] = {
        arm: {
            key: float(np.mean([section["systems"][s][arm][key] for s in args.systems]))
            for key in ("inside_system", "leakage", "exact_system")
        }
        for arm in ("conditioned", "conditioned+mask", "base+mask")
    }
    return section


def hhi_of(path: Path) -> list[float]:
    """Production HHI of each sample (pymatgen's table, as the labels); NaN where undefined."""
    from evaluation.io.crystals import read_crystals
    from model.property_compute import hhi

    if not path.exists():
        return []
    values = []
    for record in read_crystals(path).records:
        outcome = hhi(record.structure)
        values.append(float(outcome.value) if outcome.labelled else float("nan"))
    return values


def scalar_section(args: argparse.Namespace) -> dict[str, Any]:
    from model.checkpoint import read_payload
    from model.finetune import specs_of
    from model.property_data import parse_target

    if args.property != "hhi":
        raise SystemExit("only hhi is computable offline at its labels' level of theory")
    checkpoint = str(args.scalar_checkpoint)
    specs = {spec.name: spec for spec in specs_of(read_payload(checkpoint))}
    spec = specs[args.property]
    work = args.work / args.property
    jobs, plan = [], []
    for index, target in enumerate([None, *args.targets]):
        name = "unconditioned" if target is None else target
        out = work / f"{index:02d}.extxyz"
        conditions = {} if target is None else {args.property: target}
        jobs.append(
            dict(
                checkpoint=checkpoint, conditions=conditions, out=str(out), samples=args.samples,
                seed=args.seed, steps=args.steps,
            )
        )  # fmt: skip
        plan.append((name, target, out))
    timings = run_jobs(jobs, args.jobs)
    section: dict[str, Any] = {
        "checkpoint": checkpoint,
        "samples": args.samples,
        "property": spec.to_dict() | {"atom_counts": None},
        "targets": {},
    }
    for (name, _target, out), timing in zip(plan, timings, strict=True):
        values = np.array([v for v in hhi_of(out) if np.isfinite(v)])
        row: dict[str, Any] = {"samples": int(len(values)), "sampling_seconds": timing["seconds"]}
        if len(values):
            row.update(
                mean=float(values.mean()),
                quartiles=[float(q) for q in np.percentile(values, [25, 50, 75])],
            )
        for other_name, other_target, _ in plan:
            if other_target is None:
                continue
            interval = parse_target(spec, other_target)
            share = float(np.mean([interval.contains(v) for v in values])) if len(values) else None
            row.setdefault("share_inside", {})[other_name] = share
        section["targets"][name] = row
    return section


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Conditioning benchmark", ""]
    chem = report.get("chemical_system")
    if chem:
        lines += [
            f"Chemical system: `{Path(chem['checkpoint']).name}`, {chem['samples']} samples per "
            "arm and system.",
            "",
            "| system | arm | inside system | exact system | mean elements | S.U.N. |",
            "|---|---|---|---|---|---|",
        ]
        for system, arms in chem["systems"].items():
            for arm, row in arms.items():
                sun = (row.get("sun") or {}).get("frac_sun")
                lines.append(
                    f"| {system} | {arm} | {row['inside_system']:.2f} | {row['exact_system']:.2f} "
                    f"| {row['mean_elements']:.2f} | {'' if sun is None else f'{sun:.2f}'} |"
                )
        lines.append("")
    scalar = report.get("scalar")
    if scalar:
        name = scalar["property"]["name"]
        lines += [f"Scalar property `{name}`: `{Path(scalar['checkpoint']).name}`", ""]
        targets = [t for t in scalar["targets"] if t != "unconditioned"]
        header = "| condition | mean | median | " + " | ".join(f"in {t}" for t in targets) + " |"
        lines += [header, "|" + "---|" * (3 + len(targets))]
        for condition, row in scalar["targets"].items():
            shares = " | ".join(
                ""
                if row.get("share_inside", {}).get(t) is None
                else f"{row['share_inside'][t]:.2f}"
                for t in targets
            )
            lines.append(
                f"| {condition} | {row.get('mean', float('nan')):.0f} | "
                f"{row.get('quartiles', [0, float('nan')])[1]:.0f} | {shares} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chemsys-checkpoint", type=Path)
    parser.add_argument("--base", type=Path, help="unconditional model (default: shipped)")
    parser.add_argument("--systems", type=lambda s: s.split(","), default=list(DEFAULT_SYSTEMS))
    parser.add_argument("--scalar-checkpoint", type=Path)
    parser.add_argument("--property", default="hhi")
    parser.add_argument("--targets", nargs="*", default=["<=1500", "1500..3000", ">=6000"])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--sun-systems",
        type=lambda s: s.split(","),
        default=[],
        help="systems whose arms are also evaluated for S.U.N. (relaxation: the slow part)",
    )
    parser.add_argument("--skip-chemsys", action="store_true")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "conditioning")
    args = parser.parse_args(argv)
    sections = {}
    if not args.skip_chemsys:
        sections["chemical_system"] = chemsys_section(args)
    if args.scalar_checkpoint:
        sections["scalar"] = scalar_section(args)
    path = RESULTS / "conditioning.json"
    report = json.loads(path.read_text()) if path.exists() else {}  # read late: merge sections
    report.update(
        sections,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    )
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / "conditioning.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
