"""What the explorer's pages show, read from the results store: no HTML here.

Every number keeps the words that qualify it: an E_hull comes with its level of theory and the
reference it was computed against, a hull with its coverage of the system's known phases, a
novelty flag that was never checked stays ``None`` (shown as ``-``, not ``no``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluation.hull.core import EntryHullReference
from flows.contracts import HullFailure, hull_outcome
from pipeline.results_view import STAGES, ranked_stage, short_level
from pipeline.store import ResultsStore

#: The counts after each filter, in the order a campaign applies them (campaign summary keys).
FUNNEL = (
    ("generated", "generated"),
    ("relaxed", "relaxed"),
    ("passed_filter", "valid, unique, not known"),
    ("selected", "to the final stage"),
    ("n_sun", "S.U.N."),
)


@dataclass(frozen=True)
class CampaignRow:
    """One line of the campaigns page."""

    campaign_id: str
    chemsys: str
    generator: str
    engine: str
    status: str
    funnel: tuple[tuple[str, int | None], ...]
    wall_seconds: float | None
    hull: str
    coverage: str
    coverage_complete: bool | None
    created_at: str
    failure: str | None = None
    #: FireWorks campaigns: ``campaign status``'s per-stage lines, or why they are unavailable
    progress: list[str] | str | None = None

    @property
    def n_sun(self) -> int | None:
        return dict(self.funnel).get("S.U.N.")


def campaign_row(document: dict[str, Any]) -> CampaignRow:
    """A campaign document as its line on the campaigns page."""
    summary = document.get("summary") or {}
    config = document.get("config") or {}
    coverage = summary.get("hull_coverage") or {}
    return CampaignRow(
        campaign_id=document["campaign_id"],
        chemsys=document.get("chemsys", ""),
        generator=config.get("generator", ""),
        engine=config.get("engine", ""),
        status=document.get("status", ""),
        funnel=tuple((label, summary.get(key)) for key, label in FUNNEL),
        wall_seconds=(document.get("timings") or {}).get("wall"),
        hull=summary.get("hull") or "",
        coverage=coverage.get("label", "") if isinstance(coverage, dict) else str(coverage),
        coverage_complete=coverage.get("complete") if isinstance(coverage, dict) else None,
        created_at=document.get("created_at", ""),
        failure=document.get("failure"),
        progress=fireworks_progress(document),
    )


def fireworks_progress(document: dict[str, Any]) -> list[str] | str | None:
    """``campaign status``'s per-stage lines for a campaign submitted to FireWorks, why they
    cannot be read (a LaunchPad that moved or cannot be reached), or ``None`` for a campaign
    run locally."""
    execution = document.get("execution") or {}
    if execution.get("manager") != "fireworks":
        return None
    from pipeline.launchpad import LaunchPadError, LaunchPadLocation
    from pipeline.progress import campaign_progress

    try:
        location = LaunchPadLocation.parse(execution["launchpad"])
        return campaign_progress(location, document["campaign_id"]).lines()
    except (LaunchPadError, OSError, KeyError) as error:
        return f"progress unavailable: {error}"


def campaign_rows(store: ResultsStore) -> list[CampaignRow]:
    """Every campaign in the store, newest first."""
    rows = [campaign_row(d) for d in store.list_campaigns()]
    return sorted(rows, key=lambda r: r.created_at, reverse=True)


@dataclass(frozen=True)
class StageView:
    """One stage of a candidate (pre-relaxation or final) with what qualifies its numbers."""

    stage: str
    status: str
    level_of_theory: str | None
    energy_per_atom: float | None
    e_above_hull: float | None
    hull_reference: str
    hull_coverage: str
    rmsd: float | None
    n_steps: int | None
    properties: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def stage_views(document: dict[str, Any]) -> list[StageView]:
    """The stages a candidate went through, in campaign order."""
    views = []
    for stage in STAGES:
        result = document.get(stage) or {}
        if not result.get("status"):
            continue
        coverage = result.get("hull_coverage") or {}  # HullCoverage.to_dict() (StageResult)
        views.append(
            StageView(
                stage=stage,
                status=result["status"],
                level_of_theory=result.get("level_of_theory"),
                energy_per_atom=result.get("energy_per_atom"),
                e_above_hull=result.get("e_above_hull"),
                hull_reference=result.get("hull_reference") or result.get("hull_message") or "",
                hull_coverage=coverage.get("label", "") if isinstance(coverage, dict) else "",
                rmsd=result.get("rmsd"),
                n_steps=result.get("n_steps"),
                properties=result.get("properties") or {},
                reason=result.get("reason") or "",
            )
        )
    return views


@dataclass(frozen=True)
class CandidateRow:
    """One line of a campaign's candidate table."""

    key: str
    candidate_id: str
    formula: str
    n_atoms: int
    e_above_hull: float | None
    level: str
    valid: bool | None
    unique: bool | None
    novelty: str | None
    selected: bool | None
    sun: bool | None
    flags: tuple[str, ...]
    failure: str | None
    properties: dict[str, Any] = field(default_factory=dict)


def candidate_row(document: dict[str, Any]) -> CandidateRow:
    """A candidate document as its line in the campaign's table (E_hull of its most refined
    stage, with that stage's level of theory)."""
    ranked = ranked_stage(document)
    return CandidateRow(
        key=document["candidate_key"],
        candidate_id=document["candidate_id"],
        formula=document.get("formula", ""),
        n_atoms=int(document.get("n_atoms") or 0),
        e_above_hull=ranked.get("e_above_hull"),
        level=short_level(ranked.get("level_of_theory")),
        valid=document.get("valid"),
        unique=document.get("unique"),
        novelty=document.get("novelty"),
        selected=document.get("selected"),
        sun=document.get("sun"),
        flags=tuple(document.get("flags") or ()),
        failure=document.get("failure"),
        properties=ranked.get("properties") or {},
    )


def hull_references(
    store: ResultsStore, document: dict[str, Any]
) -> dict[str, EntryHullReference | str]:
    """The campaign's hull references by level of theory (``mlff:chgnet-0.3.0`` → reference),
    or why one could not be built (key ``"failed"``); empty when the campaign placed nothing
    on a same-level hull (a known-phases hull is the shipped DFT reference, not a job).

    The campaign's graph is rebuilt from its stored settings to find its reference jobs: their
    ids are stable, and a second campaign of a system reuses the first one's jobs, so the jobs'
    own metadata may name the other campaign.
    """
    from pipeline.campaign import CampaignConfig

    try:
        config = CampaignConfig(**document["config"])
        flow = config.maker().make(document["chemsys"], document["campaign_id"])
    except (KeyError, TypeError, ValueError):  # settings of another version: no diagram
        return {}
    references: dict[str, EntryHullReference | str] = {}
    for job in flow.jobs:
        if (job.metadata or {}).get("stage") != "hull reference":
            continue
        try:
            outcome = hull_outcome(store.jobs.get_output(job.uuid, load=True))
        except ValueError:  # not run yet
            continue
        if outcome is None:
            continue
        if isinstance(outcome, HullFailure):
            references.setdefault("failed", outcome.error)
            continue
        references[outcome.level_of_theory] = outcome.reference()
    return references


def e_above_hull_by_level(rows: Sequence[CandidateRow]) -> dict[str, list[float]]:
    """The E_hull values of a table by the level of theory they were computed at."""
    by_level: dict[str, list[float]] = {}
    for row in rows:
        if row.e_above_hull is not None:
            by_level.setdefault(row.level, []).append(row.e_above_hull)
    return by_level
