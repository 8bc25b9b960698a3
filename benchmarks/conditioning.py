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
from collections.abc import Callable
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


def run_jobs(
    jobs: list[dict[str, Any]], workers: int, task: Callable[..., dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """``task`` (default: :func:`sample_arm`) of each job, on ``workers`` processes."""
    task = task or sample_arm
    if workers <= 1:
        return [task(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(task, jobs))


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


def measure(name: str, structures: list) -> list[float]:
    """``name`` of each structure as the labels computed it (``property_compute.COMPUTERS``;
    the MLFF ones belong on relaxed samples); NaN where it has none."""
    from model import property_compute

    if name not in property_compute.COMPUTERS:
        raise SystemExit(f"{name} is not computable offline at its labels' level of theory")
    outcomes = property_compute.compute_chunk(name, structures, "chgnet")
    return [float(o.value) if o.labelled else float("nan") for o in outcomes]


def relaxed_path(samples: Path) -> Path:
    """Where :func:`relax_arm` keeps an arm's relaxed samples (its evaluation: without suffix)."""
    return samples.with_name(samples.stem + "-relaxed.extxyz")


def relax_arm(job: dict[str, Any]) -> dict[str, Any]:
    """Relax one arm's samples with CHGNet (cached beside them as ``*-relaxed.extxyz``) and,
    with ``sun``, score them with ``crystalforge evaluate``; runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    from evaluation.io.crystals import read_crystals, write_extxyz
    from evaluation.records import CrystalRecord
    from evaluation.relax.run import relax

    samples = Path(job["samples"])
    relaxed = relaxed_path(samples)
    if samples.exists() and not relaxed.exists():
        records = read_crystals(samples).records
        results = relax(records, "chgnet", 0.05, 500, progress=False)
        kept = [
            CrystalRecord(result.structure, record.id, record.source, dict(record.properties))
            for record, result in zip(records, results, strict=True)
            if result.ok and result.structure is not None
        ]
        if kept:
            write_extxyz(kept, relaxed)
    scored = evaluate_sun(relaxed, relaxed.with_suffix(""), 1) if job.get("sun") else None
    return {"relaxed": str(relaxed), "sun": scored}


def relaxed_samples(path: Path) -> tuple[list, list[bool | None]]:
    """The relaxed structures of an arm and each one's S.U.N. verdict (None: not scored)."""
    from evaluation.io.crystals import read_crystals

    relaxed = relaxed_path(path)
    if not relaxed.exists():
        return [], []
    records = read_crystals(relaxed).records
    table = relaxed.with_suffix("") / "structures.csv"
    verdicts: dict[str, bool] = {}
    if table.exists():
        import pandas as pd

        frame = pd.read_csv(table)
        verdicts = dict(zip(frame["id"].astype(str), frame["sun"].astype(bool), strict=True))
    return [r.structure for r in records], [verdicts.get(r.id) for r in records]


def parse_arm(text: str) -> dict[str, str]:
    """``"magnetic_density>=0.1;hhi<=1500"`` → the conditions of one arm (``;`` joins them)."""
    from model.property_data import split_condition

    return dict(split_condition(part) for part in text.split(";") if part.strip())


def summarise(values: np.ndarray) -> dict[str, Any]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"n": 0}
    quartiles = np.percentile(values, [25, 50, 75])
    return {"n": int(len(values)), "mean": float(values.mean()), "quartiles": list(quartiles)}


def scalar_section(args: argparse.Namespace) -> dict[str, Any]:
    """Fig. 5a-c / Fig. 6: property distributions and target shares per arm, of all relaxed
    samples and of the S.U.N. ones."""
    from model.checkpoint import read_payload
    from model.finetune import specs_of
    from model.property_data import parse_target

    checkpoint = str(args.scalar_checkpoint)
    specs = {spec.name: spec for spec in specs_of(read_payload(checkpoint))}
    arms = {"unconditioned": {}} | {text: parse_arm(text) for text in args.targets}
    measured = sorted({name for conditions in arms.values() for name in conditions})
    for name in measured:
        if name not in specs:
            raise SystemExit(f"{checkpoint} is not fine-tuned on {name}")
    intervals = {
        text: {name: parse_target(specs[name], value) for name, value in conditions.items()}
        for text, conditions in arms.items()
    }
    needs_relaxation = args.sun or any(name != "hhi" for name in measured)
    work = args.work / (args.name or Path(checkpoint).stem)
    jobs, outs = [], []
    for index, conditions in enumerate(arms.values()):
        out = work / f"{index:02d}.extxyz"
        job = dict(checkpoint=checkpoint, conditions=conditions, out=str(out), seed=args.seed)
        jobs.append(dict(job, samples=args.samples, steps=args.steps))
        outs.append(out)
    timings = run_jobs(jobs, args.jobs)
    if needs_relaxation:
        scored = [dict(samples=str(out), sun=True) for out in outs]
        run_jobs(scored, args.jobs, relax_arm)
    section: dict[str, Any] = {
        "checkpoint": checkpoint,
        "samples": args.samples,
        "guidance": 2.0,
        "properties": {name: specs[name].to_dict() | {"atom_counts": None} for name in measured},
        "measured_on": "CHGNet-relaxed samples" if needs_relaxation else "samples as generated",
        "arms": {},
    }
    for (text, _), out, timing in zip(arms.items(), outs, timings, strict=True):
        if needs_relaxation:
            structures, sun = relaxed_samples(out)
        else:
            structures, sun = [r.structure for r in read_samples(out)], []
        values = {name: np.array(measure(name, structures)) for name in measured}
        sun_mask = np.array([bool(v) for v in sun]) if sun else np.zeros(len(structures), bool)
        row: dict[str, Any] = {
            "sampling_seconds": timing["seconds"],
            "structures": len(structures),
            "sun": int(sun_mask.sum()) if sun else None,  # None: not scored
            "all": {name: summarise(v) for name, v in values.items()},
            "among_sun": {name: summarise(v[sun_mask]) for name, v in values.items()},
            "share_meeting": {},
            "share_meeting_among_sun": {},
        }
        for other, targets in intervals.items():
            if not targets:
                continue
            meets = meeting(values, targets)  # a sample without a value does not meet it
            row["share_meeting"][other] = float(meets.mean()) if len(meets) else None
            row["share_meeting_among_sun"][other] = (
                float(meets[sun_mask].mean()) if sun_mask.any() else None
            )
        section["arms"][text] = row
    if args.labels:
        section["labelled_data"] = labelled_data(args.labels, measured, intervals)
    return section


def meeting(values: dict[str, np.ndarray], targets: dict[str, Any]) -> np.ndarray:
    """Whether each structure's values lie in every one of ``targets``' intervals."""
    size = len(next(iter(values.values())))
    meets = np.ones(size, bool)
    for name, interval in targets.items():
        meets &= np.array([bool(np.isfinite(v) and interval.contains(v)) for v in values[name]])
    return meets


def labelled_data(path: Path, measured: list[str], intervals: dict) -> dict[str, Any]:
    """The fine-tuning labels themselves (Fig. 5's comparison): medians, and the share of the
    crystals labelled for every property of a target that meet it."""
    import pandas as pd

    table = pd.read_csv(path)
    values = {name: table[name].to_numpy(float) for name in measured}
    row: dict[str, Any] = {
        "source": str(path),
        "all": {name: summarise(v) for name, v in values.items()},
        "share_meeting": {},
    }
    for text, targets in intervals.items():
        if targets:
            labelled = np.all([np.isfinite(values[name]) for name in targets], axis=0)
            meets = meeting(values, targets)[labelled]
            row["share_meeting"][text] = float(meets.mean()) if len(meets) else None
    return row


def read_samples(path: Path) -> list:
    from evaluation.io.crystals import read_crystals

    return read_crystals(path).records if path.exists() else []


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
    for name, section in (report.get("scalar") or {}).items():
        lines += scalar_markdown(name, section)
    return "\n".join(lines) + "\n"


def scalar_markdown(name: str, section: dict[str, Any]) -> list[str]:
    """One scalar checkpoint's table: medians per property, shares meeting each target."""
    properties = list(section["properties"])
    targets = [t for t in section["arms"] if t != "unconditioned"]
    units = {p: section["properties"][p].get("unit") or "" for p in properties}
    lines = [
        f"Scalar `{name}` (`{Path(section['checkpoint']).name}`), {section['samples']} samples "
        f"per arm, guidance {section['guidance']}, measured on {section['measured_on']}; "
        "shares are all / S.U.N.",
        "",
    ]
    header = ["condition", "structures", "S.U.N."]
    header += [f"median {p} {units[p]}".rstrip() for p in properties]
    header += [f"meets {t}" for t in targets]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def share(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    rows = dict(section["arms"])
    if section.get("labelled_data"):
        rows["labelled data"] = section["labelled_data"] | {"structures": "", "sun": None}
    for condition, row in rows.items():
        sun = "–" if row["sun"] is None else str(row["sun"])
        cells = [condition, str(row["structures"]), sun]
        for p in properties:
            stats = row["all"][p]
            cells.append(f"{stats['quartiles'][1]:.4g}" if stats["n"] else "–")
        for t in targets:
            among_sun = row.get("share_meeting_among_sun")
            cells.append(
                share(row["share_meeting"].get(t))
                + ("" if among_sun is None else f" / {share(among_sun.get(t))}")
            )
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chemsys-checkpoint", type=Path)
    parser.add_argument("--base", type=Path, help="unconditional model (default: shipped)")
    parser.add_argument("--systems", type=lambda s: s.split(","), default=list(DEFAULT_SYSTEMS))
    parser.add_argument("--scalar-checkpoint", type=Path)
    parser.add_argument(
        "--targets",
        nargs="*",
        default=[],
        help='arms of --scalar-checkpoint: "hhi<=1500", "magnetic_density>=0.1;hhi<=1500" (joint)',
    )
    parser.add_argument(
        "--labels",
        type=Path,
        help="the fine-tuning labels (a build's properties.csv.gz), for the labelled-data row",
    )
    parser.add_argument("--name", help="section name (default: the checkpoint's file stem)")
    parser.add_argument(
        "--sun", action="store_true", help="relax and score scalar arms even for hhi (slow)"
    )
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
    scalar = {}
    if args.scalar_checkpoint:
        if not args.targets:
            raise SystemExit("--scalar-checkpoint needs --targets")
        scalar[args.name or args.scalar_checkpoint.stem] = scalar_section(args)
    path = RESULTS / "conditioning.json"
    report = json.loads(path.read_text()) if path.exists() else {}  # read late: merge sections
    if "checkpoint" in report.get("scalar", {}):  # the one-section layout before joint targets
        del report["scalar"]
    report.setdefault("scalar", {}).update(scalar)
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
