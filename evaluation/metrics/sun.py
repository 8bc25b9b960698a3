"""One S.U.N.: the verdicts of campaigns and ``crystalforge evaluate``, defined once.

Both callers describe each structure as a :class:`Judged` and call :func:`judge` with one
:class:`SUNSettings`; both summarise with :func:`summarize`. What each verdict means:

valid
    ``valid_structure`` (every interatomic distance, periodic images included, >= 0.5 Å;
    cell volume >= 0.1 Å³) **and** ``valid_composition`` (SMACT charge balance with Pauling's
    test; alloys and elements pass), both judged on the structure as generated or given
    (CDVAE/MatterGen). The README's definition; used everywhere.
judged structure
    The structure the other verdicts are about: the last relaxed one (a campaign: the final
    stage's when the candidate was selected, else the pre-relaxation's; ``evaluate``: the
    relaxed one with ``--relax``), or the given one when no relaxation ran. A structure whose
    relaxation failed has no judged structure: it is neither unique nor stable.
unique
    The first of its kind among the set, in the set's order (sampling order, a campaign's
    generation order): its judged structure matches no earlier judged structure
    (``StructureMatcher`` ltol 0.2, stol 0.3, angle_tol 5, or the ordered–disordered matcher
    with ``disorder``). ``duplicate_of`` names the earlier one.
novelty
    ``known``: the judged structure matches a reference structure (``matched_reference``).
    ``unverified``: it matches none, but its composition is a known Materials Project
    composition (``known_composition``, e.g. ``Li2O (mp-1960)``) and the reference is a sample
    that may lack that structure (the shipped set; a user's ``--reference`` counts as complete
    unless ``reference_complete`` is set false). One exception makes it ``novel``: E_hull more
    than :attr:`SUNSettings.new_ground_state_margin` below a hull that holds that composition's
    known phase -- it cannot be the known ground state.
    ``novel``: everything else.
stable, on_hull
    ``E_hull <= stability_threshold`` (0.1 eV/atom, MatterGen's ``<=``); ``E_hull <= 0``.
S.U.N.
    stable and unique and novel (``unverified`` counts only with ``count_unverified``), and
    charge balanced when ``require_charge_balance``.
flags (recorded, never gating)
    ``not_converged`` (the relaxation hit its step cap), ``incomplete_hull`` (the hull misses
    known hull phases of the system: ``hull_coverage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure

from evaluation.hull.core import HullResult
from evaluation.hull.known_phases import known_phases
from evaluation.matching.index import MatcherSettings, ReferenceIndex, find_duplicates
from evaluation.metrics.structure import (
    STABILITY_THRESHOLD,
    is_compositionally_valid,
    is_on_hull,
    is_stable,
    is_structurally_valid,
)

Novelty = Literal["novel", "known", "unverified"]
#: Relaxation outcomes that leave a judged structure (see ``evaluation.relax.engine.RelaxResult``).
USABLE_RELAXATIONS = ("ok", "not_converged", "not_relaxed")


class MatcherTolerances(BaseModel):
    """pymatgen ``StructureMatcher`` tolerances (the paper: ltol 0.2, stol 0.3, angle_tol 5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ltol: float = Field(0.2, gt=0)
    stol: float = Field(0.3, gt=0)
    angle_tol: float = Field(5.0, gt=0)


class SUNSettings(BaseModel):
    """What the verdicts mean (see the module docstring); shared by campaigns and ``evaluate``.

    Attributes
    ----------
    stability_threshold
        Stable means E_hull <= this (eV/atom); the paper uses 0.1.
    disorder
        The ordered–disordered matcher (published paper, Supplementary D.4) for uniqueness and
        novelty alike.
    matcher
        ``StructureMatcher`` tolerances.
    require_charge_balance
        S.U.N. (and a campaign's filter) also require SMACT charge balance.
    count_unverified
        S.U.N. counts ``unverified`` novelty (a known composition whose structure the
        reference could not confirm) as novel.
    reference_complete
        Whether the novelty reference holds every known structure of its compositions
        (``None``: false for the shipped sample, true for a user's ``--reference``).
    new_ground_state_margin
        An ``unverified`` structure this far (eV/atom) below a hull holding its composition's
        known phase is ``novel``.
    """

    model_config = ConfigDict(extra="forbid")

    stability_threshold: float = Field(STABILITY_THRESHOLD, ge=0)
    disorder: bool = False
    matcher: MatcherTolerances = Field(default_factory=MatcherTolerances)
    require_charge_balance: bool = False
    count_unverified: bool = False
    reference_complete: bool | None = None
    new_ground_state_margin: float = Field(0.1, gt=0)

    def matcher_settings(self) -> MatcherSettings:
        """The matcher these settings describe (tolerances and ``disorder``)."""
        return MatcherSettings(**self.matcher.model_dump(), disorder=self.disorder)

    def sun_settings(self) -> SUNSettings:
        """Just the S.U.N. fields (a subclass's extra settings dropped)."""
        return SUNSettings.model_validate(self.model_dump(include=set(SUNSettings.model_fields)))

    def complete_reference(self, user_reference: bool) -> bool:
        """``reference_complete``, resolved for the shipped (``False``) or a user reference."""
        return user_reference if self.reference_complete is None else self.reference_complete


@dataclass
class Judged:
    """What S.U.N. needs to know about one structure.

    Attributes
    ----------
    id
        The structure's name in the set (a candidate id, a row id).
    given
        The structure as generated or given (validity is judged on it).
    judged
        The last relaxed structure, or ``given`` when no relaxation ran.
    relaxation
        ``ok``, ``not_converged``, ``not_relaxed`` or a failure status.
    hull
        Its E_hull, when it has one.
    """

    id: str
    given: Structure
    judged: Structure
    relaxation: str = "not_relaxed"
    hull: HullResult | None = None

    @property
    def usable(self) -> bool:
        return self.relaxation in USABLE_RELAXATIONS


@dataclass
class Verdict:
    """The S.U.N. verdicts of one structure (see the module docstring)."""

    id: str
    valid: bool
    valid_structure: bool
    valid_composition: bool
    unique: bool
    duplicate_of: str | None
    novelty: Novelty
    matched_reference: str | None
    known_composition: str | None
    novel: bool
    e_above_hull: float | None
    stable: bool
    on_hull: bool
    sun: bool
    flags: list[str] = field(default_factory=list)
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _novelty(
    item: Judged, match: str | None, complete: bool, settings: SUNSettings
) -> tuple[Novelty, str | None, str]:
    """Novelty state, the known composition's label, and a note on the exception."""
    if match is not None:
        return "known", None, ""
    formula = item.judged.composition.reduced_formula
    phase = known_phases().composition(formula)
    if phase is None or complete:
        return "novel", phase.label if phase else None, ""
    hull = item.hull if item.usable else None
    if (
        hull is not None
        and hull.e_above_hull < -settings.new_ground_state_margin
        and hull.coverage is not None
        # the hull accounts for the known phase: it holds every known hull phase, or this one
        and (hull.coverage.complete or hull.coverage.holds(formula))
    ):
        note = f"{-hull.e_above_hull:.3f} eV/atom below the hull holding {phase.label}"
        return "novel", phase.label, note
    return "unverified", phase.label, ""


def judge(
    items: Sequence[Judged],
    index: ReferenceIndex,
    settings: SUNSettings,
    *,
    reference_complete: bool,
    n_jobs: int = 1,
) -> list[Verdict]:
    """The S.U.N. verdicts of a set, in its order.

    Parameters
    ----------
    items
        The set, in sampling or generation order (uniqueness keeps the first of a kind).
    index
        The novelty reference, built with ``settings.matcher_settings()``.
    settings
        What the verdicts mean.
    reference_complete
        Whether ``index`` holds every known structure of its compositions
        (:meth:`SUNSettings.complete_reference`).
    n_jobs
        Worker processes for matching.

    Raises
    ------
    ValueError
        When ``index`` was built with other matcher settings (novelty and uniqueness would
        then mean different things).
    """
    if index.settings != settings.matcher_settings():
        raise ValueError(
            f"the novelty index was built with {index.settings}, the verdicts ask for "
            f"{settings.matcher_settings()}"
        )
    usable = [i for i, item in enumerate(items) if item.usable]
    duplicates = find_duplicates(
        [items[i].judged for i in usable], settings=settings.matcher_settings(), n_jobs=n_jobs
    )
    duplicate_of: dict[int, str | None] = {
        i: (items[usable[d]].id if d is not None else None)
        for i, d in zip(usable, duplicates, strict=True)
    }
    matches = index.matches([item.judged for item in items], n_jobs=n_jobs)
    verdicts = []
    for i, (item, match) in enumerate(zip(items, matches, strict=True)):
        valid_structure = item.given.is_ordered and is_structurally_valid(item.given)
        valid_composition = is_compositionally_valid(item.given.composition)
        novelty, known_label, note = _novelty(item, match, reference_complete, settings)
        novel = novelty == "novel" or (novelty == "unverified" and settings.count_unverified)
        e_hull = item.hull.e_above_hull if item.hull is not None and item.usable else None
        unique = item.usable and duplicate_of[i] is None
        stable = is_stable(e_hull, settings.stability_threshold)
        charge_ok = valid_composition or not settings.require_charge_balance
        flags = []
        if item.relaxation == "not_converged":
            flags.append("not_converged")
        if (
            item.hull is not None
            and item.hull.coverage is not None
            and not item.hull.coverage.complete
        ):
            flags.append("incomplete_hull")
        verdict = Verdict(
            id=item.id,
            valid=valid_structure and valid_composition,
            valid_structure=valid_structure,
            valid_composition=valid_composition,
            unique=unique,
            duplicate_of=duplicate_of.get(i),
            novelty=novelty,
            matched_reference=match,
            known_composition=known_label,
            novel=novel,
            e_above_hull=e_hull,
            stable=stable,
            on_hull=is_on_hull(e_hull),
            sun=stable and unique and novel and charge_ok,
            flags=flags,
        )
        verdict.explanation = explain(verdict, item, settings, note)
        verdicts.append(verdict)
    return verdicts


def explain(verdict: Verdict, item: Judged, settings: SUNSettings, note: str = "") -> str:
    """One line: why this structure is, or is not, S.U.N."""
    if verdict.sun:
        text = f"S.U.N.: E_hull {verdict.e_above_hull:.3f} eV/atom ({item.hull.label})"
        text += f", novel ({note})" if note else ""
    else:
        reasons = []
        if not item.usable:
            reasons.append(f"relaxation {item.relaxation}")
        elif verdict.e_above_hull is None:
            reasons.append("no E_hull")
        elif not verdict.stable:
            reasons.append(f"E_hull {verdict.e_above_hull:.3f} > {settings.stability_threshold}")
        if item.usable and not verdict.unique:
            reasons.append(f"duplicate of {verdict.duplicate_of}")
        if verdict.novelty == "known":
            reasons.append(f"known: matches {verdict.matched_reference}")
        elif verdict.novelty == "unverified" and not verdict.novel:
            reasons.append(
                f"unverified: {verdict.known_composition} is a known composition whose "
                "structure the reference lacks"
            )
        if settings.require_charge_balance and not verdict.valid_composition:
            reasons.append("not charge balanced")
        text = "not S.U.N.: " + "; ".join(reasons)
    if item.hull is not None and item.hull.coverage is not None and not item.hull.coverage.complete:
        text += f" [hull: {item.hull.coverage.label(max_missing=2)}]"
    if "not_converged" in verdict.flags:
        text += " [relaxation not converged]"
    return text


def summarize(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Counts over a set (denominator for fractions: every structure)."""
    count = {
        "valid": sum(v.valid for v in verdicts),
        "valid_structure": sum(v.valid_structure for v in verdicts),
        "valid_composition": sum(v.valid_composition for v in verdicts),
        "unique": sum(v.unique for v in verdicts),
        "novel": sum(v.novel for v in verdicts),
        "known": sum(v.novelty == "known" for v in verdicts),
        "unverified": sum(v.novelty == "unverified" for v in verdicts),
        "unique_novel": sum(v.unique and v.novel for v in verdicts),
        "stable": sum(v.stable for v in verdicts),
        "on_hull": sum(v.on_hull for v in verdicts),
        "sun": sum(v.sun for v in verdicts),
        "sun_on_hull": sum(v.sun and v.on_hull for v in verdicts),
        "sun_complete_hull": sum(v.sun and "incomplete_hull" not in v.flags for v in verdicts),
        "sun_not_converged": sum(v.sun and "not_converged" in v.flags for v in verdicts),
        "not_converged": sum("not_converged" in v.flags for v in verdicts),
        "with_e_above_hull": sum(v.e_above_hull is not None for v in verdicts),
    }
    return {"n_structures": len(verdicts), **{f"n_{k}": v for k, v in count.items()}}
