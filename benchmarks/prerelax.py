"""Benchmark: batched MLFF relaxation against the per-structure loop and atomate2.

    python benchmarks/prerelax.py [--inputs A.extxyz B.extxyz] [--n-structures 64]
        [--models chgnet,sevennet] [--arms batched,batched-pool,per-structure,atomate2]
        [--fmax 0.05] [--steps 300] [--jobs N] [--device cpu|cuda] [--batch-atoms 64 256 ...]

Every arm relaxes the same structures with the same MLFF (CHGNet 0.3.0, SevenNet ``7net-0``),
the same optimizer (FIRE, ASE's parameters), cell filter (Fréchet, cell relaxed), force
criterion (``--fmax``) and step cap (``--steps``):

* ``batched``: :func:`evaluation.relax.run.relax` in this process, the torch-sim engine that
  steps every structure in flight with one forward pass (``--batch-atoms`` in flight at once;
  several values: one run per budget, the sweep that finds the batch that saturates a GPU).
* ``batched-pool``: :func:`evaluation.relax.parallel.relax_parallel` with ``--jobs`` worker
  processes, each running the batched engine on its chunk (CPU only).
* ``per-structure``: :func:`evaluation.relax.engine.relax_structures`, ASE FIRE one structure
  after the other (today's prerelax shard); the reference for the energies.
* ``atomate2``: one ``ForceFieldRelaxMaker`` job per structure (``CHGNet``/``SevenNet``, the
  latter pointed at the checkpoint sevenn ships, so nothing is downloaded), all run with
  ``jobflow.run_locally`` into in-memory stores: a naive per-structure workflow in its most
  favourable setting (no process start, no database).

Thread policy (recorded per arm in the JSON): every arm may use the whole machine, ``C`` cores
(``--threads``, default: the cores this process may run on), the way it is deployed. ``batched``
and ``atomate2`` run in one process with ``C`` torch threads (torch's own default, which the
``OMP_NUM_THREADS=1`` set here would otherwise cap); ``batched-pool`` runs ``--jobs`` workers of
one thread each (the workers set that themselves); ``per-structure`` runs with one thread, as a
prerelax shard does (one shard per core), so its structures/s are those of one core.

Timing: imports and first-call kernels are warmed up once per model outside every timing; each
arm then starts with no model loaded and pays its loading once (``atomate2``: once per job, as
it does; ``batched-pool``: worker start-up, imports and one load per worker included, as any
caller pays them). On a cluster each atomate2 job would also start Python, import atomate2 and
load the model: that start-up is measured in a fresh interpreter (``--startup-runs``) and
reported as an *estimate*, not as part of the measured speed-up.

Structures (``--source generated``, the default): a seeded sample of ``--n-structures`` crystals
of ``--min-atoms`` to ``--max-atoms`` atoms, drawn evenly from the ``--inputs`` files (anything
:func:`evaluation.io.crystals.read_crystals` reads), skipping those the engines refuse outright.
Without ``--inputs`` they are made once and cached under ``--work``: unconditional samples from
the shipped checkpoint (unrelaxed) and as many random-structure-search candidates
(:func:`flows.generators.rss.generate_rss`) over the same chemical systems and atom counts --
far from equilibrium, unlike ``--source reference`` (reference crystals rattled by ``--rattle``).

Reported per model and arm: wall seconds, structures/s, the speed-up over ``atomate2`` and over
``per-structure``, counts per status, and the agreement of final energies with the
``per-structure`` arm: max and median |ΔE| per atom (meV/atom) over the structures that
converge in both, and how many those are. The goal line (issue): ``batched-pool`` at least 5x
``atomate2`` with energies within 5 meV/atom of it where both converge. Figures are printed and
written to ``--out`` (default ``benchmarks/results/prerelax.json``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: threads are set per arm below
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import contextlib
import io
import json
import logging
import math
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from evaluation.records import CrystalRecord
from evaluation.relax.calculators import canonical_model_name
from evaluation.relax.engine import ExplosionCriteria, RelaxResult, input_problem

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "prerelax.json"
ARMS = ("batched", "batched-pool", "per-structure", "atomate2")
#: atomate2's name for each MLFF (``atomate2.forcefields.utils.MLFF``).
ATOMATE2_NAMES = {"chgnet": "CHGNet", "7net-0": "SevenNet"}
GOAL_SPEEDUP, GOAL_MEV = 5.0, 5.0

Outcome = dict[str, Any]  # status, converged, energy_per_atom, n_steps, max_force


# --- structures ---------------------------------------------------------------------------
def usable(records: list[CrystalRecord], min_atoms: int, max_atoms: int) -> list[CrystalRecord]:
    """The records of ``min_atoms`` to ``max_atoms`` atoms that every engine accepts as input."""
    criteria = ExplosionCriteria()
    return [
        r
        for r in records
        if min_atoms <= len(r.structure) <= max_atoms
        and input_problem(r.structure, criteria) is None
    ]


def pick_balanced(groups: list[list[CrystalRecord]], n: int, seed: int) -> list[CrystalRecord]:
    """A seeded pick of ``n`` records, as even as possible between ``groups``.

    A group with too few records gives all it has; the others make up the difference.
    """
    rng = np.random.default_rng(seed)
    orders = [list(rng.permutation(len(group))) for group in groups]
    picked: list[CrystalRecord] = []
    while len(picked) < n and any(orders):
        for group, order in zip(groups, orders, strict=True):
            if order and len(picked) < n:
                picked.append(group[int(order.pop(0))])
    return picked


def pick_reference(
    n: int, seed: int, min_atoms: int, max_atoms: int, rattle: float
) -> list[CrystalRecord]:
    """A seeded pick of ``n`` reference crystals, each atom displaced ``rattle`` Å."""
    from evaluation.reference import load_reference

    records = usable(load_reference().records, min_atoms, max_atoms)
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(records), size=min(n, len(records)), replace=False):
        record = records[int(i)]
        structure = record.structure.copy().perturb(rattle, seed=int(rng.integers(2**31)))
        out.append(CrystalRecord(structure=structure, id=record.id, source=record.source))
    return out


def generate_samples(path: Path, num: int, seed: int, device: str) -> None:
    """``num`` unconditional samples of the shipped checkpoint, written to ``path``."""
    from evaluation.io.crystals import write_extxyz
    from flows.generators.mattergen import generate_structures

    started = time.perf_counter()
    result = generate_structures(None, num, batch_size=num, seed=seed, device=device)
    write_extxyz(result.records, path)
    print(f"  {len(result.records)} samples in {time.perf_counter() - started:.0f} s -> {path}")


def generate_rss_like(
    samples: list[CrystalRecord], path: Path, num: int, seed: int, min_atoms: int, max_atoms: int
) -> None:
    """``num`` RSS candidates over the chemical systems and atom counts of ``samples``."""
    from evaluation.io.crystals import write_extxyz
    from flows.generators.rss import generate_rss

    templates = [
        s for s in usable(samples, min_atoms, max_atoms) if len(s.structure.composition) >= 2
    ]
    if not templates:
        raise SystemExit("no generated sample with two or more elements to draw RSS from")
    started, records = time.perf_counter(), []
    for draw in range(4 * num):
        if len(records) == num:
            break
        template = templates[draw % len(templates)]
        count = len(template.structure)
        result = generate_rss(
            template.chemsys, 1, seed=seed + draw, atoms_per_cell=(count, count),
            max_attempts_per_candidate=5,
        )  # fmt: skip
        records += result.records
    write_extxyz(records, path)
    print(f"  {len(records)} RSS candidates in {time.perf_counter() - started:.0f} s -> {path}")


def make_inputs(work: Path, n: int, seed: int, device: str, atoms: tuple[int, int]) -> list[Path]:
    """Generated samples and RSS candidates for ``n`` structures, made once under ``work``."""
    from evaluation.io.crystals import read_crystals

    half = math.ceil(n / 2)
    samples = work / f"mattergen-n{half}-seed{seed}.extxyz"
    rss = work / f"rss-n{half}-seed{seed}.extxyz"
    work.mkdir(parents=True, exist_ok=True)
    if not samples.exists():
        print(f"generating {half + half // 4 + 1} samples (cached in {work})")
        generate_samples(samples, half + half // 4 + 1, seed, device)  # a margin: some too small
    if not rss.exists():
        print(f"drawing {half} RSS candidates (cached in {work})")
        generate_rss_like(read_crystals(samples).records, rss, half, seed, *atoms)
    return [samples, rss]


def load_structures(args: argparse.Namespace) -> tuple[list[CrystalRecord], dict[str, Any]]:
    """The benchmark's structures and where they came from."""
    from evaluation.io.crystals import read_crystals

    if args.source == "reference":
        records = pick_reference(
            args.n_structures, args.seed, args.min_atoms, args.max_atoms, args.rattle
        )
        return records, {"source": "reference", "rattle": args.rattle}
    atoms = (args.min_atoms, args.max_atoms)
    paths = args.inputs or make_inputs(args.work, args.n_structures, args.seed, args.device, atoms)
    groups = [usable(read_crystals(p).records, *atoms) for p in paths]
    records = pick_balanced(groups, args.n_structures, args.seed)
    chosen = {id(r) for r in records}
    files = [
        {"path": str(p), "usable": len(g), "picked": sum(id(r) in chosen for r in g)}
        for p, g in zip(paths, groups, strict=True)
    ]
    picked = Counter(r.source for r in records)
    return records, {"source": "generated", "files": files, "picked_by_source": dict(picked)}


