"""Benchmark: does the space-group checkpoint generate crystals of the asked symmetry? (issue 19)

    python benchmarks/symmetry.py [--checkpoint CKPT] [--groups 2,1,12,...] [--samples 16]
        [--distribution-samples 96] [--unconditioned 64] [--jobs 2] [--work runs/symmetry]
        [--results benchmarks/results/symmetry]

Two tasks of the paper's D.5.1, at a CPU scale:

* **Target groups** (Fig. 4): two space groups per crystal system (default: the two with the
  most training crystals, as the paper drew from groups with >= 1000 training entries; ours has
  6,891 crystals in all). For each, ``--samples`` crystals conditioned on it (guidance 2, atom
  counts drawn from that group's training crystals) are relaxed with CHGNet and scored with
  ``crystalforge evaluate`` (S.U.N. on the known-phases hull). Reported: the share of the
  relaxed samples in the target group (pymatgen's SpacegroupAnalyzer, symprec 0.1 Å as the
  labels), the share among the S.U.N. ones (the paper's metric: 20 % on average after DFT
  relaxation), the share as generated (before relaxation), and the base rate: the share of
  ``--unconditioned`` samples of the same checkpoint that land in the group.
* **Distribution** (Fig. D4): ``--distribution-samples`` crystals conditioned on space groups
  drawn from the training distribution; the space-group and crystal-system distributions of the
  relaxed samples against the training labels and the unconditioned samples (total variation
  distance), with a figure.

Results: ``benchmarks/results/symmetry.{json,md,png}``; samples are kept in ``--work`` and
reused.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import math
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditioning import relax_arm, relaxed_samples, run_jobs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

#: Highest space-group number of each crystal system (International Tables order).
CRYSTAL_SYSTEMS = (
    ("triclinic", 2),
    ("monoclinic", 15),
    ("orthorhombic", 74),
    ("tetragonal", 142),
    ("trigonal", 167),
    ("hexagonal", 194),
    ("cubic", 230),
)


def crystal_system(number: int) -> str:
    """The crystal system of space group ``number`` (1-230)."""
    return next(name for name, last in CRYSTAL_SYSTEMS if number <= last)


def training_counts(checkpoint: str) -> Counter[int]:
    """Training crystals per space group, from the atom-count histograms the checkpoint keeps."""
    from model.checkpoint import read_payload
    from model.finetune import specs_of

    specs = {spec.name: spec for spec in specs_of(read_payload(checkpoint))}
    if "space_group" not in specs:
        raise SystemExit(f"{checkpoint} is not fine-tuned on space_group")
    counts = specs["space_group"].atom_counts
    return Counter({int(group): sum(histogram) for group, histogram in counts.items()})


def default_groups(counts: Counter[int]) -> list[int]:
    """The two most populated groups of each crystal system."""
    groups = []
    for name, _ in CRYSTAL_SYSTEMS:
        ranked = sorted((g for g in counts if crystal_system(g) == name), key=lambda g: -counts[g])
        groups += ranked[:2]
    return groups


def space_groups(structures: list) -> list[int | None]:
    from model.property_compute import space_group

    return [space_group(s).value for s in structures]


def wilson(successes: int, n: int) -> list[float] | None:
    """95 % Wilson interval of a share."""
    if n == 0:
        return None
    z, p = 1.96, successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def total_variation(a: Counter, b: Counter) -> float:
    """Total variation distance between two count distributions."""
    na, nb = sum(a.values()), sum(b.values())
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in keys) if na and nb else float("nan")


def draw_groups(counts: Counter[int], n: int, seed: int) -> Counter[int]:
    """``n`` space groups drawn from the training distribution."""
    rng = np.random.default_rng(seed)
    groups = sorted(counts)
    weights = np.array([counts[g] for g in groups], float)
    return Counter(int(g) for g in rng.choice(groups, size=n, p=weights / weights.sum()))


def merge_extxyz(paths: list[Path], out: Path) -> None:
    """One file of several arms' samples, ids prefixed by the arm's file stem (unique)."""
    from evaluation.io.crystals import read_crystals, write_extxyz

    records = []
    for path in paths:
        for record in read_crystals(path).records if path.exists() else []:
            record.id = f"{path.stem}-{record.id}"
            records.append(record)
    if records:
        write_extxyz(records, out)


def target_row(path: Path, group: int, counts: Counter[int], base_share: float) -> dict[str, Any]:
    """Fig. 4 for one target group: where its samples land, as generated and relaxed."""
    from evaluation.io.crystals import read_crystals

    raw = read_crystals(path).records if path.exists() else []
    as_generated = [g == group for g in space_groups([r.structure for r in raw])]
    structures, sun = relaxed_samples(path)
    found = space_groups(structures)
    hits = [g == group for g in found]
    sun_hits = [h for h, s in zip(hits, sun, strict=True) if s]
    return {
        "crystal_system": crystal_system(group),
        "training_crystals": counts[group],
        "training_share": counts[group] / sum(counts.values()),
        "generated": len(raw),
        "relaxed": len(structures),
        "share_as_generated": float(np.mean(as_generated)) if raw else None,
        "share_relaxed": float(np.mean(hits)) if hits else None,
        "share_relaxed_interval": wilson(sum(hits), len(hits)),
        "sun": len(sun_hits),
        "share_among_sun": float(np.mean(sun_hits)) if sun_hits else None,
        "unconditioned_share": base_share,
        "found": dict(Counter(str(g) for g in found).most_common(5)),
    }


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over target groups, and the pooled shares with their interval."""
    hit_total = sum(round(r["share_relaxed"] * r["relaxed"]) for r in rows if r["relaxed"])
    sun_hit_total = sum(round((r["share_among_sun"] or 0) * r["sun"]) for r in rows)
    return {
        "share_relaxed": float(np.mean([r["share_relaxed"] for r in rows if r["relaxed"]])),
        "share_relaxed_pooled_interval": wilson(hit_total, sum(r["relaxed"] for r in rows)),
        "share_among_sun_pooled": sun_hit_total / max(1, sum(r["sun"] for r in rows)),
        "sun": sum(r["sun"] for r in rows),
        "unconditioned_share": float(np.mean([r["unconditioned_share"] for r in rows])),
        "training_share": float(np.mean([r["training_share"] for r in rows])),
    }


