"""Benchmark: MLFF pre-relaxation throughput, one prerelax shard vs one atomate2 job per structure.

    python benchmarks/prerelax.py [--n-structures 24] [--fmax 0.05] [--steps 300] [--seed 0]

Both sides relax the same structures with the same MLFF (CHGNet 0.3.0), optimizer (FIRE),
cell filter (FrechetCellFilter, cell relaxed), force criterion and step budget, in one process
with one thread (``OMP_NUM_THREADS=1``):

* ``crystalforge``: :func:`evaluation.relax.engine.relax_structures` over all structures,
  which is what one ``prerelax`` shard job runs: the calculator is loaded once and reused.
* ``atomate2``: one ``ForceFieldRelaxMaker(force_field_name="CHGNet")`` job per structure, all
  run with ``jobflow.run_locally`` into an in-memory ``JobStore`` -- a naive per-structure
  workflow in its most favourable setting (no process start, no database).

On a cluster each of those jobs would also start Python, import atomate2 and torch and load the
model. That start-up is measured separately (a fresh interpreter, ``--startup-runs`` times) and
reported as an *estimate* for one process per job; it is not part of the measured speed-up.

Structures are a seeded random pick of small crystals (``--min-atoms`` to ``--max-atoms``) from
the shipped reference set, each atom displaced by ``--rattle`` Å in a random direction. Both
sides must reach similar final energies (the maximum |ΔE| per atom is reported) for the
comparison to be fair. Figures are printed and written to ``benchmarks/results/prerelax.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import contextlib
import io
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.records import CrystalRecord
from evaluation.reference import load_reference
from evaluation.relax.calculators import load_calculator
from evaluation.relax.engine import RelaxResult, relax_structures

RESULTS = Path(__file__).resolve().parent / "results" / "prerelax.json"


def pick_structures(
    n: int, seed: int, min_atoms: int = 4, max_atoms: int = 12, rattle: float = 0.05
) -> list[CrystalRecord]:
    """A seeded random pick of ``n`` small reference crystals, each atom displaced ``rattle`` Å.

    Returns
    -------
    list[CrystalRecord]
        With the reference's ``source`` and ``id``; the reference records are left untouched.
    """
    records = [r for r in load_reference().records if min_atoms <= len(r.structure) <= max_atoms]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(records), size=min(n, len(records)), replace=False)
    out = []
    for i in picked:
        record = records[int(i)]
        structure = record.structure.copy().perturb(rattle, seed=int(rng.integers(2**31)))
        out.append(CrystalRecord(structure=structure, id=record.id, source=record.source))
    return out


def warm_up() -> None:
    """Import and run CHGNet once, outside both timings (imports and first-call kernels)."""
    from chgnet.model import CHGNet
    from pymatgen.core import Lattice, Structure

    with contextlib.redirect_stdout(io.StringIO()):
        model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    model.predict_structure(Structure(Lattice.cubic(5.6), ["Si"] * 2, [[0] * 3, [0.25] * 3]))


def run_crystalforge(
    records: list[CrystalRecord], fmax: float, steps: int
) -> tuple[float, list[RelaxResult]]:
    """Seconds for one prerelax shard (calculator load included), and its results."""
    start = time.perf_counter()
    load_calculator("chgnet")  # what a shard job pays once
    results = relax_structures(records, model="chgnet", fmax=fmax, max_steps=steps, progress=False)
    return time.perf_counter() - start, results


def run_atomate2(
    records: list[CrystalRecord], fmax: float, steps: int
) -> tuple[float, list[dict[str, Any] | None]]:
    """Seconds for one ``ForceFieldRelaxMaker`` job per structure, and each job's output.

    Returns
    -------
    tuple
        Wall time and, per structure, ``{energy_per_atom, n_steps, max_force,
        is_force_converged}`` or None when the job failed.
    """
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker
    from jobflow import Flow, JobStore, run_locally
    from maggma.stores import MemoryStore

    start = time.perf_counter()
    maker = ForceFieldRelaxMaker(
        force_field_name="CHGNet", relax_cell=True, steps=steps, relax_kwargs={"fmax": fmax}
    )
    jobs = [maker.make(record.structure) for record in records]
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet announces itself at every load
        responses = run_locally(Flow(jobs), store=store, log=False, ensure_success=False)
    elapsed = time.perf_counter() - start
    outputs: list[dict[str, Any] | None] = []
    for job in jobs:
        response = responses.get(job.uuid, {}).get(1)
        doc = getattr(response, "output", None)
        if doc is None or doc.output is None or doc.output.energy is None:
            outputs.append(None)
            continue
        outputs.append(
            {
                "energy_per_atom": doc.output.energy / len(doc.structure),
                "n_steps": doc.output.n_steps,  # trajectory frames, not optimizer steps
                "max_force": float(np.linalg.norm(doc.output.forces, axis=1).max()),
                "is_force_converged": bool(doc.is_force_converged),  # final |F| < fmax
            }
        )
    return elapsed, outputs


_STARTUP = (
    "import contextlib, io, warnings; warnings.filterwarnings('ignore')\n"
    "from atomate2.forcefields.jobs import ForceFieldRelaxMaker\n"
    "from chgnet.model.dynamics import CHGNetCalculator\n"
    "with contextlib.redirect_stdout(io.StringIO()): CHGNetCalculator()\n"
)


def process_startup_seconds(runs: int) -> float | None:
    """Median wall time of a fresh Python that imports atomate2 and loads CHGNet, or None."""
    if runs < 1:
        return None
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", _STARTUP], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _throughput(seconds: float, n: int) -> dict[str, float]:
    return {
        "seconds": seconds,
        "structures_per_min": 60 * n / seconds,
        "seconds_per_structure": seconds / n,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-structures", type=int, default=24)
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    parser.add_argument("--steps", type=int, default=300, help="optimizer step budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-atoms", type=int, default=4)
    parser.add_argument("--max-atoms", type=int, default=12)
    parser.add_argument("--rattle", type=float, default=0.05, help="Å per atom")
    parser.add_argument("--startup-runs", type=int, default=3, help="0: skip the estimate")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.getLogger("jobflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")  # CHGNet/ASE/atomate2 noise, identical on both sides

    records = pick_structures(
        args.n_structures, args.seed, args.min_atoms, args.max_atoms, args.rattle
    )
    n = len(records)
    n_atoms = [len(r.structure) for r in records]
    print(f"{n} structures, {min(n_atoms)}-{max(n_atoms)} atoms (mean {np.mean(n_atoms):.1f})")
    warm_up()

    ours_s, ours = run_crystalforge(records, args.fmax, args.steps)
    print(f"crystalforge shard:     {ours_s:7.1f} s  ({60 * n / ours_s:.1f} structures/min)")
    peer_s, peer = run_atomate2(records, args.fmax, args.steps)
    print(f"atomate2 job/structure: {peer_s:7.1f} s  ({60 * n / peer_s:.1f} structures/min)")

    startup_s = process_startup_seconds(args.startup_runs)

    rows, deltas = [], []
    for record, mine, theirs in zip(records, ours, peer, strict=True):
        row = {
            "label": record.label,
            "formula": record.formula,
            "n_atoms": len(record.structure),
            "crystalforge": {
                "status": mine.status,
                "energy_per_atom": mine.energy_per_atom,
                "n_steps": mine.n_steps,
                "max_force": mine.max_force,
                "seconds": mine.wall_time_s,
            },
            "atomate2": theirs,
        }
        if mine.ok and theirs is not None:
            row["abs_delta_e_per_atom"] = abs(mine.energy_per_atom - theirs["energy_per_atom"])
            deltas.append(row["abs_delta_e_per_atom"])
        rows.append(row)
    ratio = peer_s / ours_s
    results = {
        "model": "chgnet (CHGNet 0.3.0), FIRE + FrechetCellFilter, cell relaxed",
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "n_structures": n,
        "n_atoms_mean": float(np.mean(n_atoms)),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch threads {torch.get_num_threads()}",
        "versions": {p: version(p) for p in ("chgnet", "torch", "atomate2", "jobflow", "ase")},
        "crystalforge": _throughput(ours_s, n),
        "atomate2": _throughput(peer_s, n),
        "speedup": ratio,
        "estimate_one_process_per_job": None
        if startup_s is None
        else {
            "process_startup_s": startup_s,
            "atomate2_seconds": peer_s + n * startup_s,
            "speedup": (peer_s + n * startup_s) / ours_s,
            "note": "estimate: measured run_locally time plus one measured start-up per job",
        },
        "agreement": {
            "compared": len(deltas),
            "max_abs_delta_e_per_atom": max(deltas) if deltas else None,
            "median_abs_delta_e_per_atom": float(np.median(deltas)) if deltas else None,
            "crystalforge_ok": sum(r.ok for r in ours),
            "crystalforge_converged": sum(r.converged for r in ours),
            "atomate2_finished": sum(p is not None for p in peer),
            "atomate2_is_force_converged": sum(bool(p and p["is_force_converged"]) for p in peer),
        },
        "structures": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    agreement = results["agreement"]
    print()
    print(f"{'':24}{'structures/min':>16}{'s/structure':>14}")
    for side in ("crystalforge", "atomate2"):
        figures = results[side]
        print(
            f"{side:24}{figures['structures_per_min']:16.1f}"
            f"{figures['seconds_per_structure']:14.2f}"
        )
    print(f"speed-up: {ratio:.1f}x (goal >= 5x)")
    if startup_s is not None:
        estimate = results["estimate_one_process_per_job"]["speedup"]
        print(
            f"estimate with one process per atomate2 job (+{startup_s:.1f} s start-up each): "
            f"{estimate:.1f}x"
        )
    print(
        f"agreement: max |dE| {agreement['max_abs_delta_e_per_atom']:.2e} eV/atom over "
        f"{agreement['compared']} structures; converged {agreement['crystalforge_converged']}"
        f" (crystalforge) / {agreement['atomate2_is_force_converged']} (atomate2's "
        f"is_force_converged) of {n}"
    )
    print(f"written to {args.output}")
    return results


if __name__ == "__main__":
    main()