# --- arms ---------------------------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run with ``n`` torch threads, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def forget_loaded_models() -> None:
    """Drop the models and calculators cached by the engines (this thread's), so that the next
    arm pays its model loading as a fresh process would."""
    from evaluation.relax import batched, calculators

    batched._MODELS.__dict__.clear()
    calculators._CALCULATORS.__dict__.clear()


def outcome(result: RelaxResult) -> Outcome:
    """What the report keeps of one of our relaxations."""
    return {
        "status": result.status,
        "converged": bool(result.converged),
        "energy_per_atom": result.energy_per_atom,
        "n_steps": result.n_steps,
        "max_force": result.max_force,
    }


def run_batched(
    records: list[CrystalRecord], model: str, fmax: float, steps: int, device: str, budget: int
) -> list[Outcome]:
    """The batched engine in this process, ``budget`` atoms in flight."""
    from evaluation.relax.run import relax

    results = relax(records, model, fmax, steps, device=device, max_atoms=budget, progress=False)
    return [outcome(r) for r in results]


def run_pool(
    records: list[CrystalRecord], model: str, fmax: float, steps: int, jobs: int
) -> list[Outcome]:
    """``relax_parallel`` with ``jobs`` workers, chunks small enough to give each one work."""
    from evaluation.relax.parallel import BATCHED_CHUNK, relax_parallel

    chunk = pool_chunk(len(records), jobs, BATCHED_CHUNK)
    results = relax_parallel(
        records, model, fmax, steps, n_jobs=jobs, chunk_size=chunk, progress=False
    )
    return [outcome(r) for r in results]