def crystal_systems(groups: Counter) -> Counter[str]:
    """Counts per crystal system of counts per space group."""
    out: Counter[str] = Counter()
    for group, n in groups.items():
        out[crystal_system(group)] += n
    return out


def distribution_report(conditioned: Counter, unconditioned: Counter, training: Counter) -> dict:
    """Fig. D4: space-group and crystal-system distributions against the training labels."""
    arms = {"conditioned": conditioned, "unconditioned": unconditioned}
    return {
        "tv_space_group": {k: total_variation(c, training) for k, c in arms.items()},
        "tv_crystal_system": {
            k: total_variation(crystal_systems(c), crystal_systems(training))
            for k, c in arms.items()
        },
        "share_p1": {
            k: c[1] / max(1, sum(c.values())) for k, c in ({"training": training} | arms).items()
        },
        "crystal_system_shares": {
            k: {name: n / max(1, sum(c.values())) for name, n in crystal_systems(c).items()}
            for k, c in ({"training": training} | arms).items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    from flows.generators.mattergen import checkpoint_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--groups", type=lambda s: [int(g) for g in s.split(",")])
    parser.add_argument("--samples", type=int, default=16, help="per target group")
    parser.add_argument("--distribution-samples", type=int, default=96)
    parser.add_argument("--unconditioned", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "symmetry")
    parser.add_argument(
        "--results", type=Path, default=RESULTS / "symmetry", help="stem of the .json/.md/.png"
    )
    args = parser.parse_args(argv)

    checkpoint = str(args.checkpoint or checkpoint_for(frozenset({"space_group"})))
    counts = training_counts(checkpoint)
    groups = args.groups or default_groups(counts)
    drawn = draw_groups(counts, args.distribution_samples, args.seed)
    base = dict(checkpoint=checkpoint, seed=args.seed, steps=args.steps)
    work = args.work
    unconditioned = work / "unconditioned.extxyz"
    jobs = [dict(base, conditions={}, samples=args.unconditioned, out=str(unconditioned))]
    for group in groups:
        out = work / f"target-{group}.extxyz"
        jobs.append(dict(base, conditions={"space_group": str(group)}, samples=args.samples))
        jobs[-1]["out"] = str(out)
    drawn_paths = []
    for group, n in sorted(drawn.items()):
        out = work / "distribution" / f"sg{group}.extxyz"
        job = dict(base, conditions={"space_group": str(group)}, samples=n, out=str(out))
        jobs.append(dict(job, seed=args.seed + group))  # distinct noise per group
        drawn_paths.append(out)
    timings = run_jobs(jobs, args.jobs)
    distribution = work / "distribution.extxyz"
    if not distribution.exists():
        merge_extxyz(drawn_paths, distribution)
    arms = [unconditioned, *(work / f"target-{g}.extxyz" for g in groups), distribution]
    run_jobs(
        [dict(samples=str(path), sun=path != distribution) for path in arms], args.jobs, relax_arm
    )

    relaxed_unconditioned, _ = relaxed_samples(unconditioned)
    base_groups = Counter(space_groups(relaxed_unconditioned))
    base_share = {g: base_groups[g] / max(1, len(relaxed_unconditioned)) for g in groups}
    report: dict[str, Any] = {
        "checkpoint": checkpoint,
        "samples_per_group": args.samples,
        "guidance": 2.0,
        "symprec": 0.1,
        "relaxation": "CHGNet 0.3.0, FIRE, fmax 0.05 eV/Å, 500 steps, cell and ions",
        "sun": "crystalforge evaluate on the relaxed samples, known-phases hull",
        "sampling_seconds": sum(t["seconds"] or 0 for t in timings),
        "targets": {
            str(g): target_row(work / f"target-{g}.extxyz", g, counts, base_share[g])
            for g in groups
        },
    }
    report["mean"] = pooled(list(report["targets"].values()))
    structures, _ = relaxed_samples(distribution)
    conditioned_groups = Counter(g for g in space_groups(structures) if g is not None)
    base_groups.pop(None, None)
    report["distribution"] = distribution_report(conditioned_groups, base_groups, counts)
    report["distribution"] |= {"samples": len(structures), "drawn_groups": len(drawn)}
    report["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.results.with_suffix(".md").write_text(markdown(report))
    figure(report, counts, conditioned_groups, base_groups, args.results.with_suffix(".png"))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.0f} %"

    lines = [
        "# Space-group conditioning (paper Fig. 4 and D4)",
        "",
        f"`{Path(report['checkpoint']).name}`, guidance {report['guidance']}, "
        f"{report['samples_per_group']} samples per group, relaxed with {report['relaxation']}; "
        f"space groups by spglib at symprec {report['symprec']} Å; S.U.N. by {report['sun']}.",
        "",
        "| group | system | training share | unconditioned | as generated | relaxed (95 % CI) "
        "| S.U.N. | among S.U.N. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group, row in report["targets"].items():
        interval = row["share_relaxed_interval"]
        ci = f" ({pct(interval[0])}–{pct(interval[1])})" if interval else ""
        lines.append(
            f"| {group} | {row['crystal_system']} | {pct(row['training_share'])} | "
            f"{pct(row['unconditioned_share'])} | {pct(row['share_as_generated'])} | "
            f"{pct(row['share_relaxed'])}{ci} | {row['sun']} | {pct(row['share_among_sun'])} |"
        )
    mean = report["mean"]
    interval = mean["share_relaxed_pooled_interval"]
    lines += [
        f"| mean | | {pct(mean['training_share'])} | {pct(mean['unconditioned_share'])} | | "
        f"{pct(mean['share_relaxed'])} (pooled {pct(interval[0])}–{pct(interval[1])}) | "
        f"{mean['sun']} | {pct(mean['share_among_sun_pooled'])} (pooled) |",
        "",
    ]
    dist = report["distribution"]
    lines += [
        f"Distribution (Fig. D4): {dist['samples']} relaxed samples conditioned on "
        f"{dist['drawn_groups']} space groups drawn from the training distribution.",
        "",
        "| | TV distance to training, space groups | TV, crystal systems | P1 share |",
        "|---|---|---|---|",
        f"| training | 0 | 0 | {pct(dist['share_p1']['training'])} |",
    ]
    for arm in ("conditioned", "unconditioned"):
        lines.append(
            f"| {arm} | {dist['tv_space_group'][arm]:.2f} | {dist['tv_crystal_system'][arm]:.2f} "
            f"| {pct(dist['share_p1'][arm])} |"
        )
    return "\n".join(lines) + "\n"


def figure(report: dict, counts: Counter, conditioned: Counter, base: Counter, out: Path) -> None:
    """Fig. 4 (share in the target group) and Fig. D4 (crystal-system distribution)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    targets = report["targets"]
    x = np.arange(len(targets))
    left.bar(x - 0.2, [r["share_relaxed"] or 0 for r in targets.values()], 0.4, label="conditioned")
    left.bar(
        x + 0.2, [r["unconditioned_share"] for r in targets.values()], 0.4, label="unconditioned"
    )
    left.set_xticks(x, list(targets), rotation=90)
    left.set_ylabel("share of relaxed samples in the target group")
    left.set_xlabel("target space group")
    left.legend()
    names = [name for name, _ in CRYSTAL_SYSTEMS]
    shares = report["distribution"]["crystal_system_shares"]
    x = np.arange(len(names))
    for offset, label in zip(
        (-0.27, 0, 0.27), ("training", "conditioned", "unconditioned"), strict=True
    ):
        right.bar(x + offset, [shares[label].get(n, 0) for n in names], 0.27, label=label)
    right.set_xticks(x, names, rotation=45)
    right.set_ylabel("share")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
