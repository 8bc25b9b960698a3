"""S.U.N. on the combined hull of every method of one chemical system (preprint D.4, Fig. 3).

The paper judges each method's final-stage (DFT) structures on one hull: the reference
(Alex-MP-ICSD) plus every structure any method found. Here that hull is built at one level of
theory, the final stage's: the reference compounds of the system relaxed at that level (the
campaigns' same-level ``hull reference`` job) plus every method's final-stage energies. An
energy at any other level is refused (:class:`~evaluation.hull.core.LevelOfTheoryMismatch`),
never placed.

Conventions
-----------
* E_hull of a structure is its distance to the combined hull, which includes the structure
  itself: it is >= 0, and 0 for a structure that *is* a vertex of the combined hull.
* A method's S.U.N. rate is over its final-stage structures (the paper: "we report metrics only
  with respect to those structures"): stable (combined E_hull <= the threshold), unique within
  the method, novel against the reference, with :mod:`evaluation.metrics.sun`'s verdicts.
* "On the combined hull" means E_hull <= :data:`ON_HULL_TOLERANCE` (1 meV/atom; two methods
  finding the same phase both count), counted once per unique structure of the method.
* ``n_far_below`` counts structures more than :data:`FAR_BELOW` below the most complete hull
  at hand (the check hull when given, else the reference's own): too good to take on trust,
  whatever they do to the combined hull. Below an incomplete reference's hull many honest
  structures lie far (the reference may lack the very phases they rediscover), which is why
  the check hull, complete in the known phases, is preferred for this flag.
* Every result carries the reference's coverage of the system's known hull phases: an
  incomplete reference makes every hull, and so every "stable", optimistic. Where a second,
  complete hull can take the final stage's energies (``check_hull``: the DFT hull of every
  known MP-20 near-hull phase, MLFF energies mapped to its scale and labelled so), each S.U.N.
  structure is also placed on it, and ``n_sun_known_hull`` counts those stable there too,
  but not the ones far below it (those are flagged, not confirmed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition, Structure

from evaluation.hull.core import EntryHullReference, HullResult, chemsys_elements
from evaluation.hull.stability import PlacesEnergies
from evaluation.matching.index import ReferenceIndex
from evaluation.metrics.sun import Judged, SUNSettings, judge

#: eV/atom: a structure this close to the combined hull is on it.
ON_HULL_TOLERANCE = 1e-3
#: eV/atom: a structure this far below the known phases' hull is suspect (an MLFF artefact is
#: likelier than a phase that much more stable than every known compound); flagged.
FAR_BELOW = 0.2
#: The name of the reference's points in hull counts and plots (Fig. 3c–e's "Alex-MP-ICSD").
REFERENCE = "reference"


@dataclass
class FinalStructure:
    """One method's final-stage structure of one system.

    Attributes
    ----------
    key
        Unique across the benchmark (``campaign/candidate``).
    generated, relaxed
        As generated, and after the final stage.
    energy_per_atom, level_of_theory
        The final stage's total energy (eV/atom) and its level.
    status
        The final stage's relaxation status (``ok``, ``not_converged``).
    """

    key: str
    generated: Structure
    relaxed: Structure
    energy_per_atom: float
    level_of_theory: str
    status: str = "ok"


@dataclass
class MethodScore:
    """One method's outcome in one system."""

    n_final: int = 0
    n_unique: int = 0
    n_novel: int = 0
    n_stable: int = 0
    n_sun: int = 0
    n_on_hull: int = 0
    n_sun_on_hull: int = 0
    n_sun_known_hull: int | None = None
    n_far_below: int = 0
    sun_keys: list[str] = field(default_factory=list)

    @property
    def sun_rate(self) -> float | None:
        """S.U.N. share of the final-stage structures (``None`` without any)."""
        return self.n_sun / self.n_final if self.n_final else None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "sun_rate": self.sun_rate}


@dataclass
class HullPoint:
    """A vertex of the combined hull: who found it, and where it sits."""

    formula: str
    source: str
    key: str
    fractions: dict[str, float]
    formation_energy_per_atom: float