def pool_chunk(n: int, jobs: int, largest: int) -> int:
    """Structures per pool task: every worker busy, at most ``largest`` (the default chunk)."""
    return max(1, min(largest, math.ceil(n / jobs)))


def run_per_structure(
    records: list[CrystalRecord], model: str, fmax: float, steps: int, device: str
) -> list[Outcome]:
    """The per-structure ASE engine, one structure after the other."""
    from evaluation.relax.engine import relax_structures

    results = relax_structures(records, model, fmax, steps, device=device, progress=False)
    return [outcome(r) for r in results]


def atomate2_maker(model: str, fmax: float, steps: int, device: str) -> Any:
    """atomate2's relax maker for ``model``, on weights already on this machine."""
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    if model == "chgnet":
        kwargs: dict[str, Any] = {"use_device": device}
    else:
        from evaluation.compat.sevenn import shipped_checkpoint

        kwargs = {"model": shipped_checkpoint(model), "device": device}  # never downloads
    return ForceFieldRelaxMaker(
        force_field_name=ATOMATE2_NAMES[model], relax_cell=True, steps=steps,
        relax_kwargs={"fmax": fmax}, calculator_kwargs=kwargs,
    )  # fmt: skip


def atomate2_outcome(response: Any) -> Outcome:
    """What the report keeps of one atomate2 job's response (None: the job failed)."""
    doc = getattr(response, "output", None)
    if doc is None or doc.output is None or doc.output.energy is None:
        return {"status": "failed", "converged": False, "energy_per_atom": None}
    converged = bool(doc.is_force_converged)  # final |F| < fmax
    return {
        "status": "converged" if converged else "not_converged",
        "converged": converged,
        "energy_per_atom": doc.output.energy / len(doc.structure),
        "n_steps": doc.output.n_steps,  # trajectory frames, not optimizer steps
        "max_force": float(np.linalg.norm(doc.output.forces, axis=1).max()),
    }


