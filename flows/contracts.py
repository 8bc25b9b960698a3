"""The typed contracts between a campaign's jobs: what each job returns and the next one takes.

Every job of the campaign graph returns one of these pydantic models (declared with
``@job(output_schema=...)`` where the job returns a single model), so a flow can reference
a field of an output (``hull.output.hull``) and jobflow checks the reference when the graph
is built. jobflow stores a model through ``jsanitize`` (its fields plus ``@module``/``@class``)
and hands it to the next job through ``MontyDecoder``, which rebuilds the model; a job also
accepts the plain dict of a model (:meth:`Contract.model_validate` takes both), so outputs
written by scripts or read raw from the store are understood the same way.

Structures travel as ``Structure.as_dict()`` payloads (:data:`StructurePayload`), so any
pymatgen user can rebuild them and the store holds plain JSON. Failures are values, not
exceptions: a relaxation's ``status``/``reason``, a hull that could not be built
(:class:`HullFailure`), a candidate that stopped (``failure``).

The structure-heavy parts of outputs (the generated candidates, a stage's ``results``, the score's
``candidates``) go to the job store's ``data`` store (``@job(data=...)``); the ``jobs``
collection keeps a blob reference that jobflow resolves when a job or ``get_output(...,
load=True)`` reads them. Why: the embedded store (montydb) answers every query by decoding the
whole collection, and jobflow queries ``jobs`` a few hundred times per campaign; with the
structures inline, a 27-system benchmark spent longer on those scans than on relaxing.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field
from pymatgen.core import Structure

from flows.documents import StageResult


def as_structure(payload: Structure | dict[str, Any]) -> Structure:
    """A Structure from a stored payload (jobflow decodes ``as_dict()`` payloads on the way)."""
    return payload if isinstance(payload, Structure) else Structure.from_dict(payload)


def as_structure_dict(payload: Structure | dict[str, Any]) -> dict[str, Any]:
    """A ``Structure.as_dict()`` payload from either form."""
    return payload.as_dict() if isinstance(payload, Structure) else payload


#: A structure as ``Structure.as_dict()``; a Structure given instead (``MontyDecoder`` turns
#: stored payloads back into Structures before a model is rebuilt) is converted on validation.
StructurePayload = Annotated[dict[str, Any], BeforeValidator(as_structure_dict)]


class Contract(BaseModel):
    """A job output or input: a pydantic model that also reads like the dict it replaced.

    ``output["results"]``, ``output.get("name")`` and ``"error" in output`` work as on the
    former dicts, for scripts and notebooks written against them; ``key in output`` is true
    for the model's fields.
    """

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in type(self).model_fields

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key``, or ``default`` when the model has no such field."""
        return getattr(self, key) if key in self else default

    def keys(self) -> list[str]:
        """The field names (``{**output}`` and ``dict(output)`` give the fields)."""
        return list(type(self).model_fields)


class Candidate(Contract):
    """One generated crystal, as every stage receives it.

    ``input_structure`` is set by a stage for its own work (the previous stage's relaxed
    structure, else the generated one); a generator leaves it unset.
    """

    candidate_id: str
    structure: StructurePayload = Field(description="the generated structure")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="the generator, its parameters, the seed and index"
    )
    input_structure: StructurePayload | None = Field(
        None, description="what the current stage starts from"
    )


class StageEntry(Contract):
    """What one relaxation stage (MLFF or DFT) did to one candidate."""

    candidate_id: str
    status: str = Field(description="ok | not_converged | exploded | failed")
    reason: str = ""
    structure: StructurePayload | None = Field(None, description="the relaxed structure")
    energy_per_atom: float | None = None
    level_of_theory: str | None = None
    n_steps: int = 0
    rmsd: float | None = Field(None, description="Eq. D47 RMSD to the stage's input (Å)")
    dft_status: str | None = Field(None, description="DFT stages: ok | partial | failed")
    properties: dict[str, Any] = Field(
        default_factory=dict, description="DFT stages: band gap, elastic moduli"
    )
    seconds: float | None = Field(None, description="DFT stages: the run's seconds")

    @property
    def usable(self) -> bool:
        """A relaxation that produced a structure and an energy (converged or not)."""
        return self.status in ("ok", "not_converged") and self.structure is not None


