"""Benchmark: does a checkpoint sample chemistry? Its samples' profile against the training data.

    python benchmarks/chemistry.py [--checkpoint CKPT (default: the shipped one)]
        [--data runs/dataset/dataset.pt] [--samples 256] [--steps N] [--seed 0]

Samples ``--samples`` crystals unconditionally (atom counts from the checkpoint's training
distribution, its default sampling grid unless ``--steps``) and profiles them and a random
subset of the training crystals of the same size (``evaluation.metrics.chemistry.describe``): mean
elements per cell and the share with at most 4, P1 fraction at symprec 0.1, the share with a
pymatgen oxidation-state guess, the share whose shortest interatomic distance is at least
0.5 Å, and the total-variation distances of the element, atoms-per-cell, elements-per-cell,
space-group and stoichiometry distributions. Checked against the goals of issue 15. Writes
``benchmarks/results/chemistry.json`` (keyed by checkpoint file name) and prints a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "chemistry.json"
#: The issue's goals for samples of the shipped checkpoint: (key, comparison, value).
GOALS = (
    ("mean_elements_per_cell", "<=", 3.6),
    ("share_at_most_4_elements", ">=", 0.90),
    ("p1_fraction", "<=", 0.30),
    ("share_min_distance_ok", ">=", 0.95),
    ("share_oxidation_guess", ">=", 0.25),
)
SCALARS = (
    "mean_elements_per_cell",
    "share_at_most_4_elements",
    "p1_fraction",
    "distinct_space_groups",
    "share_oxidation_guess",
    "share_min_distance_ok",
    "mean_atoms_per_cell",
)


def profile_checkpoint(
    checkpoint: Path, data: Path, samples: int, steps: int | None, seed: int
) -> dict[str, Any]:
    from evaluation.metrics.chemistry import compare, describe
    from model.checkpoint import load_checkpoint
    from model.data import CrystalTensors
    from model.sampler import SamplerSettings, sample
    from model.structures import batch_to_structures

    network = load_checkpoint(checkpoint).network.eval()
    generator = torch.Generator().manual_seed(seed)
    num_atoms = network.statistics.sample_num_atoms(samples, generator)
    started = time.perf_counter()
    result = sample(network, num_atoms, SamplerSettings(num_steps=steps), generator)
    seconds = time.perf_counter() - started
    generated = describe(batch_to_structures(result.crystals))
    tensors = CrystalTensors.load(data)
    subset = torch.randperm(len(tensors), generator=torch.Generator().manual_seed(seed))[:samples]
    training = describe(batch_to_structures(tensors.batch(subset)))
    goals = {}
    for key, comparison, value in GOALS:
        measured = generated[key]
        met = measured <= value if comparison == "<=" else measured >= value
        goals[key] = {"goal": f"{comparison} {value}", "measured": measured, "met": met}
    return {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "samples_requested": samples,
        "samples_kept": result.crystals.num_crystals,
        "dropped": result.dropped,
        "sampling_seconds": seconds,
        "samples": generated,
        "training": training,
        "tv_to_training": compare(generated, training),
        "goals": goals,
    }


def table(report: dict[str, Any]) -> str:
    lines = ["| measure | samples | training data | goal |", "|---|---|---|---|"]
    for key in SCALARS:
        goal = report["goals"].get(key)
        mark = f"{goal['goal']} ({'met' if goal['met'] else 'not met'})" if goal else ""
        lines.append(
            f"| {key.replace('_', ' ')} | {report['samples'][key]:.3f} | "
            f"{report['training'][key]:.3f} | {mark} |"
        )
    for key, value in report["tv_to_training"].items():
        lines.append(f"| {key.replace('_', ' ')} (TV to training) | {value:.3f} | 0 | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from evaluation.paths import default_checkpoint

    parser.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "dataset" / "dataset.pt")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = profile_checkpoint(args.checkpoint, args.data, args.samples, args.steps, args.seed)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.checkpoint.name] = report
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
