"""Campaign stages after relaxation: filter, hull, select and score.

Each is a jobflow job; the verdicts are :mod:`evaluation.metrics.sun`'s, the same code and settings
(``SUNSettings``) ``crystalforge evaluate`` uses, so the same candidates get the same flags.
What each flag means in a campaign:

* ``filter`` (after the pre-relaxation): the S.U.N. verdicts on the pre-relaxed structures
  decide who goes on to the hull: structurally valid (charge balanced too with
  ``require_charge_balance``), relaxed, unique among the candidates so far, and not ``known``
  (``unverified`` candidates go on: they may be new polymorphs of a known composition).
* ``hull`` / ``final hull``: E_hull of the stage's energies on the campaign's hull choice
  (:mod:`evaluation.hull.stability`), for every relaxed candidate (the final stage: the top-K of
  those that passed the filter); the DFT engines use a hull at their own level.
* ``score``: the verdicts again, for every candidate, on its last structure (the final
  stage's when it was selected and the stage succeeded, else the pre-relaxation's) and the
  E_hull of that stage: uniqueness and novelty are re-judged on final structures, non-converged
  relaxations and incomplete hulls are flagged.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from jobflow import job

from evaluation.hull.core import HullResult, LevelOfTheoryMismatch
from evaluation.hull.mlff_reference import HullCandidates, mlff_hull_reference
from evaluation.hull.screening import UnknownEnergyScale, known_phase_hull
from evaluation.hull.stability import PlacesEnergies, ReferenceEntries, SameLevelHull
from evaluation.matching.index import ReferenceIndex
from evaluation.metrics.sun import Judged, SUNSettings, Verdict, judge
from evaluation.metrics.sun import summarize as count_verdicts
from evaluation.records import CrystalRecord
from evaluation.reference import DEFAULT_REFERENCE, load_reference
from evaluation.relax.calculators import MLFFUnavailable
from flows.contracts import (
    STAGE_FIELDS,
    Candidate,
    CandidateFlags,
    FilterOutput,
    HullFailure,
    HullOutcome,
    HullPlacement,
    HullReferenceDoc,
    HullStageOutput,
    ScoreOutput,
    StageEntry,
    StageOutput,
    as_structure,
    hull_outcome,
)
from flows.documents import StageResult
from flows.progress import report

__all__ = [
    "STAGE_FIELDS",
    "explain_campaign",
    "filter_candidates",
    "final_hull_stage",
    "hull_reference",
    "hull_spec",
    "hull_stage",
    "novelty_reference",
    "score_campaign",
    "select_top_k",
]


def _usable(result: StageEntry | None) -> bool:
    """A relaxation that produced a structure and an energy (converged or not)."""
    return result is not None and result.usable


def _reference_records(reference_path: str | None) -> tuple[CrystalRecord, ...]:
    """The reference crystals, read once per process while the file is unchanged (a local
    run's filter and score jobs share them; the shipped set takes seconds to read)."""
    path = Path(reference_path) if reference_path else DEFAULT_REFERENCE
    stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None
    return _read_reference(reference_path, stamp)


@lru_cache(maxsize=2)
def _read_reference(reference_path: str | None, stamp: object) -> tuple[CrystalRecord, ...]:
    return tuple(load_reference(reference_path).records)


def novelty_reference(
    reference_path: str | None, settings: SUNSettings
) -> tuple[ReferenceIndex, bool]:
    """The novelty index and whether it counts as complete (a user's reference does)."""
    records = _reference_records(reference_path)
    index = ReferenceIndex.build(records, settings=settings.matcher_settings())
    return index, settings.complete_reference(user_reference=reference_path is not None)


def _judge(
    candidates: list[Candidate],
    stages: list[dict[str, StageEntry]],
    hulls: dict[str, HullResult],
    reference_path: str | None,
    settings: SUNSettings,
) -> list[Verdict]:
    """The S.U.N. verdicts of every candidate on its last usable stage (``stages`` in order,
    earliest first) with the E_hull in ``hulls``."""
    items = []
    for candidate in candidates:
        cid = candidate.candidate_id
        generated = as_structure(candidate.structure)
        results = [stage[cid] for stage in stages if cid in stage]
        usable = [r for r in results if _usable(r)]
        if usable:
            last = usable[-1]
            items.append(
                Judged(cid, generated, as_structure(last.structure), last.status, hulls.get(cid))
            )
        else:
            status = results[-1].status if results else "missing"
            items.append(Judged(cid, generated, generated, status))
    index, complete = novelty_reference(reference_path, settings)
    return judge(items, index, settings, reference_complete=complete)


@job(output_schema=FilterOutput)
def filter_candidates(
    candidates: list[Candidate],
    prerelax: StageOutput,
    reference_path: str | None,
    sun_settings: dict[str, Any] | None = None,
) -> FilterOutput:
    """The S.U.N. verdicts on the pre-relaxed structures, and who goes on to the hull.

    Passing: structurally valid (and charge balanced with ``require_charge_balance``),
    relaxed, unique, not known. The others get the reason in ``failure``.
    """
    started = time.perf_counter()
    candidates = [Candidate.model_validate(c) for c in candidates]
    settings = SUNSettings.model_validate(sun_settings or {})
    relaxed = StageOutput.model_validate(prerelax).by_id()
    verdicts = _judge(candidates, [relaxed], {}, reference_path, settings)
    flags: dict[str, CandidateFlags] = {}
    for verdict in verdicts:
        result = relaxed.get(verdict.id)
        failure = None
        if not _usable(result):
            reason = result.reason if result else "not relaxed"
            failure = f"prerelax {result.status if result else ''}: {reason}"
        elif not verdict.valid_structure:
            failure = "invalid structure"
        elif settings.require_charge_balance and not verdict.valid_composition:
            failure = "not charge balanced"
        elif not verdict.unique:
            failure = f"duplicate of {verdict.duplicate_of}"
        elif verdict.novelty == "known":
            failure = f"known: matches {verdict.matched_reference}"
        flags[verdict.id] = CandidateFlags(
            passed=failure is None, failure=failure, verdict=verdict.to_dict()
        )
    counts = {
        "generated": len(candidates),
        "relaxed": sum(_usable(relaxed.get(c.candidate_id)) for c in candidates),
        "passed_filter": sum(f.passed for f in flags.values()),
    }
    seconds = time.perf_counter() - started
    report(
        f"filter: {counts['passed_filter']} of {counts['generated']} pass (relaxed, valid, "
        f"unique, not known) in {seconds:.0f} s"
    )
    return FilterOutput(flags=flags, counts=counts, seconds=seconds)


@job(output_schema=HullOutcome)
def hull_reference(chemsys: str, reference_path: str | None, model: str) -> HullOutcome:
    """The same-level MLFF hull of ``chemsys``: its reference compounds and elements relaxed
    with ``model`` (the ``same-level`` hull choice).

    Its job id depends only on (chemsys, model, reference), not on the campaign, so every
    campaign on the same store reuses the first one's result. Returns the reference
    (:class:`HullReferenceDoc`), or a :class:`HullFailure` with the reason when the system has
    no hull at this level (e.g. an element without a polymorph to relax).
    """
    started = time.perf_counter()
    records = HullCandidates(_reference_records(reference_path)).within(chemsys)
    report(f"hull references: {len(records)} {chemsys} compounds and its elements with {model}")
    try:
        reference = mlff_hull_reference(chemsys, records, model, progress=True)
    except (ValueError, KeyError, MLFFUnavailable) as error:
        return HullFailure(error=f"no hull for {chemsys} at {model}: {error}")
    return HullReferenceDoc(**reference.to_dict(), seconds=time.perf_counter() - started)


def hull_spec(hull: str, reference_path: str | None, same_level: Any = None) -> dict[str, Any]:
    """What a hull stage places energies on.

    ``hull``: ``known-phases`` or ``same-level`` (MLFF stages; the energies of a user's
    ``reference_path``, when it carries them, win over both) or ``dft-engine`` (a DFT final
    stage: its own same-level hull). ``same_level``: the hull job's output for the last two.
    """
    return {"hull": hull, "reference_path": reference_path, "same_level": same_level}


def _hull_from(spec: dict[str, Any]) -> tuple[PlacesEnergies | None, str]:
    """The hull a spec describes (``None`` and the reason when there is none)."""
    if spec["hull"] != "dft-engine" and spec.get("reference_path"):
        records = _reference_records(spec["reference_path"])
        entries = ReferenceEntries.from_records(records, spec["reference_path"])
        if entries is not None:
            return entries.dft_hull(), ""
    if spec["hull"] == "known-phases":
        return known_phase_hull(), ""
    same_level = hull_outcome(spec.get("same_level"))
    if same_level is None:
        return None, "no same-level hull was built"
    if isinstance(same_level, HullFailure):
        return None, same_level.error
    return SameLevelHull(same_level.reference()), ""


def _hull_results(
    stage_output: StageOutput, ids: list[str], spec: dict[str, Any], chemsys: str
) -> HullStageOutput:
    """E_hull of the stage's energies for ``ids`` on the spec's hull, and its coverage."""
    results = stage_output.by_id()
    try:
        hull, error = _hull_from(spec)
    except ValueError as problem:  # e.g. a --reference whose entries cannot take MLFF energies
        hull, error = None, str(problem)
    scored: dict[str, HullPlacement] = {}
    for cid in ids:
        result = results.get(cid)
        if not _usable(result):
            scored[cid] = HullPlacement(hull_message="not relaxed")
            continue
        if hull is None:
            scored[cid] = HullPlacement(hull_message=error)
            continue
        try:
            value = hull.e_above_hull(
                as_structure(result.structure),
                result.energy_per_atom,
                level_of_theory=result.level_of_theory,
            )
        except (LevelOfTheoryMismatch, UnknownEnergyScale, ValueError) as problem:
            scored[cid] = HullPlacement(hull_message=str(problem))
            continue
        scored[cid] = HullPlacement(hull=value.to_dict())
    coverage = hull.coverage(chemsys).to_dict() if hull is not None else None
    return HullStageOutput(hull=scored, name=hull.name if hull else error, coverage=coverage)


@job(output_schema=HullStageOutput)
def hull_stage(stage_output: StageOutput, spec: dict[str, Any], chemsys: str) -> HullStageOutput:
    """E_hull at the pre-relaxation level of every relaxed candidate (placing an energy on a
    hull costs nothing next to the relaxation; ``evaluate`` places every one too)."""
    started = time.perf_counter()
    stage_output = StageOutput.model_validate(stage_output)
    ids = [r.candidate_id for r in stage_output.results]
    hulls = _hull_results(stage_output, ids, spec, chemsys)
    placed = sum(h.hull is not None for h in hulls.hull.values())
    report(f"hull: {placed} of {len(ids)} placed on {hulls.name}")
    return hulls.model_copy(update={"seconds": time.perf_counter() - started})


@job
def select_top_k(
    placements: dict[str, HullPlacement], flags: dict[str, CandidateFlags], top_k: int
) -> list[str]:
    """The ``top_k`` candidates that passed the filter (``flags``, the filter's) with the
    lowest predicted E_hull (``placements``, the hull stage's) (paper: K = 100)."""
    placements = {c: HullPlacement.model_validate(p) for c, p in placements.items()}
    flags = {c: CandidateFlags.model_validate(f) for c, f in flags.items()}
    scored = [
        (p.hull["e_above_hull"], cid)
        for cid, p in placements.items()
        if flags[cid].passed and p.hull is not None and math.isfinite(p.hull["e_above_hull"])
    ]
    chosen = [cid for _, cid in sorted(scored)[:top_k]]
    report(f"select: the {len(chosen)} lowest E_hull of {len(scored)} go to the final stage")
    return chosen


@job(output_schema=HullStageOutput)
def final_hull_stage(
    final: StageOutput, selected: list[str], spec: dict[str, Any], chemsys: str
) -> HullStageOutput:
    """E_hull of the final stage's energies on the final stage's hull."""
    started = time.perf_counter()
    hulls = _hull_results(StageOutput.model_validate(final), selected, spec, chemsys)
    placed = sum(h.hull is not None for h in hulls.hull.values())
    report(f"final hull: {placed} of {len(selected)} placed on {hulls.name}")
    return hulls.model_copy(update={"seconds": time.perf_counter() - started})


def _stage_doc(result: StageEntry | None, hull: HullPlacement | None) -> dict[str, Any] | None:
    """A candidate document's view of one stage (a ``flows.documents.StageResult``)."""
    if result is None:
        return None
    hull = hull or HullPlacement()
    value = hull.hull or {}
    document = StageResult(
        **{key: getattr(result, key) for key in STAGE_FIELDS},
        hull_message=hull.hull_message,
        e_above_hull=value.get("e_above_hull"),
        formation_energy_per_atom=value.get("formation_energy_per_atom"),
        hull_reference=value.get("reference"),
        hull_label=value.get("label"),
        hull_coverage=value.get("coverage"),
    )
    return document.model_dump()


@job(data=[["output", "candidates"]], output_schema=ScoreOutput)  # see flows.contracts
def score_campaign(
    candidates: list[Candidate],
    prerelax: StageOutput,
    filtered: FilterOutput,
    prerelax_hull: HullStageOutput,
    selected: list[str],
    final: StageOutput,
    final_hull: HullStageOutput,
    reference_path: str | None = None,
    sun_settings: dict[str, Any] | None = None,
) -> ScoreOutput:
    """Per-candidate documents (without campaign fields) and the campaign summary."""
    candidates = [Candidate.model_validate(c) for c in candidates]
    prerelax, final = StageOutput.model_validate(prerelax), StageOutput.model_validate(final)
    filtered = FilterOutput.model_validate(filtered)
    prerelax_hull = HullStageOutput.model_validate(prerelax_hull)
    final_hull = HullStageOutput.model_validate(final_hull)
    settings = SUNSettings.model_validate(sun_settings or {})
    prerelax_results, final_results = prerelax.by_id(), final.by_id()
    stages: list[dict[str, StageEntry]] = [prerelax_results, {}]
    hulls: dict[str, HullResult] = {}
    for cid in prerelax_results:
        placement = prerelax_hull.hull.get(cid)
        if placement is not None and placement.hull is not None:
            hulls[cid] = HullResult.from_dict(placement.hull)
    for cid in selected:  # the final stage wins where it gave a structure and an E_hull
        placement = final_hull.hull.get(cid)
        if placement is not None and placement.hull is not None and _usable(final_results.get(cid)):
            stages[1][cid] = final_results[cid]
            hulls[cid] = HullResult.from_dict(placement.hull)
    verdicts = _judge(candidates, stages, hulls, reference_path, settings)
    documents = []
    for candidate, verdict in zip(candidates, verdicts, strict=True):
        cid = candidate.candidate_id
        generated = as_structure(candidate.structure)
        hull = hulls.get(cid)
        documents.append(
            {
                "candidate_id": cid,
                "generator": candidate.provenance.get("generator", ""),
                "provenance": candidate.provenance,
                "formula": generated.composition.reduced_formula,
                "chemsys": generated.composition.chemical_system,
                "n_atoms": len(generated),
                "structure": candidate.structure,
                "prerelax": _stage_doc(prerelax_results.get(cid), prerelax_hull.hull.get(cid)),
                "final": _stage_doc(final_results.get(cid), final_hull.hull.get(cid))
                if cid in selected
                else None,
                **{k: v for k, v in verdict.to_dict().items() if k not in ("id", "explanation")},
                "verdict": verdict.explanation,
                "selected": cid in selected,
                "level_of_theory": hull.level_of_theory if hull else None,
                "hull_label": hull.label if hull else None,
                "hull_coverage": hull.coverage.label() if hull and hull.coverage else None,
                "hull_complete": hull.coverage.complete if hull and hull.coverage else None,
                "failure": filtered.flags[cid].failure
                or _hull_failure(cid, prerelax_hull, final_hull),
            }
        )
    hull_stage_used = final_hull if final_hull.coverage else prerelax_hull
    summary = {
        **filtered.counts,
        "selected": len(selected),
        **count_verdicts(verdicts),
        "hull": hull_stage_used.name,
        "hull_coverage": hull_stage_used.coverage,
        "prerelax_hull": prerelax_hull.name,
    }
    summary["explanation"] = explain_campaign(summary, documents, settings)
    timings = {
        "prerelax": prerelax.seconds,
        "filter": filtered.seconds,
        "hull": prerelax_hull.seconds,
        "final": final.seconds,
        "final_hull": final_hull.seconds,
    }
    return ScoreOutput(candidates=documents, summary=summary, timings=timings)


def _hull_failure(cid: str, *stages: HullStageOutput) -> str | None:
    placements = [s.hull.get(cid) for s in stages]
    messages = [p.hull_message if p is not None else None for p in placements]
    return next((m for m in reversed(messages) if m), None)


def explain_campaign(
    summary: dict[str, Any], documents: list[dict[str, Any]], settings: SUNSettings
) -> str:
    """The campaign's verdicts in one line: how many S.U.N., judged how, and their caveats."""
    labels = sorted({d["hull_label"] for d in documents if d.get("sun") and d.get("hull_label")})
    text = f"{summary['n_sun']} S.U.N. of {summary['generated']}"
    text += f" (E_hull <= {settings.stability_threshold} by {', '.join(labels)})" if labels else ""
    coverage = summary.get("hull_coverage")
    if coverage:
        text += f"; hull {coverage['chemsys']}: {coverage['label']}"
    if summary["n_unverified"]:
        counted = "counted" if settings.count_unverified else "not counted"
        text += f"; {summary['n_unverified']} unverified (known MP compositions, {counted})"
    if summary["n_known"]:
        text += f"; {summary['n_known']} known"
    if summary["n_sun_not_converged"]:
        text += f"; {summary['n_sun_not_converged']} S.U.N. from non-converged relaxations"
    return text
