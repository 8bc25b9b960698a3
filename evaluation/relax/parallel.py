"""MLFF relaxations spread over worker processes, delivered chunk by chunk.

Each worker runs :func:`evaluation.relax.run.relax` (the batched engine for CHGNet and SevenNet)
on one chunk of structures at a time, with one thread. Measured in ``benchmarks/prerelax.py``
on 2 cores: two CHGNet workers relax 1.3x faster than one process with two torch threads;
SevenNet, whose tensor products use threads well, ties.
Results arrive per chunk through a callback, so a long run (a training-set build, a 1,024-sample
evaluation) can persist them as it goes and a killed run loses at most the chunks in flight.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pymatgen.core import Structure
from tqdm.auto import tqdm

from evaluation.relax.calculators import load_calculator
from evaluation.relax.engine import RelaxResult
from evaluation.relax.run import is_batched, relax

#: Structures per worker task on the batched engine: a chunk is one batch that fills, then
#: drains as its structures converge (the tail runs nearly alone), so fewer, larger chunks
#: keep it fuller.
BATCHED_CHUNK = 32
#: The same for the per-structure engine (matgl, MatterSim), where a chunk has no tail.
SERIAL_CHUNK = 16

#: ``on_chunk(indices, results)``: the input positions of a finished chunk and their results.
ChunkCallback = Callable[[list[int], list[RelaxResult]], None]


#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

#: Address space one relaxation worker may use, as a share of physical memory split between
#: the workers. A relaxation that blows up (a collapsing cell gives CHGNet a graph of millions
#: of edges: one worker reached 23.5 GB and was killed by the kernel, taking the whole pool
#: and an hour of results with it) then fails with MemoryError inside the worker, where it is
#: recorded as that structure's failure.
MEMORY_SHARE = 0.8


def _memory_limit_bytes(n_jobs: int) -> int | None:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None
    return int(total * MEMORY_SHARE / max(1, n_jobs))


def _die_with_parent() -> None:
    """Ask Linux to end this worker when the process that started it dies: a killed campaign
    otherwise left its workers relaxing their chunks for minutes, with no one to take them."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # no usable libc: the worker simply outlives a kill
        return
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


def _init_worker(memory_limit: int | None = None) -> None:
    _die_with_parent()
    # Each worker owns one core; torch would otherwise start one thread per core in every worker.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    if memory_limit:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or memory_limit < hard:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, hard))


def _relax_chunk(structures: list[Structure], kwargs: dict[str, Any]) -> list[RelaxResult]:
    return relax(structures, progress=False, **kwargs)


def _check_model(model: str) -> None:
    """Load ``model`` here once, so a missing one fails at once rather than in every worker."""
    if is_batched(model):
        from evaluation.relax.batched import loaded_model

        loaded_model(model, "cpu")
    else:
        load_calculator(model)


def _failed_chunk(indices: list[int], error: BaseException) -> list[RelaxResult]:
    """Failures for a chunk whose worker raised or died (labels as ``relax``'s)."""
    reason = f"relaxation worker failed: {type(error).__name__}: {error}"
    return [RelaxResult(label=f"#{i}", status="failed", reason=reason) for i in indices]


def relax_parallel(
    structures: Sequence[Structure],
    model: str = "chgnet",
    fmax: float = 0.05,
    max_steps: int = 500,
    *,
    n_jobs: int = 1,
    chunk_size: int | None = None,
    on_chunk: ChunkCallback | None = None,
    progress: bool = True,
    desc: str = "relax",
) -> list[RelaxResult]:
    """Relax ``structures`` (cell and positions) in ``n_jobs`` processes.

    Parameters
    ----------
    structures
        The crystals, in order.
    model, fmax, max_steps
        As :func:`evaluation.relax.run.relax`.
    n_jobs
        Worker processes; 1 relaxes in this process (no pool).
    chunk_size
        Structures per task: small enough to balance load and bound what a kill loses, large
        enough to keep a batch full. Default: :data:`BATCHED_CHUNK` for a batched model,
        :data:`SERIAL_CHUNK` otherwise.
    on_chunk
        Called in this process for every finished chunk, in completion order.

    Returns
    -------
    list[RelaxResult]
        One per input, in input order; failures are recorded, never raised.
    """
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    _check_model(model)
    chunk_size = chunk_size or (BATCHED_CHUNK if is_batched(model) else SERIAL_CHUNK)
    kwargs = {"model": model, "fmax": fmax, "max_steps": max_steps}
    chunks = [
        list(range(start, min(start + chunk_size, len(structures))))
        for start in range(0, len(structures), chunk_size)
    ]
    results: list[RelaxResult | None] = [None] * len(structures)
    bar = tqdm(total=len(structures), desc=desc, unit="xtal", disable=not progress)

    def deliver(indices: list[int], chunk_results: list[RelaxResult]) -> None:
        for index, result in zip(indices, chunk_results, strict=True):
            results[index] = result
        if on_chunk is not None:
            on_chunk(indices, chunk_results)
        bar.update(len(indices))

    if n_jobs == 1 or len(chunks) <= 1:
        # one engine run over everything (one batch that never drains between chunks),
        # delivered ``chunk_size`` finished results at a time
        finished: list[tuple[int, RelaxResult]] = []

        def collect(index: int, result: RelaxResult) -> None:
            finished.append((index, result))
            if len(finished) >= chunk_size:
                deliver([i for i, _ in finished], [r for _, r in finished])
                finished.clear()

        relax(structures, progress=False, on_result=collect, **kwargs)
        if finished:
            deliver([i for i, _ in finished], [r for _, r in finished])
    else:
        # spawn: a forked torch process can deadlock on locks held by the parent's threads.
        context = multiprocessing.get_context("spawn")
        limit = _memory_limit_bytes(n_jobs)
        pool_settings = {"mp_context": context, "initializer": _init_worker, "initargs": (limit,)}
        broken: list[int] = []
        with ProcessPoolExecutor(n_jobs, **pool_settings) as pool:
            futures = {
                pool.submit(_relax_chunk, [structures[i] for i in chunk], kwargs): c
                for c, chunk in enumerate(chunks)
            }
            for future in as_completed(futures):
                c = futures[future]
                try:
                    chunk_results = future.result()
                except BrokenProcessPool:
                    broken.append(c)  # a worker died: every unfinished chunk lands here
                    continue
                except Exception as error:  # a worker that raised: fail its chunk only
                    chunk_results = _failed_chunk(chunks[c], error)
                deliver(chunks[c], chunk_results)
        if broken:
            # Rerun the chunks caught in the broken pool each in a pool of its own (n_jobs at
            # a time): the chunk that kills its worker fails alone, the others finish.
            def isolated(c: int) -> tuple[int, list[RelaxResult]]:
                with ProcessPoolExecutor(1, **pool_settings) as own:
                    try:
                        work = [structures[i] for i in chunks[c]]
                        return c, own.submit(_relax_chunk, work, kwargs).result()
                    except Exception as error:
                        return c, _failed_chunk(chunks[c], error)

            with ThreadPoolExecutor(n_jobs) as threads:
                for c, chunk_results in threads.map(isolated, sorted(broken)):
                    deliver(chunks[c], chunk_results)
    bar.close()
    return [r for r in results if r is not None]
