"""What counts as a match: settings, bucket keys and exact comparison of prepared structures.

:mod:`evaluation.matching.index` builds uniqueness and novelty on top of this. The point of
:class:`PairFitter` is that everything ``StructureMatcher.fit`` recomputes per structure for every
pair — removing oxidation states, the Niggli + primitive reduction, the composition hash — is done
once per structure (:class:`PreparedStructure`), and pairs are then compared with the same verdict
``fit`` gives, bit for bit. In disorder mode the verdict is
:meth:`~evaluation.matching.disorder.DisorderAwareMatcher.fit`'s, and a
query also keeps the structure it
was prepared from, since its disordered counterpart is built from the unreduced structure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from pymatgen.core import Structure
from pymatgen.core.structure_matcher import ElementComparator, StructureMatcher

from evaluation.matching.disorder import DisorderAwareMatcher, reduce_like_matcher


@dataclass(frozen=True)
class MatcherSettings:
    """When two crystals count as the same (paper, Supplementary D.3.1 and D.4).

    Attributes
    ----------
    ltol, stol, angle_tol, primitive_cell, scale, attempt_supercell, allow_subset
        pymatgen ``StructureMatcher`` arguments; the defaults are the paper's. ``allow_subset``
        must stay ``False`` (a subset match crosses formulas, which bucketing forbids).
    disorder
        Use the ordered–disordered matcher
        (:class:`evaluation.matching.disorder.DisorderAwareMatcher`).
    composition_atol, composition_rtol, radius_tolerance, electronegativity_tolerance
        Tolerances of the ordered–disordered matcher (used only with ``disorder``).
    """

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    primitive_cell: bool = True
    scale: bool = True
    attempt_supercell: bool = False
    allow_subset: bool = False
    disorder: bool = False
    composition_atol: float = 1e-2
    composition_rtol: float = 1e-1
    radius_tolerance: float = 0.3
    electronegativity_tolerance: float = 1.0

    def __post_init__(self) -> None:
        for name in ("ltol", "stol", "angle_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MatcherSettings.{name} must be > 0, got {getattr(self, name)}")
        if self.allow_subset:
            raise ValueError(
                "MatcherSettings.allow_subset must be False: subset matches cross formulas, "
                "which formula bucketing cannot see"
            )


def make_matcher(settings: MatcherSettings | None = None) -> StructureMatcher:
    """The plain ``StructureMatcher`` these settings describe (``ElementComparator``)."""
    s = settings or MatcherSettings()
    return StructureMatcher(
        ltol=s.ltol,
        stol=s.stol,
        angle_tol=s.angle_tol,
        primitive_cell=s.primitive_cell,
        scale=s.scale,
        attempt_supercell=s.attempt_supercell,
        allow_subset=s.allow_subset,
        comparator=ElementComparator(),
    )


def make_disorder_matcher(settings: MatcherSettings | None = None) -> DisorderAwareMatcher:
    """The ordered–disordered matcher these settings describe (whatever ``settings.disorder``)."""
    s = settings or MatcherSettings()
    return DisorderAwareMatcher(
        ltol=s.ltol,
        stol=s.stol,
        angle_tol=s.angle_tol,
        primitive_cell=s.primitive_cell,
        scale=s.scale,
        composition_atol=s.composition_atol,
        composition_rtol=s.composition_rtol,
        radius_tolerance=s.radius_tolerance,
        electronegativity_tolerance=s.electronegativity_tolerance,
    )


def bucket_key(structure: Structure, disorder: bool = False) -> str:
    """The bucket a structure is compared within.

    Ordered structures: the reduced formula (``LiCoO2``). Partially occupied ones: ``~`` and the
    fractional composition to 6 decimals, because ``Fe0.5Co0.5`` and ``FeCo`` are different
    reduced formulas for the same fractional composition (an ordered structure can never match a
    disordered one under ``ElementComparator``, so the two families need no shared bucket).
    With ``disorder``: the chemical system (``Co-Fe``).
    """
    composition = structure.composition.element_composition
    if disorder:
        return composition.chemical_system
    if structure.is_ordered:
        with warnings.catch_warnings():
            # formulas sort by electronegativity; pymatgen warns for noble gases without one
            warnings.simplefilter("ignore", UserWarning)
            return composition.reduced_formula
    fractions = composition.fractional_composition
    return "~" + "".join(f"{e}{fractions[e]:.6f}" for e in sorted(fractions, key=str))


@dataclass
class PreparedStructure:
    """A structure as the matcher sees it: no oxidation states, Niggli + primitive reduced.

    Besides the reduced structure it caches what every comparison would otherwise recompute:
    the comparator hash, the volume, the sorted cell lengths and the successive minima of the
    lattice (for the exact lattice pre-check of :meth:`PairFitter.fit`).

    Attributes
    ----------
    reduced
        The reduced structure.
    unreduced
        The structure it was prepared from (no oxidation states), kept by
        :meth:`PairFitter.prepare`; ``None`` for references read back from a store, which are
        only ever compared as references (a disorder-mode *query* needs it).
    """

    reduced: Structure
    unreduced: Structure | None = field(default=None, repr=False)
    _disorder_fn: Callable[[Structure], Structure | None] | None = field(default=None, repr=False)

    @cached_property
    def disordered(self) -> Structure | None:
        """The query's reduced disordered counterpart, ``None`` if nothing in it substitutes.

        Disorder mode only: built from :attr:`unreduced`
        (:meth:`evaluation.matching.disorder.DisorderAwareMatcher.reduced_disordered`), once per
        query and only when an ordered pair needs it.
        """
        if self.unreduced is None:
            raise ValueError(
                "prepared without its unreduced structure (a stored reference): it cannot be a "
                "disorder-mode query"
            )
        if self._disorder_fn is None:
            raise ValueError("not prepared in disorder mode: no disordered counterpart")
        return self._disorder_fn(self.unreduced)

    @cached_property
    def composition_hash(self):
        # what ElementComparator.get_hash gives, compared first thing in fit()
        return self.reduced.composition.element_composition.fractional_composition

    @cached_property
    def volume(self) -> float:
        return self.reduced.volume

    @cached_property
    def sorted_lengths(self) -> np.ndarray:
        return np.sort(np.asarray(self.reduced.lattice.abc, dtype=float))

    @cached_property
    def lattice_minima(self) -> np.ndarray:
        """Successive minima λ1 ≤ λ2 ≤ λ3: lengths of the shortest independent lattice vectors.

        The three cell vectors lie within the search sphere, so the greedy pick of independent
        vectors by increasing length is exact.
        """
        lattice = self.reduced.lattice
        frac, lengths, _, _ = lattice.get_points_in_sphere(
            [[0.0, 0.0, 0.0]], [0.0, 0.0, 0.0], max(lattice.abc) * (1 + 1e-6), zip_results=False
        )
        cart = lattice.get_cartesian_coords(frac)
        chosen: list[np.ndarray] = []
        minima: list[float] = []
        for i in np.argsort(lengths, kind="stable"):
            if lengths[i] < 1e-8:
                continue
            candidate = np.array([*chosen, cart[i]])
            if np.linalg.matrix_rank(candidate, tol=1e-6 * lengths[i]) == len(candidate):
                chosen.append(cart[i])
                minima.append(float(lengths[i]))
                if len(minima) == 3:
                    break
        return np.array(minima)


class PairFitter:
    """Prepares structures once and compares prepared pairs with the verdict ``fit`` gives."""

    def __init__(self, settings: MatcherSettings) -> None:
        self.settings = settings
        self.disorder_matcher = make_disorder_matcher(settings) if settings.disorder else None
        self.matcher = make_matcher(settings)
        # Without supercells or subsets, _strict_match rejects different site counts outright.
        self.same_size_only = not settings.attempt_supercell and not settings.allow_subset

    def prepare(self, structure: Structure) -> PreparedStructure:
        """``structure`` must already be without oxidation states; it is kept (not copied) as
        :attr:`PreparedStructure.unreduced`, which a disorder-mode query needs."""
        reduced = reduce_like_matcher(structure, self.settings.primitive_cell)
        disorder_fn = self.disorder_matcher.reduced_disordered if self.disorder_matcher else None
        return PreparedStructure(reduced, structure, disorder_fn)

    def fit(self, query: PreparedStructure, reference: PreparedStructure) -> bool:
        """``make_matcher(settings).fit(query, reference)``, or the disorder matcher's verdict.

        In disorder mode ``query`` must come from :meth:`prepare` (it needs its unreduced
        structure); ``reference`` may be a stored reference.
        """
        if self.disorder_matcher is not None:
            return self.disorder_matcher.fit_reduced(
                query.reduced, reference.reduced, lambda: query.disordered
            )
        if self.same_size_only:
            if len(query.reduced) != len(reference.reduced):
                return False
            if self._lattices_cannot_map(query, reference):
                return False
        if query.composition_hash != reference.composition_hash:
            return False
        # fit() repeats the composition check above (cheap) and copies both structures; the
        # private _preprocess/_match without the copies measured only 3-7 % faster end to end
        # (benchmarks/novelty.py), not worth tracking pymatgen internals for.
        return self.matcher.fit(query.reduced, reference.reduced, skip_structure_reduction=True)

    def _lattices_cannot_map(self, query: PreparedStructure, reference: PreparedStructure) -> bool:
        """An exact necessary condition of ``Lattice.find_all_mappings``, from cached numbers.

        With equal site counts (supercell size 1) the matcher looks for three independent
        vectors of the (volume-scaled) query lattice whose lengths are each below ``1 + ltol``
        times one of the (scaled) reference cell lengths. Independent vectors are no shorter
        than the successive minima, so if the k-th minimum of the query already reaches the k-th
        smallest reference length times ``1 + ltol`` no mapping exists and the pair cannot match.
        A relative margin of 1e-6 keeps floating-point ties on the side of comparing.
        """
        ratio = (reference.volume / query.volume) ** (1 / 6) if self.settings.scale else 1.0
        bound = reference.sorted_lengths / ratio * (1 + self.settings.ltol) * (1 + 1e-6)
        return bool(np.any(query.lattice_minima * ratio >= bound))