def run_atomate2(
    records: list[CrystalRecord], model: str, fmax: float, steps: int, device: str
) -> list[Outcome]:
    """One ``ForceFieldRelaxMaker`` job per structure through ``jobflow.run_locally``."""
    from jobflow import Flow, JobStore, run_locally
    from maggma.stores import MemoryStore

    maker = atomate2_maker(model, fmax, steps, device)
    jobs = [maker.make(record.structure) for record in records]
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet announces itself at every load
        responses = run_locally(Flow(jobs), store=store, log=False, ensure_success=False)
    return [atomate2_outcome(responses.get(job.uuid, {}).get(1)) for job in jobs]


def atomate2_unavailable(model: str) -> str | None:
    """Why atomate2 cannot relax with ``model`` here, or None."""
    if model not in ATOMATE2_NAMES:
        return f"no atomate2 force field is set up here for {model}"
    if model != "chgnet":
        from evaluation.compat.sevenn import shipped_checkpoint

        if not os.path.exists(shipped_checkpoint(model)):
            return f"the {model} checkpoint is not on this machine (atomate2 would download it)"
    return None


def warm_up(model: str, device: str, fmax: float) -> None:
    """Imports and first-call kernels of every engine, outside all timings."""
    si = Structure(Lattice.cubic(5.6), ["Si"] * 2, [[0] * 3, [0.26] * 3])
    tiny = [CrystalRecord(structure=si, id="warm-up")]
    run_batched(tiny, model, fmax, 2, device, 64)
    run_per_structure(tiny, model, fmax, 2, device)
    if atomate2_unavailable(model) is None:
        run_atomate2(tiny, model, fmax, 2, device)
    forget_loaded_models()


# --- figures ------------------------------------------------------------------------------
def agreement(ours: list[Outcome], theirs: list[Outcome]) -> dict[str, Any]:
    """|ΔE| per atom (meV/atom) over the structures that converge in both lists."""
    deltas = [
        1000 * abs(a["energy_per_atom"] - b["energy_per_atom"])
        for a, b in zip(ours, theirs, strict=True)
        if a["converged"] and b["converged"]
    ]
    return {
        "compared": len(deltas),
        "max_abs_delta_e_mev_per_atom": max(deltas) if deltas else None,
        "median_abs_delta_e_mev_per_atom": float(np.median(deltas)) if deltas else None,
    }


def arm_summary(seconds: float, outcomes: list[Outcome], setup: dict[str, Any]) -> dict[str, Any]:
    """Time, throughput and status counts of one arm (``setup``: threads, processes, ...)."""
    return {
        **setup,
        "seconds": seconds,
        "structures_per_s": len(outcomes) / seconds,
        "status": dict(Counter(o["status"] for o in outcomes)),
        "converged": sum(o["converged"] for o in outcomes),
    }


def compare_arms(arms: dict[str, dict[str, Any]], outcomes: dict[str, list[Outcome]]) -> None:
    """Add speed-ups over ``atomate2``/``per-structure`` and agreement with ``per-structure``."""
    for name, arm in arms.items():
        if "skipped" in arm:
            continue
        for peer in ("atomate2", "per-structure"):
            if peer != name and peer in outcomes:
                rate = arms[peer]["structures_per_s"]
                arm[f"speedup_vs_{peer.replace('-', '_')}"] = arm["structures_per_s"] / rate
        if name != "per-structure" and "per-structure" in outcomes:
            arm["agreement_vs_per_structure"] = agreement(outcomes[name], outcomes["per-structure"])