@dataclass
class SystemScore:
    """A system's combined-hull outcome for every method."""

    chemsys: str
    level_of_theory: str
    reference_name: str
    coverage: dict[str, Any]
    methods: dict[str, MethodScore]
    reference_on_hull: int
    hull_points: list[HullPoint]
    hull_edges: list[tuple[str, str]]
    verdicts: dict[str, dict[str, Any]]
    check_hull: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "chemsys": self.chemsys,
            "level_of_theory": self.level_of_theory,
            "reference": self.reference_name,
            "coverage": self.coverage,
            "methods": {name: score.to_dict() for name, score in self.methods.items()},
            "reference_on_hull": self.reference_on_hull,
            "hull_points": [point.__dict__ for point in self.hull_points],
            "hull_edges": [list(edge) for edge in self.hull_edges],
            "verdicts": self.verdicts,
            "check_hull": self.check_hull,
        }


def combined_reference(
    reference: EntryHullReference, finals: Mapping[str, Sequence[FinalStructure]]
) -> EntryHullReference:
    """The reference's entries plus every method's final-stage energies, at the reference's
    level; entries are named ``source:key``.

    Raises
    ------
    LevelOfTheoryMismatch
        For a final-stage energy at another level than the reference's.
    """
    stored = reference.to_dict()  # total energies, as the reference was computed
    entries = [
        PDEntry(Composition(formula), total, name=f"{REFERENCE}:{name}")
        for formula, total, name in stored["entries"]
    ]
    for method, structures in finals.items():
        for final in structures:
            reference.check_level(final.level_of_theory)
            composition = final.relaxed.composition
            total = final.energy_per_atom * composition.num_atoms
            entries.append(PDEntry(composition, total, name=f"{method}:{final.key}"))
    return EntryHullReference(
        entries,
        stored["elemental_energies"],
        level_of_theory=reference.level_of_theory,
        correction=reference.correction,
        name=f"combined hull ({reference.name} + {', '.join(finals)})",
    )


def _place(
    combined: EntryHullReference, reference: EntryHullReference, final: FinalStructure
) -> HullResult:
    result = combined.e_above_hull(
        final.relaxed.composition,
        final.energy_per_atom,
        level_of_theory=final.level_of_theory,
        kind="total",
    )
    # what the caveat is about: the known phases the *reference* holds, not the candidates
    result.coverage = reference.coverage(final.relaxed.composition)
    return result


def _point_name(entry: PDEntry) -> tuple[str, str]:
    """(source, key) of a combined-hull entry (the diagram's elemental zeros: reference)."""
    source, _, key = str(entry.name).partition(":")
    return (source, key) if key else (REFERENCE, str(entry.name))


def _hull_points(
    combined: EntryHullReference, chemsys: str
) -> tuple[list[HullPoint], list[tuple[str, str]]]:
    """The combined hull's vertices and its tie lines (pairs of ``source:key``)."""
    diagram = combined.phase_diagram(chemsys)
    points = []
    for entry in diagram.stable_entries:
        source, key = _point_name(entry)
        composition = entry.composition
        points.append(
            HullPoint(
                formula=composition.reduced_formula,
                source=source,
                key=key,
                fractions={
                    el.symbol: round(composition.get_atomic_fraction(el), 6)
                    for el in composition.elements
                },
                formation_energy_per_atom=float(diagram.get_form_energy_per_atom(entry)),
            )
        )
    edges: set[tuple[str, str]] = set()
    for facet in diagram.facets:
        names = sorted(":".join(_point_name(diagram.qhull_entries[i])) for i in facet)
        edges.update((a, b) for i, a in enumerate(names) for b in names[i + 1 :])
    return sorted(points, key=lambda p: (p.source, p.formula)), sorted(edges)