#: What a candidate document keeps of each stage entry: ``StageResult``'s fields that a stage
#: entry carries (the others are the hull's, added by the score job).
STAGE_FIELDS: tuple[str, ...] = tuple(
    name for name in StageResult.model_fields if name in StageEntry.model_fields
)


class StageOutput(Contract):
    """A relaxation stage's output: one entry per candidate it worked on, in order."""

    stage: str = ""
    results: list[StageEntry] = Field(default_factory=list)
    seconds: float = 0.0

    def by_id(self) -> dict[str, StageEntry]:
        """The entries by candidate id."""
        return {entry.candidate_id: entry for entry in self.results}


class ShardOutput(StageOutput):
    """One relaxation shard's output; its trajectories go to the job store's ``data`` store."""

    trajectories: dict[str, list[float]] = Field(
        default_factory=dict, description="candidate id -> energies along the relaxation (eV)"
    )


class CandidateFlags(Contract):
    """The filter's verdict on one candidate: whether it goes on, else why not."""

    passed: bool
    failure: str | None = None
    verdict: dict[str, Any] = Field(
        default_factory=dict, description="evaluation.metrics.sun.Verdict.to_dict()"
    )


class FilterOutput(Contract):
    """The filter job's output: flags per candidate and the counts of the summary."""

    flags: dict[str, CandidateFlags]
    counts: dict[str, int] = Field(description="generated, relaxed, passed_filter")
    seconds: float = 0.0


class HullPlacement(Contract):
    """One candidate placed on a hull: the result, or why it could not be placed."""

    hull: dict[str, Any] | None = Field(
        None, description="evaluation.hull.core.HullResult.to_dict(); None when not placed"
    )
    hull_message: str = ""


class HullStageOutput(Contract):
    """A hull stage's output: each candidate's placement, the hull's name and coverage."""

    hull: dict[str, HullPlacement] = Field(default_factory=dict)
    name: str | None = Field(None, description="the hull, or why there is none")
    coverage: dict[str, Any] | None = Field(None, description="HullCoverage.to_dict()")
    seconds: float = 0.0


class HullOutcome(Contract):
    """What a hull-reference job returns: a :class:`HullReferenceDoc` or a
    :class:`HullFailure` (the jobs declare this base as their output schema)."""


class HullReferenceDoc(HullOutcome):
    """A hull reference at one level of theory: ``EntryHullReference.to_dict()`` and how it
    was made."""

    entries: list[tuple[str, float, str]] = Field(description="(formula, total energy, name)")
    elemental_energies: dict[str, float]
    level_of_theory: str
    correction: str | None = None
    name: str = "entries"
    skipped: list[str] = Field(default_factory=list, description="reference runs that failed")
    seconds: float | None = None

    def reference(self) -> Any:
        """The :class:`~evaluation.hull.core.EntryHullReference` this document describes."""
        from evaluation.hull.core import EntryHullReference

        return EntryHullReference.from_dict(self.model_dump())


class HullFailure(HullOutcome):
    """No hull at this level, and why (e.g. an element without a polymorph to relax)."""

    error: str


def hull_outcome(value: HullOutcome | dict[str, Any] | None) -> HullOutcome | None:
    """A hull job's output as its model (a stored dict is read by its shape)."""
    if value is None or isinstance(value, HullOutcome):
        return value
    return HullFailure.model_validate(value) if "error" in value else HullReferenceDoc(**value)


class ScoreOutput(Contract):
    """The score job's output: candidate documents (``CandidateDoc`` without the campaign's
    fields, which the recorder adds), the campaign summary and the stage timings."""

    candidates: list[dict[str, Any]]
    summary: dict[str, Any]
    timings: dict[str, float]