def goal(arms: dict[str, dict[str, Any]], outcomes: dict[str, list[Outcome]]) -> dict[str, Any]:
    """The issue's goal: ``batched-pool`` (else the fastest ``batched`` run) >= 5x atomate2, with
    energies within 5 meV/atom of it where both converge."""
    batched = [a for a in outcomes if a.startswith("batched")]
    fastest = max(batched, key=lambda a: arms[a]["structures_per_s"], default=None)
    ours = "batched-pool" if "batched-pool" in outcomes else fastest
    if ours is None or "atomate2" not in outcomes:
        return {"met": None, "note": "needs atomate2 and a batched arm"}
    speedup = arms[ours]["speedup_vs_atomate2"]
    match = agreement(outcomes[ours], outcomes["atomate2"])
    worst = match["max_abs_delta_e_mev_per_atom"]
    met = speedup >= GOAL_SPEEDUP and worst is not None and worst <= GOAL_MEV
    return {"arm": ours, "speedup_vs_atomate2": speedup, "agreement_vs_atomate2": match, "met": met}


def saturation(arms: dict[str, dict[str, Any]], within: float = 0.1) -> dict[str, Any] | None:
    """The smallest in-flight budget within ``within`` of the best batched throughput."""
    sweep = {a["max_atoms"]: a["structures_per_s"] for a in arms.values() if "max_atoms" in a}
    if len(sweep) < 2:
        return None
    best = max(sweep.values())
    saturating = min(b for b, rate in sweep.items() if rate >= (1 - within) * best)
    return {"structures_per_s_by_max_atoms": sweep, "saturating_max_atoms": saturating}


_STARTUP = (
    "import contextlib, io, json, sys, warnings; warnings.filterwarnings('ignore')\n"
    "from atomate2.forcefields.jobs import ForceFieldRelaxMaker\n"
    "from atomate2.forcefields.utils import ase_calculator\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    ase_calculator(sys.argv[1], **json.loads(sys.argv[2]))\n"
)


def startup_seconds(model: str, device: str, runs: int) -> float | None:
    """Median wall time of a fresh Python that imports atomate2 and loads ``model``, or None."""
    if runs < 1 or atomate2_unavailable(model) is not None:
        return None
    maker = atomate2_maker(model, 0.05, 1, device)
    command = [sys.executable, "-c", _STARTUP, ATOMATE2_NAMES[model]]
    command.append(json.dumps(maker.calculator_kwargs))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- one model ----------------------------------------------------------------------------
