"""Benchmark: quality of unconditional MatterGen samples against random structure search (RSS).

    python benchmarks/generation_quality.py --dataset runs/dataset [--checkpoint CKPT]
        [--num-samples 1024] [--work runs/quality] [--steps N] [--jobs 2]
        [--stages generate,rss,evaluate,report]

1. ``generate``: ``--num-samples`` unconditional samples from the checkpoint (default: the
   shipped one) at its default number of sampling steps, atom counts from its training data.
2. ``rss``: as many RSS structures (the campaign's generator, pyxtal, AIRSS settings) over the
   same element set and atom-count distribution: candidate ``i`` takes the chemical system and
   the atom count of a training crystal drawn at random (seeded; single-element systems, which
   RSS does not do, are drawn again).
3. ``evaluate``: both sets through ``crystalforge evaluate --relax chgnet`` with one config
   (``configs/evaluation/benchmark.yaml``): the verdicts of ``evaluation.metrics.sun`` on the
   DFT hull of the known phases (``--hull known-phases``), novelty against the shipped
   reference set.
4. ``report``: the two summaries side by side (S.U.N. also split by elements per sample and
   restricted to samples whose hull holds every known hull phase), plus the chemistry profiles
   (``evaluation.metrics.chemistry``) of the as-generated structures against the training data.
   Written to ``benchmarks/results/generation_quality.{json,md}``.

Each stage skips work whose output already exists in ``--work``, so the benchmark resumes.
The goal (issue 5): S.U.N. rate at least 2x RSS's, average RMSD at most 1/3 of RSS's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Structure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = ROOT / "configs" / "evaluation" / "benchmark.yaml"
SYMPREC = 0.1
GENERATORS = ("mattergen", "rss")


def training_crystals(dataset: Path) -> tuple[list[str], list[int], list[Structure]]:
    """Chemical systems, atom counts and structures of the training split."""
    from model.data import CrystalTensors
    from model.structures import batch_to_structures

    tensors = CrystalTensors.load(dataset / "dataset.pt")
    labels = pd.read_csv(dataset / "labels.csv.gz", keep_default_na=False)
    train_ids = set(labels.loc[labels["split"] == "train", "id"])
    indices = [i for i, name in enumerate(tensors.ids) if name in train_ids]
    import torch

    structures = batch_to_structures(tensors.batch(torch.tensor(indices)))
    chemsys = [s.composition.chemical_system for s in structures]
    return chemsys, [len(s) for s in structures], structures


def stage_generate(
    work: Path, checkpoint: Path | None, num: int, steps: int | None, jobs: int
) -> None:
    """``num`` samples in ``jobs`` processes of one torch thread each (seeds 0..jobs-1)."""
    from evaluation.io.crystals import read_crystals, write_extxyz

    out = work / "mattergen.extxyz"
    if out.exists():
        return
    started = time.perf_counter()
    processes = []
    for part in range(jobs):
        command = [sys.executable, "-m", "pipeline", "generate"]
        command += ["--num-samples", str(num // jobs + (part < num % jobs))]
        command += ["--out", str(work / f"mattergen-part{part}.extxyz")]
        command += ["--batch-size", "128", "--seed", str(part)]
        command += ["--checkpoint", str(checkpoint)] if checkpoint else []
        command += ["--steps", str(steps)] if steps else []
        processes.append(subprocess.Popen(command, cwd=ROOT))
    if any(process.wait() != 0 for process in processes):
        raise SystemExit("a generate process failed")
    records = []
    for part in range(jobs):
        records += read_crystals(work / f"mattergen-part{part}.extxyz").records
    write_extxyz(records, out)
    _write_json(
        work / "mattergen-timing.json",
        {"seconds": time.perf_counter() - started, "processes": jobs, "samples": len(records)},
    )


def stage_rss(work: Path, dataset: Path, num: int) -> None:
    from evaluation.io.crystals import write_extxyz
    from flows.generators.rss import generate_rss

    out = work / "rss.extxyz"
    if out.exists():
        return
    chemsys, counts, _ = training_crystals(dataset)
    rng = np.random.default_rng(0)
    records, failures, draws = [], 0, 0
    started = time.perf_counter()
    while len(records) < num:
        draws += 1
        pick = int(rng.integers(len(chemsys)))
        elements = chemsys[pick].split("-")
        if len(elements) < 2 or counts[pick] < len(elements):
            continue
        result = generate_rss(
            chemsys[pick],
            1,
            seed=len(records),
            atoms_per_cell=(counts[pick], counts[pick]),
            max_attempts_per_candidate=5,
        )
        if result.records:
            record = result.records[0]
            record.id = f"rss-{len(records)}"
            records.append(record)
        else:
            failures += 1
        if len(records) % 64 == 0 and result.records:
            print(f"rss {len(records)}/{num} ({time.perf_counter() - started:.0f} s)", flush=True)
    write_extxyz(records, out)
    _write_json(
        work / "rss-timing.json",
        {"seconds": time.perf_counter() - started, "draws": draws, "failed_draws": failures},
    )


def stage_evaluate(work: Path, dataset: Path, jobs: int) -> None:
    for name in GENERATORS:
        out = work / f"eval-{name}"
        if (out / "summary.json").exists() or not (work / f"{name}.extxyz").exists():
            continue  # done, or its samples are not there yet
        command = [sys.executable, "-m", "pipeline", "evaluate", str(work / f"{name}.extxyz")]
        command += ["--relax", "chgnet", "--config", str(CONFIG), "--n-jobs", str(jobs)]
        # the verdicts of evaluation.metrics.sun: E_hull on the DFT hull of the known phases (CHGNet
        # energies on the MP2020 scale), novelty verified against the shipped reference
        command += ["--hull", "known-phases", "--output", str(out)]
        subprocess.run(command, check=True, cwd=ROOT)


def describe(structures: list[Structure]) -> dict[str, Any]:
    """The chemistry profile of a set (``evaluation.metrics.chemistry``)."""
    from evaluation.metrics.chemistry import describe as profile

    return profile(structures, SYMPREC)


def plot_distributions(report: dict[str, Any], path: Path) -> None:
    """Elements, atoms per cell and space groups of both generators next to the training data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = {
        "training": report["training_data"],
        "MatterGen": report["mattergen"]["distributions"],
        "RSS": report["rss"]["distributions"],
    }
    panels = [
        ("elements", "element (25 most common in training)", 25, False),
        ("atoms_per_cell", "atoms per cell", None, True),
        ("space_groups", "space group (15 most common in any set)", 15, False),
    ]
    figure, axes = plt.subplots(3, 1, figsize=(11, 10))
    for axis, (key, title, top, numeric) in zip(axes, panels, strict=True):
        if numeric:
            keys = sorted({k for d in sets.values() for k in d[key]}, key=int)
        elif key == "elements":
            keys = list(sets["training"][key])[:top]
        else:
            merged = Counter()
            for d in sets.values():
                merged.update(d[key])
            keys = [k for k, _ in merged.most_common(top)]
        width = 0.8 / len(sets)
        for offset, (name, data) in enumerate(sets.items()):
            x = np.arange(len(keys)) + (offset - 1) * width
            axis.bar(x, [data[key].get(k, 0.0) for k in keys], width, label=name)
        axis.set_xticks(np.arange(len(keys)), keys, fontsize=8)
        axis.set_ylabel("fraction")
        axis.set_title(title, fontsize=10)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _true(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def by_elements(rows: pd.DataFrame) -> dict[str, Any]:
    """S.U.N. from 1-3- and 4+-element samples, and on complete hulls: hulls of systems with
    many elements hold few known phases, so "stable" is easy there."""
    from pymatgen.core import Composition

    total = len(rows)
    n_elements = [len(Composition(f).elements) if f else 0 for f in rows["formula"]]
    sun = [_true(v) for v in rows["sun"]]
    complete = [_true(v) for v in rows["hull_complete"]]
    groups = {}
    for name, members in (("1-3", range(1, 4)), ("4+", range(4, 200))):
        picked = [i for i, n in enumerate(n_elements) if n in members]
        hits = sum(sun[i] for i in picked)
        groups[name] = {
            "n": len(picked),
            "frac_sun_within": hits / len(picked) if picked else None,
            "frac_sun_of_all": hits / total,
        }
    return {
        "by_n_elements": groups,
        "frac_complete_hull": sum(complete) / total,
        "frac_sun_complete_hull": sum(s and c for s, c in zip(sun, complete, strict=True)) / total,
    }


def stage_report(work: Path, dataset: Path) -> dict[str, Any]:
    from evaluation.io.crystals import read_crystals
    from evaluation.metrics.chemistry import compare

    _, _, train_structures = training_crystals(dataset)
    rng = np.random.default_rng(1)
    subset = rng.choice(len(train_structures), min(1024, len(train_structures)), replace=False)
    training = describe([train_structures[i] for i in sorted(subset)])
    report: dict[str, Any] = {
        "config": json.loads(json.dumps(_yaml(CONFIG))),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "training_data": {**training, "source": str(dataset), "n_total": len(train_structures)},
    }
    dataset_report = json.loads((dataset / "report.json").read_text())
    report["training_data"]["level_of_theory"] = dataset_report["level_of_theory"]
    for name in GENERATORS:
        summary = json.loads((work / f"eval-{name}" / "summary.json").read_text())
        rows = pd.read_csv(work / f"eval-{name}" / "structures.csv", keep_default_na=False)
        structures = [r.structure for r in read_crystals(work / f"{name}.extxyz").records]
        shape = describe(structures)
        shape.update({f"{k}_vs_training": v for k, v in compare(shape, training).items()})
        relax = Counter(rows["relax_status"])
        timing_file = work / f"{name}-timing.json"
        split = by_elements(rows)
        summary = {**summary, **{k: v for k, v in split.items() if k.startswith("frac_")}}
        report[name] = {
            "by_n_elements": split["by_n_elements"],
            "summary": summary,
            "distributions": shape,
            "relax_status": dict(relax),
            "generation": json.loads(timing_file.read_text()) if timing_file.exists() else {},
        }
    mg, rss = report["mattergen"]["summary"], report["rss"]["summary"]
    report["goal"] = {
        "sun_ratio": _ratio(mg["frac_sun"], rss["frac_sun"]),
        "sun_ratio_goal": 2.0,
        "rmsd_ratio": _ratio(mg["avg_rmsd"], rss["avg_rmsd"]),
        "rmsd_ratio_goal": 1 / 3,
    }
    RESULTS.mkdir(exist_ok=True)
    plot_distributions(report, RESULTS / "generation_quality_distributions.png")
    _write_json(RESULTS / "generation_quality.json", report)
    (RESULTS / "generation_quality.md").write_text(markdown(report))
    print(markdown(report))
    return report


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The side-by-side table of the model card and the results folder."""
    rows = [
        ("structures evaluated", "n_structures"),
        ("valid (structure and composition)", "frac_valid"),
        ("unique", "frac_unique"),
        ("novel (vs shipped reference)", "frac_novel"),
        ("stable, E_hull <= 0.1 eV/atom", "frac_stable"),
        ("on or below hull, E_hull <= 0", "frac_on_hull"),
        ("novelty unverified (known MP composition)", "frac_unverified"),
        ("S.U.N. rate (E_hull <= 0.1)", "frac_sun"),
        ("S.U.N. rate (E_hull <= 0)", "frac_sun_on_hull"),
        ("samples whose hull holds every known phase", "frac_complete_hull"),
        ("S.U.N. rate on such complete hulls", "frac_sun_complete_hull"),
        ("average E_hull, eV/atom", "avg_e_above_hull"),
        ("average RMSD to relaxed, Å", "avg_rmsd"),
    ]
    mg, rss = report["mattergen"], report["rss"]
    lines = ["| metric | MatterGen (shipped) | RSS | training data |", "|---|---|---|---|"]
    for title, key in rows:
        lines.append(f"| {title} | {_fmt(mg['summary'][key])} | {_fmt(rss['summary'][key])} | |")
    for title, key in (
        ("P1 fraction (symprec 0.1)", "p1_fraction"),
        ("distinct space groups", "distinct_space_groups"),
        ("mean atoms per cell", "mean_atoms_per_cell"),
        ("mean elements per cell", "mean_elements_per_cell"),
    ):
        train = report["training_data"][key]
        lines.append(
            f"| {title} | {_fmt(mg['distributions'][key])} | "
            f"{_fmt(rss['distributions'][key])} | {_fmt(train)} |"
        )
    for title, key in (
        ("TV distance to training: elements", "tv_elements_vs_training"),
        ("TV distance to training: atoms per cell", "tv_atoms_per_cell_vs_training"),
        ("TV distance to training: space groups", "tv_space_groups_vs_training"),
    ):
        lines.append(
            f"| {title} | {_fmt(mg['distributions'][key])} | "
            f"{_fmt(rss['distributions'][key])} | 0 |"
        )
    for title, key in (("1-3", "1-3"), ("4+", "4+")):
        cells = []
        for data in (mg, rss):
            group = data["by_n_elements"][key]
            cells.append(f"{_fmt(group['frac_sun_of_all'])} ({group['n']} samples)")
        lines.append(f"| S.U.N. rate from {title}-element samples | {cells[0]} | {cells[1]} | |")
    status = [
        ", ".join(f"{k} {v}" for k, v in sorted(data["relax_status"].items())) for data in (mg, rss)
    ]
    lines.append(f"| CHGNet relaxation outcome | {status[0]} | {status[1]} | |")
    goal = report["goal"]
    lines += [
        "",
        "Verdicts of `evaluation/metrics/sun.py`: E_hull of CHGNet energies (MP2020 scale) on "
        "the DFT hull of MP-20's near-hull phases (`--hull known-phases`), novelty against the "
        "shipped reference set (a known MP composition it cannot confirm is unverified, not "
        "novel).",
        "",
        f"S.U.N. ratio MatterGen/RSS: {_fmt(goal['sun_ratio'], 2)} (goal >= 2); "
        f"RMSD ratio: {_fmt(goal['rmsd_ratio'], 2)} (goal <= 0.33).",
    ]
    return "\n".join(lines) + "\n"


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="`crystalforge data build` out")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--num-samples", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (model default)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--stages", default="generate,rss,evaluate,report")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    stages = set(args.stages.split(","))
    if "generate" in stages:
        stage_generate(args.work, args.checkpoint, args.num_samples, args.steps, args.jobs)
    if "rss" in stages:
        stage_rss(args.work, args.dataset, args.num_samples)
    if "evaluate" in stages:
        stage_evaluate(args.work, args.dataset, args.jobs)
    if "report" in stages:
        stage_report(args.work, args.dataset)


if __name__ == "__main__":
    main()
