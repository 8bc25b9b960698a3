"""Relaxations spread over processes give what one process gives, delivered by chunk."""

from __future__ import annotations

import os
import sys

import pytest
from pymatgen.core import Lattice, Structure

from evaluation.relax.parallel import relax_parallel
from evaluation.relax.run import relax


def _crystals() -> list[Structure]:
    return [
        Structure(Lattice.cubic(a), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        for a in (2.9, 3.0, 3.1, 3.2, 3.3)
    ]


def test_two_processes_match_one_and_report_every_chunk():
    structures = _crystals()
    delivered: list[int] = []
    parallel = relax_parallel(
        structures,
        "chgnet",
        0.1,
        40,
        n_jobs=2,
        chunk_size=2,
        on_chunk=lambda indices, results: delivered.extend(indices),
        progress=False,
    )
    serial = relax(structures, "chgnet", 0.1, 40, progress=False)
    assert sorted(delivered) == list(range(len(structures)))
    assert [r.energy for r in parallel] == pytest.approx([r.energy for r in serial], abs=1e-5)
    assert [r.n_steps for r in parallel] == [r.n_steps for r in serial]


def test_a_bad_crystal_is_a_recorded_failure_not_an_error():
    broken = Structure(Lattice.cubic(3.0), ["Cu", "Au"], [[0, 0, 0], [0.01, 0, 0]])
    results = relax_parallel([broken, *_crystals()[:1]], "chgnet", 0.1, 20, progress=False)
    assert [r.ok for r in results] == [False, True]


def test_a_chunk_whose_worker_raises_fails_alone_and_the_run_goes_on():
    # a non-structure makes the engine itself raise inside the worker, the way an
    # unforeseen numpy error did in a 1,022-sample evaluation (and took all of it down)
    items = [_crystals()[0], "not a crystal", _crystals()[1]]
    results = relax_parallel(items, "chgnet", 0.1, 20, n_jobs=2, chunk_size=1, progress=False)
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].reason.startswith("relaxation worker failed: TypeError")
    assert results[1].label == "#1"


def test_n_jobs_must_be_positive():
    with pytest.raises(ValueError, match="n_jobs"):
        relax_parallel(_crystals(), n_jobs=0)


def test_prefetched_hull_compounds_are_not_relaxed_again(tmp_path, monkeypatch):
    import evaluation.hull.mlff_reference as mlff_reference
    from evaluation.hull.mlff_reference import (
        HullCandidates,
        mlff_hull_reference,
        prefetch_reference_energies,
    )
    from evaluation.records import CrystalRecord

    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(tmp_path / "cache"))
    records = [CrystalRecord(s, f"cuau-{i}", "toy") for i, s in enumerate(_crystals()[:3])]
    candidates = HullCandidates(records)
    settings = {"fmax": 0.1, "max_steps": 30}
    assert (
        prefetch_reference_energies(["Au-Cu", "Cu-Au"], candidates, "chgnet", n_jobs=1, **settings)
        == 3
    )
    assert prefetch_reference_energies(["Au-Cu"], candidates, "chgnet", n_jobs=1, **settings) == 0

    def no_relaxation(*args, **kwargs):
        raise AssertionError("a prefetched compound was relaxed again")

    mlff_hull_reference(
        "Au-Cu", records, "chgnet", elemental_polymorphs=1, progress=False, **settings
    )
    monkeypatch.setattr(mlff_reference, "relax", no_relaxation)
    hull = mlff_hull_reference(
        "Au-Cu", records, "chgnet", elemental_polymorphs=1, progress=False, **settings
    )
    assert len(hull) == 3


def _allocate_in_limited_worker(limit: int) -> str:
    from evaluation.relax.parallel import _init_worker

    _init_worker(limit)
    try:
        bytearray(2 * limit)  # what a relaxation blowing up asks for
    except MemoryError:
        return "MemoryError"
    return "allocated"


def test_a_worker_that_asks_for_too_much_memory_gets_a_memory_error_not_the_kernels_kill():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from evaluation.relax.parallel import _memory_limit_bytes

    assert 0 < _memory_limit_bytes(2) < _memory_limit_bytes(1)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        outcome = pool.submit(_allocate_in_limited_worker, 4 * 1024**3).result()
    assert outcome == "MemoryError"


class _KillsItsWorker:
    """Unpickling this in a worker ends the worker process at once (as the kernel's OOM kill
    or a segfault would)."""

    def __reduce__(self):
        import os

        return (os._exit, (1,))


def test_a_worker_that_dies_costs_only_its_own_chunk():
    crystals = _crystals()
    items = [crystals[0], _KillsItsWorker(), crystals[1], crystals[2]]
    results = relax_parallel(items, "chgnet", 0.1, 20, n_jobs=2, chunk_size=1, progress=False)
    assert [r.ok for r in results] == [True, False, True, True]
    assert "BrokenProcessPool" in results[1].reason


def _start_pool_and_report_worker(path: str) -> None:
    """Start a relaxation pool, write its worker's pid to ``path``, then hang (to be killed)."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    from evaluation.relax.parallel import _init_worker

    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker)
    Path(path).write_text(str(pool.submit(os.getpid).result()))
    time.sleep(120)


def test_workers_end_when_the_process_that_started_them_is_killed(tmp_path):
    import multiprocessing
    import signal
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signals are a Linux feature")
    pid_file = tmp_path / "worker.pid"
    parent = multiprocessing.get_context("spawn").Process(
        target=_start_pool_and_report_worker, args=(str(pid_file),)
    )
    parent.start()
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)  # as the kernel's OOM killer or a user's kill -9
    parent.join()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(worker):
        time.sleep(0.1)
    assert not _alive(worker), "the worker outlived the killed process that started it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by init) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"