def score_system(
    chemsys: str,
    reference: EntryHullReference,
    finals: Mapping[str, Sequence[FinalStructure]],
    index: ReferenceIndex,
    settings: SUNSettings,
    *,
    reference_complete: bool = False,
    check_hull: PlacesEnergies | None = None,
) -> SystemScore:
    """Every method's S.U.N. and on-hull counts on the combined hull of ``chemsys``.

    Parameters
    ----------
    reference
        The system's reference compounds and elements at the final stage's level.
    finals
        Each method's final-stage structures, in its selection order (lowest predicted E_hull
        first: uniqueness keeps the first of a kind).
    index, reference_complete
        The novelty reference and whether it holds every known structure of its compositions.
    settings
        What the verdicts mean (stability threshold, matcher, ...).
    check_hull
        A complete hull that also places the final stage's energies (labelled): it judges
        which structures are suspiciously far below the known phases (``n_far_below``), and
        the S.U.N. structures stable there but not far below are ``n_sun_known_hull``.
    """
    elements = chemsys_elements(chemsys)
    for method, structures in finals.items():
        outside = [f.key for f in structures if chemsys_elements(f.relaxed.composition) - elements]
        if outside:
            raise ValueError(f"{method} structures outside {chemsys}: {', '.join(outside[:3])}")
    combined = combined_reference(reference, finals)
    verdicts: dict[str, dict[str, Any]] = {}
    methods: dict[str, MethodScore] = {}
    check_label = None
    for method, structures in finals.items():
        score = MethodScore(n_final=len(structures), n_sun_known_hull=0 if check_hull else None)
        items = [
            Judged(f.key, f.generated, f.relaxed, f.status, _place(combined, reference, f))
            for f in structures
        ]
        judged = judge(items, index, settings, reference_complete=reference_complete)
        for final, item, verdict in zip(structures, items, judged, strict=True):
            on_hull = verdict.unique and item.hull.e_above_hull <= ON_HULL_TOLERANCE
            score.n_unique += verdict.unique
            score.n_novel += verdict.unique and verdict.novel
            score.n_stable += verdict.unique and verdict.stable
            score.n_sun += verdict.sun
            score.n_on_hull += on_hull
            score.n_sun_on_hull += verdict.sun and on_hull
            below = reference.e_above_hull(
                final.relaxed.composition,
                final.energy_per_atom,
                level_of_theory=final.level_of_theory,
                kind="total",
            ).e_above_hull
            checked = _check(check_hull, final) if check_hull else None
            if checked is not None:
                check_label = checked.label
                if verdict.sun:  # far below the known phases is suspect, not confirmed
                    score.n_sun_known_hull += checked.is_stable(settings.stability_threshold) and (
                        checked.e_above_hull >= -FAR_BELOW
                    )
            lowest = checked.e_above_hull if checked is not None else below
            score.n_far_below += lowest < -FAR_BELOW
            if verdict.sun:
                score.sun_keys.append(item.id)
            verdicts[item.id] = {
                "e_above_known_hull": checked.e_above_hull if checked else None,
                "e_above_reference_hull": below,
                "method": method,
                "formula": item.judged.composition.reduced_formula,
                "e_above_hull": item.hull.e_above_hull,
                "on_combined_hull": on_hull,
                "sun": verdict.sun,
                "novelty": verdict.novelty,
                "unique": verdict.unique,
                "verdict": verdict.explanation,
            }
        methods[method] = score
    points, edges = _hull_points(combined, chemsys)
    compounds = [p for p in points if len(p.fractions) > 1]
    return SystemScore(
        chemsys="-".join(sorted(elements)),
        level_of_theory=reference.level_of_theory,
        reference_name=reference.name,
        coverage=reference.coverage(chemsys).to_dict(),
        methods=methods,
        reference_on_hull=sum(p.source == REFERENCE for p in compounds),
        hull_points=points,
        hull_edges=edges,
        verdicts=verdicts,
        check_hull=f"{check_hull.name} ({check_label})" if check_hull and check_label else None,
    )


def _check(hull: PlacesEnergies, final: FinalStructure) -> HullResult | None:
    """E_hull on the check hull, ``None`` where it cannot place this energy."""
    try:
        return hull.e_above_hull(
            final.relaxed, final.energy_per_atom, level_of_theory=final.level_of_theory
        )
    except ValueError:  # LevelOfTheoryMismatch, UnknownEnergyScale, unknown element
        return None
