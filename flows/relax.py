"""MLFF relaxation stages: the sharded pre-relaxation and the MLFF final stage.

A candidate travels between jobs as a :class:`~flows.contracts.Candidate` and a stage returns
a :class:`~flows.contracts.StageOutput` (structures as ``Structure.as_dict()``), so job
outputs serialise into any JobStore.
Relaxation runs in shards of many structures per job — one calculator load per shard, not per
structure — and a shard's failures are per candidate (status and reason), never the job's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from jobflow import Flow, Maker, Response, job
from pymatgen.core import Structure

from evaluation.metrics.structure import rmsd
from evaluation.paths import cache_dir
from evaluation.relax.engine import RelaxResult
from evaluation.relax.parallel import relax_parallel
from evaluation.relax.run import relax
from flows.contracts import (
    Candidate,
    ShardOutput,
    StageEntry,
    StageOutput,
    as_structure,
    as_structure_dict,
)
from flows.progress import report
from flows.resume import finished_output, resumable, stable_uuid

__all__ = [
    "MLFFRelaxMaker",
    "ShardJournal",
    "as_structure",
    "as_structure_dict",
    "merge_shards",
    "relax_shard",
    "rmsd_or_none",
    "stable_uuid",
    "with_input_structures",
]


def rmsd_or_none(before: Structure | dict, after: Structure | dict) -> float | None:
    """Eq. D47 RMSD between a stage's input and output, ``None`` when they do not match."""
    try:
        return rmsd(as_structure(before), as_structure(after))
    except ValueError:
        return None


def _stage_entry(candidate: Candidate, structure: Structure, result: RelaxResult) -> StageEntry:
    """One candidate's stage result."""
    return StageEntry(
        candidate_id=candidate.candidate_id,
        status=result.status,
        reason=result.reason,
        structure=result.structure.as_dict() if result.structure is not None else None,
        energy_per_atom=result.energy_per_atom,
        level_of_theory=result.level_of_theory or None,
        n_steps=result.n_steps,
        rmsd=rmsd_or_none(structure, result.structure) if result.structure else None,
    )


