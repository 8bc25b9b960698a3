"""The campaign's DFT final stage: one DFT run per selected candidate, on the chosen engine.

Each candidate's run (an engine tasks maker's graph ending in a :class:`DFTResult`) is
followed by a *row* job that turns the result into the campaign's stage-result shape (the
MLFF stages' shape plus ``properties``). Row jobs have ids fixed by campaign and candidate:
a resumed campaign skips candidates whose row is already in the store. A candidate whose DFT
failed gets a failed row with the reason; the other candidates go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from jobflow import Flow, Job, Maker, OnMissing, Response, job

from flows.contracts import (
    Candidate,
    HullFailure,
    HullOutcome,
    HullReferenceDoc,
    StageEntry,
    StageOutput,
    as_structure,
)
from flows.dft.gpaw_run import GpawTasksMaker
from flows.dft.hull import hull_reference_job
from flows.dft.schema import run_past_failures
from flows.relax import rmsd_or_none, with_input_structures
from flows.resume import finished_output, stable_uuid


@job(output_schema=StageEntry)
def dft_stage_row(
    candidate_id: str, input_structure: dict[str, Any], result: dict[str, Any] | None
) -> StageEntry:
    """One candidate's stage result from its DFT run (``None``: the run's summary failed)."""
    if not result:
        return StageEntry(
            candidate_id=candidate_id,
            status="failed",
            reason="the DFT run did not produce a result",
            seconds=0.0,
        )
    usable = result["energy_per_atom"] is not None and result["structure"] is not None
    elastic = result.get("elastic") or {}
    return StageEntry(
        candidate_id=candidate_id,
        # "ok" means usable (an energy and a structure) to the hull and scoring stages;
        # a failed property task leaves it usable and is named in ``reason``
        status="ok" if usable else "failed",
        dft_status=result["status"],
        reason=result["reason"],
        structure=result["structure"] if usable else None,
        energy_per_atom=result["energy_per_atom"],
        level_of_theory=result["level_of_theory"],
        n_steps=0,
        rmsd=rmsd_or_none(input_structure, result["structure"]) if usable else None,
        properties={
            "band_gap": result.get("band_gap"),
            "is_gap_direct": result.get("is_gap_direct"),
            "bulk_modulus_vrh": elastic.get("k_vrh"),
            "shear_modulus_vrh": elastic.get("g_vrh"),
        },
        seconds=sum((t.get("seconds") or 0.0) for t in result["tasks"].values()),
    )


@job(output_schema=StageOutput)
def merge_rows(stage: str, rows: list[StageEntry], started: float) -> StageOutput:
    """The stage output from the candidates' rows."""
    return StageOutput(stage=stage, results=rows, seconds=time.time() - started)


@dataclass
class DFTStageMaker(Maker):
    """Run DFT (relax + static, plus the property tasks asked for) on selected candidates.

    Attributes
    ----------
    tasks_maker
        The engine: :class:`~flows.dft.gpaw_run.GpawTasksMaker` or
        :class:`~flows.dft.vasp.VaspTasksMaker`, with its tasks and settings.
    hull_entries
        VASP only: MP2020-compatible DFT entries (JSON) for the hull at the VASP level.
    """

    name: str = "final"
    tasks_maker: Maker = field(default_factory=GpawTasksMaker)
    hull_entries: str | None = None

    @property
    def model(self) -> str:
        """The level of theory of this stage's energies (the MLFF stages' ``model``)."""
        return self.tasks_maker.level_of_theory

    def hull_reference_job(self, chemsys: str, reference_path: str | None) -> Job:
        """The same-level hull job: computed on demand (GPAW) or from user entries (VASP)."""
        if isinstance(self.tasks_maker, GpawTasksMaker):
            references = replace(self.tasks_maker, tasks=("relax", "static"))
            return hull_reference_job(chemsys, reference_path, references)
        hull = vasp_entries_hull(chemsys, self.hull_entries)
        hull.name = f"hull reference {chemsys} {self.model}"
        hull.set_uuid(stable_uuid("hull-reference", chemsys, self.model, self.hull_entries or ""))
        return hull

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
        """Replace this job by a DFT run and a row job per candidate, and their merge."""
        started = time.time()
        jobs: list[Job | Flow] = []
        rows: list[Any] = []
        for candidate in with_input_structures(candidates, previous, only):
            cid = candidate.candidate_id
            row_uuid = stable_uuid(campaign_id, self.name, "dft", cid)
            if (finished := finished_output(row_uuid)) is not None:  # resumed: its DFT ran
                rows.append(finished)
                continue
            run = run_past_failures(self.tasks_maker.make(as_structure(candidate.input_structure)))
            run.name = f"{self.name} {cid}"
            row = dft_stage_row(cid, candidate.input_structure, run.output)
            row.name = f"{self.name} row {cid}"
            row.set_uuid(row_uuid)
            row.config.on_missing_references = OnMissing.NONE  # a failed run is a failed row
            for part in (run, row):  # `campaign status` names the candidate of a failed job
                part.update_metadata({"candidate_id": cid})
            jobs += [run, row]
            rows.append(row.output)
        merged = merge_rows(self.name, rows, started)
        merged.name = f"{self.name} merge"
        return Response(replace=Flow([*jobs, merged], output=merged.output, name=self.name))


@job(output_schema=HullOutcome)
def vasp_entries_hull(chemsys: str, entries_path: str | None) -> HullOutcome:
    """The VASP-level hull of ``chemsys`` from user-supplied MP2020-compatible entries, or a
    :class:`HullFailure` (no entries file given, or the system is not covered)."""
    from flows.dft.vasp import vasp_hull_reference

    if not entries_path:
        return HullFailure(
            error="the vasp engine needs MP2020-compatible DFT reference entries for its hull "
            "(campaign option vasp_hull_entries: a JSON file of ComputedEntry dicts)"
        )
    try:
        return HullReferenceDoc(**vasp_hull_reference(chemsys, entries_path).to_dict())
    except (ValueError, OSError) as error:
        return HullFailure(error=f"no VASP hull for {chemsys}: {error}")