def arm_plan(args: argparse.Namespace, model: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, setup) of every arm to run for ``model``; a setup with ``skipped`` is not run."""
    from evaluation.relax.batched import CPU_MAX_ATOMS, GPU_MAX_ATOMS

    plan: list[tuple[str, dict[str, Any]]] = []
    cores = args.threads
    if "batched" in args.arms:
        default = CPU_MAX_ATOMS if args.device == "cpu" else GPU_MAX_ATOMS
        budgets = args.batch_atoms or [default]
        for budget in budgets:
            name = "batched" if len(budgets) == 1 else f"batched@{budget}"
            plan.append((name, {"torch_threads": cores, "processes": 1, "max_atoms": budget}))
    if "batched-pool" in args.arms:
        setup: dict[str, Any] = {"torch_threads": 1, "processes": args.jobs}
        if args.device != "cpu":
            setup["skipped"] = "relax_parallel runs its workers on the CPU only"
        plan.append(("batched-pool", setup))
    if "per-structure" in args.arms:
        plan.append(("per-structure", {"torch_threads": 1, "processes": 1}))
    if "atomate2" in args.arms:
        setup = {"torch_threads": cores, "processes": 1}
        reason = atomate2_unavailable(model)
        plan.append(("atomate2", {**setup, "skipped": reason} if reason else setup))
    return plan


def run_arm(
    name: str,
    setup: dict[str, Any],
    records: list[CrystalRecord],
    model: str,
    args: argparse.Namespace,
) -> tuple[float, list[Outcome], int]:
    """Wall seconds, outcomes and torch threads of one arm (models loaded inside the timing)."""
    runners: dict[str, Callable[[], list[Outcome]]] = {
        "batched": lambda: run_batched(
            records, model, args.fmax, args.steps, args.device, setup.get("max_atoms", 0)
        ),
        "batched-pool": lambda: run_pool(records, model, args.fmax, args.steps, args.jobs),
        "per-structure": lambda: run_per_structure(
            records, model, args.fmax, args.steps, args.device
        ),
        "atomate2": lambda: run_atomate2(records, model, args.fmax, args.steps, args.device),
    }
    forget_loaded_models()
    with torch_threads(setup["torch_threads"]) as threads:
        start = time.perf_counter()
        outcomes = runners[name.split("@")[0]]()
        seconds = time.perf_counter() - start
    return seconds, outcomes, threads


def bench_model(
    records: list[CrystalRecord], model: str, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, list[Outcome]]]:
    """Every arm for ``model``: the model's figures and each arm's per-structure outcomes."""
    print(f"\n== {model}: warming up")
    warm_up(model, args.device, args.fmax)
    arms: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, list[Outcome]] = {}
    for name, setup in arm_plan(args, model):
        if "skipped" in setup:
            print(f"{name}: skipped ({setup['skipped']})")
            arms[name] = setup
            continue
        seconds, outcomes[name], threads = run_arm(name, setup, records, model, args)
        arms[name] = arm_summary(seconds, outcomes[name], {**setup, "torch_threads": threads})
        if name == "batched-pool":
            from evaluation.relax.parallel import BATCHED_CHUNK

            arms[name]["chunk_size"] = pool_chunk(len(records), args.jobs, BATCHED_CHUNK)
        print(f"{name}: {seconds:.1f} s ({len(records) / seconds:.2f} structures/s)", flush=True)
    compare_arms(arms, outcomes)
    figures: dict[str, Any] = {"arms": arms, "goal": goal(arms, outcomes)}
    figures["batched_sweep"] = saturation(arms)
    startup = startup_seconds(model, args.device, args.startup_runs)
    if startup is not None and "atomate2" in outcomes:
        seconds = arms["atomate2"]["seconds"] + len(records) * startup
        figures["estimate_one_process_per_job"] = {
            "process_startup_s": startup,
            "atomate2_structures_per_s": len(records) / seconds,
            "note": "estimate: measured run_locally time plus one measured start-up per job",
        }
    return figures, outcomes


# --- report -------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(model: str, figures: dict[str, Any]) -> None:
    """One line per arm, then the goal line."""
    print(f"\n{model}")
    head = f"{'arm':18}{'thr x proc':>11}{'s':>8}{'xtal/s':>8}{'vs a2':>7}{'vs ps':>7}"
    print(f"{head}{'max dE':>8}{'med dE':>8}{'n':>4}  status")
    for name, arm in figures["arms"].items():
        if "skipped" in arm:
            print(f"{name:18}skipped: {arm['skipped']}")
            continue
        match = arm.get("agreement_vs_per_structure", {})
        status = ", ".join(f"{k} {v}" for k, v in sorted(arm["status"].items()))
        print(
            f"{name:18}{arm['torch_threads']:>6} x {arm['processes']:<2}{arm['seconds']:8.1f}"
            f"{arm['structures_per_s']:8.2f}{_fmt(arm.get('speedup_vs_atomate2'), '7.1f'):>7}"
            f"{_fmt(arm.get('speedup_vs_per_structure'), '7.1f'):>7}"
            f"{_fmt(match.get('max_abs_delta_e_mev_per_atom'), '8.2f'):>8}"
            f"{_fmt(match.get('median_abs_delta_e_mev_per_atom'), '8.3f'):>8}"
            f"{match.get('compared', ''):>4}  {status}"
        )
    target = figures["goal"]
    if target["met"] is not None:
        worst = target["agreement_vs_atomate2"]["max_abs_delta_e_mev_per_atom"]
        print(
            f"goal ({target['arm']} vs atomate2 >= {GOAL_SPEEDUP:.0f}x, max |dE| <= "
            f"{GOAL_MEV:.0f} meV/atom): {target['speedup_vs_atomate2']:.1f}x, "
            f"{_fmt(worst, '.2f')} meV/atom over {target['agreement_vs_atomate2']['compared']}"
            f" -> {'met' if target['met'] else 'NOT met'}"
        )
    if figures["batched_sweep"]:
        print(f"batched sweep: {figures['batched_sweep']}")


def structure_rows(
    records: list[CrystalRecord], outcomes: dict[str, dict[str, list[Outcome]]]
) -> list[dict[str, Any]]:
    """Per structure: what it is and every model's and arm's outcome."""
    rows = []
    for i, record in enumerate(records):
        row = {"label": record.label, "source": record.source, "formula": record.formula}
        row["n_atoms"] = len(record.structure)
        for model, arms in outcomes.items():
            row[model] = {arm: results[i] for arm, results in arms.items()}
        rows.append(row)
    return rows


def versions() -> dict[str, str | None]:
    """Versions of the packages that decide the figures."""
    names = ("chgnet", "sevenn", "torch", "torch-sim-atomistic", "atomate2", "jobflow", "ase")
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def load_average() -> float | None:
    """The 1-minute load average, warning when other work shares the cores (the arms with
    several threads suffer most: a busy core stalls every thread of a parallel region)."""
    if not hasattr(os, "getloadavg"):
        return None
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} before the run; timings will be pessimistic")
    return load


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--source", choices=("generated", "reference"), default="generated")
    add("--inputs", type=Path, nargs="+", help="crystal files (default: made under --work)")
    add("--work", type=Path, default=ROOT / "runs" / "prerelax-inputs", help="input cache")
    add("--n-structures", type=int, default=64)
    add("--min-atoms", type=int, default=4, help="smallest structure picked")
    add("--max-atoms", type=int, default=20, help="largest structure picked")
    add("--rattle", type=float, default=0.05, help="Å per atom (--source reference)")
    add("--seed", type=int, default=0)
    add("--models", default="chgnet,sevennet", help="comma-separated MLFFs")
    add("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    add("--fmax", type=float, default=0.05, help="eV/Å")
    add("--steps", type=int, default=300, help="optimizer step cap")
    add("--device", default="cpu", help="cpu or cuda")
    add("--batch-atoms", type=int, nargs="+", help="atoms in flight (batched); several: a sweep")
    add("--jobs", type=int, default=cores, help="batched-pool workers")
    add("--threads", type=int, default=cores, help="torch threads of batched and atomate2")
    add("--startup-runs", type=int, default=3, help="0: skip the atomate2 start-up estimate")
    add("--out", type=Path, default=RESULTS)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parsed and checked arguments (models canonical, arms a list)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.models = [canonical_model_name(m.strip()) for m in args.models.split(",") if m.strip()]
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(args.arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    if args.inputs and args.source == "reference":
        parser.error("--inputs goes with --source generated")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("jobflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")  # CHGNet/SevenNet/ASE/atomate2 noise, the same everywhere
    load = load_average()
    records, inputs = load_structures(args)
    n_atoms = [len(r.structure) for r in records]
    print(f"{len(records)} structures, {min(n_atoms)}-{max(n_atoms)} atoms, {inputs}")
    limit_memory()
    figures, outcomes = {}, {}
    for model in args.models:
        figures[model], outcomes[model] = bench_model(records, model, args)
        write_results(args, records, inputs, load, figures, outcomes)  # a kill keeps the rest
    for model in args.models:
        print_table(model, figures[model])
    print(f"\nwritten to {args.out}")
    return json.loads(args.out.read_text())


def limit_memory(share: float = 0.7) -> None:
    """Cap this process's address space at ``share`` of the machine's memory: the atomate2 arm
    has no explosion guard, and a collapsing cell's neighbour list can ask for tens of GB (one
    relaxation worker reached 23.5 GB). Past the cap that job fails with a MemoryError, which
    jobflow records, instead of the kernel killing the whole benchmark."""
    import resource

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(total * share) if hard == resource.RLIM_INFINITY else min(hard, int(total * share))
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def write_results(
    args: argparse.Namespace,
    records: list[CrystalRecord],
    inputs: dict[str, Any],
    load: float | None,
    figures: dict[str, Any],
    outcomes: dict[str, Any],
) -> None:
    """Write the figures of the models measured so far to ``args.out``."""
    n_atoms = [len(r.structure) for r in records]
    results = {
        "description": "FIRE + FrechetCellFilter (cell relaxed): batched engine (in one process"
        " and in a worker pool) vs per-structure ASE loop vs atomate2 one job per structure",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "inputs": inputs,
        "n_structures": len(records),
        "n_atoms_mean": float(np.mean(n_atoms)),
        "n_atoms_range": [min(n_atoms), max(n_atoms)],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, device {args.device}",
        "load_average_at_start": load,
        "versions": versions(),
        "models": figures,
        "structures": structure_rows(records, outcomes),
    }
    results["settings"]["inputs"] = [str(p) for p in args.inputs or []]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