class ShardJournal:
    """Relaxations a shard has finished, appended to a JSONL file in the cache as each one
    ends, so a killed shard resumes after its last finished relaxation, not from scratch.

    One file per shard job id (``<cache>/shards/<uuid>.jsonl``); a line counts only for the
    same candidate, input structure and relaxation settings. Removed when the shard's output
    is stored.
    """

    def __init__(self, uuid: str, settings: str):
        self.path = cache_dir() / "shards" / f"{uuid}.jsonl"
        self.settings = settings

    @staticmethod
    def key(candidate: Candidate) -> str:
        digest = hashlib.sha256(
            json.dumps(as_structure_dict(candidate.input_structure), sort_keys=True).encode()
        ).hexdigest()[:16]
        return f"{candidate.candidate_id}|{digest}"

    def finished(self) -> dict[str, tuple[StageEntry, list[float]]]:
        """key -> (stage entry, trajectory energies) of the relaxations already done."""
        done = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
            if row.get("settings") == self.settings:
                done[row["key"]] = (StageEntry.model_validate(row["entry"]), row["trajectory"])
        return done

    def record(self, key: str, entry: StageEntry, trajectory: list[float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {
            "key": key,
            "settings": self.settings,
            "entry": entry.model_dump(),
            "trajectory": trajectory,
        }
        with self.path.open("a") as handle:
            handle.write(json.dumps(row, default=float) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@job(data=["trajectories", ["output", "results"]], output_schema=ShardOutput)
def relax_shard(
    candidates: list[Candidate],
    model: str,
    fmax: float,
    max_steps: int,
    stage: str,
    label: str = "",
    n_jobs: int = 1,
) -> ShardOutput:
    """Relax one shard with one MLFF; returns per-candidate stage results and timings.

    Each candidate is relaxed from its ``input_structure`` (attached by
    ``with_input_structures``: the previous stage's relaxed structure, else the generated one).
    Finished relaxations are journaled (:class:`ShardJournal`), so a killed shard loses at
    most the one relaxation it was running. ``label`` names the progress bar.
    """
    from jobflow import CURRENT_JOB

    if (finished := finished_output()) is not None:  # resumed: this shard already finished
        return finished
    started = time.perf_counter()
    job_id = CURRENT_JOB.job.uuid if CURRENT_JOB.job is not None else None
    journal = ShardJournal(job_id, f"{model}|{fmax}|{max_steps}") if job_id else None
    done = journal.finished() if journal else {}
    candidates = [Candidate.model_validate(c) for c in candidates]
    keys = [ShardJournal.key(c) for c in candidates]
    todo = [i for i, key in enumerate(keys) if key not in done]
    structures = [as_structure(c.input_structure) for c in candidates]

    def persist(position: int, result: RelaxResult) -> None:
        i = todo[position]
        entry = _stage_entry(candidates[i], structures[i], result)
        done[keys[i]] = (entry, list(result.trajectory.energies))
        if journal:
            journal.record(keys[i], entry, list(result.trajectory.energies))

    bar = label or f"{stage} ({model})"
    resumed = f", {len(done)} already done before an interruption" if done else ""
    report(f"{bar}: {len(todo)} to relax{resumed}")
    pending = [structures[i] for i in todo]
    if n_jobs > 1 and len(pending) > 1:  # one chunk per worker: each is one full batch
        relax_parallel(
            pending,
            model,
            fmax,
            max_steps,
            n_jobs=n_jobs,
            chunk_size=math.ceil(len(pending) / n_jobs),
            on_chunk=lambda positions, results: list(map(persist, positions, results)),
            desc=bar,
        )
    else:
        relax(pending, model=model, fmax=fmax, max_steps=max_steps, progress=bar, on_result=persist)
    ids = [c.candidate_id for c in candidates]
    output = ShardOutput(
        stage=stage,
        results=[done[key][0] for key in keys],
        trajectories={i: done[k][1] for i, k in zip(ids, keys, strict=True)},
        seconds=time.perf_counter() - started,
    )
    if journal:
        journal.remove()  # jobflow stores the output next; a kill before that reuses the journal
    return output


@job(data=[["output", "results"]], output_schema=StageOutput)  # see flows.contracts
def merge_shards(shards: list[StageOutput]) -> StageOutput:
    """One stage output from its shards (order kept; seconds summed)."""
    shards = [StageOutput.model_validate(shard) for shard in shards]
    return StageOutput(
        stage=shards[0].stage if shards else "",
        results=[r for shard in shards for r in shard.results],
        seconds=sum(shard.seconds for shard in shards),
    )


def with_input_structures(
    candidates: list[Candidate | dict[str, Any]],
    previous: StageOutput | dict[str, Any] | None,
    only: list[str] | None = None,
) -> list[Candidate]:
    """The candidates a stage works on (``only`` these ids, if given), each with its input
    structure attached: the previous stage's relaxed one, else the generated one."""
    ready = [Candidate.model_validate(c) for c in candidates]
    if only is not None:
        wanted = set(only)
        ready = [c for c in ready if c.candidate_id in wanted]
    relaxed = {}
    if previous is not None:
        results = StageOutput.model_validate(previous).results
        relaxed = {r.candidate_id: r.structure for r in results if r.structure}
    return [
        c.model_copy(update={"input_structure": relaxed.get(c.candidate_id, c.structure)})
        for c in ready
    ]


@dataclass
class MLFFRelaxMaker(Maker):
    """Relax candidates with an MLFF in shards (a dynamic fan-out: the count is known at run).

    Attributes
    ----------
    name
        Stage name (``prerelax`` or ``final``); also keys the deterministic job ids.
    model
        MLFF name for :func:`evaluation.relax.calculators.load_calculator` (``chgnet``,
        ``7net-l3i5``, ...).
    fmax, max_steps
        Convergence criterion (eV/Å) and step budget.
    shard_size
        Structures per job: one calculator load per shard.
    n_jobs
        Worker processes per shard (CPU), each relaxing its part of the shard as one batch;
        1 relaxes in the job's own process. Worth it where one process runs every job
        (``run_locally``): on 2 cores two CHGNet workers relax ~1.5x faster than one process
        with one thread, ~1.3x faster than one with two (``benchmarks/prerelax.py``). On
        FireWorks, parallelism comes from the workers instead.
    """

    name: str = "prerelax"
    model: str = "chgnet"
    fmax: float = 0.05
    max_steps: int = 500
    shard_size: int = 32
    n_jobs: int = 1

    # no output_schema: jobflow would apply it to the job storing the replacement's output,
    # which holds a reference to the merge job's StageOutput, not the model itself
    @job
    def make(
        self,
        candidates: list[Candidate],
        campaign_id: str,
        previous: StageOutput | None = None,
        only: list[str] | None = None,
    ) -> Response:
        """Replace this job by one relaxation job per shard and a merge job.

        ``previous`` is an earlier stage's output whose relaxed structures are the inputs here;
        ``only`` restricts the stage to these candidate ids (the selected top-K).
        """
        ready = with_input_structures(candidates, previous, only)
        shards = []
        starts = range(0, max(len(ready), 1), self.shard_size)
        report(
            f"{self.name}: {len(ready)} candidates in {len(starts)} shard(s) with {self.model} "
            f"(fmax {self.fmax} eV/Å, at most {self.max_steps} steps)"
        )
        for number, start in enumerate(starts):
            shard = relax_shard(
                ready[start : start + self.shard_size],
                self.model,
                self.fmax,
                self.max_steps,
                self.name,
                f"{self.name} shard {number + 1}/{len(starts)} ({self.model})",
                n_jobs=self.n_jobs,
            )
            shard.name = f"{self.name} shard {number}"
            # a resumed shard finds its earlier output under this id
            resumable(shard, stable_uuid(campaign_id, self.name, "shard", str(number)))
            shards.append(shard)
        merged = merge_shards([shard.output for shard in shards])
        merged.name = f"{self.name} merge"
        merged.set_uuid(stable_uuid(campaign_id, self.name, "merge"))
        return Response(replace=Flow([*shards, merged], output=merged.output, name=self.name))
