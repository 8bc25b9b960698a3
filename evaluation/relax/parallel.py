"""MLFF relaxations spread over worker processes, delivered chunk by chunk.

One MLFF process uses one core best (``OMP_NUM_THREADS=1``), so a machine with ``n`` cores
relaxes ``n`` structures at a time in ``n`` processes. Results arrive per chunk through a
callback, so a long run (a training-set build, a 1,024-sample evaluation) can persist them as it
goes and a killed run loses at most the chunks in flight.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pymatgen.core import Structure
from tqdm.auto import tqdm

from evaluation.relax.calculators import load_calculator
from evaluation.relax.engine import RelaxResult, relax_structures

#: ``on_chunk(indices, results)``: the input positions of a finished chunk and their results.
ChunkCallback = Callable[[list[int], list[RelaxResult]], None]


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


def _init_worker(memory_limit: int | None = None) -> None:
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
    return relax_structures(structures, progress=False, **kwargs)


def _failed_chunk(indices: list[int], error: BaseException) -> list[RelaxResult]:
    """Failures for a chunk whose worker raised or died (labels as ``relax_structures``'s)."""
    reason = f"relaxation worker failed: {type(error).__name__}: {error}"
    return [RelaxResult(label=f"#{i}", status="failed", reason=reason) for i in indices]


def relax_parallel(
    structures: Sequence[Structure],
    model: str = "chgnet",
    fmax: float = 0.05,
    max_steps: int = 500,
    *,
    n_jobs: int = 1,
    chunk_size: int = 16,
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
        As :func:`evaluation.relax.engine.relax_structures`.
    n_jobs
        Worker processes; 1 relaxes in this process (no pool).
    chunk_size
        Structures per task: small enough to balance load and bound what a kill loses.
    on_chunk
        Called in this process for every finished chunk, in completion order.

    Returns
    -------
    list[RelaxResult]
        One per input, in input order; failures are recorded, never raised.
    """
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    load_calculator(model)  # a missing model fails here, once, not in every worker
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
        for indices in chunks:
            deliver(indices, _relax_chunk([structures[i] for i in indices], kwargs))
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
