"""The ordered–disordered structure matcher (published paper, Supplementary D.4).

A generated crystal is always ordered: one element per site. Many known materials are not: the
ICSD lists solid solutions whose sites hold several elements with partial occupancies. An
ordered structure that merely picks one decoration of such a disordered parent is an *ordered
approximation* of a known material and should not count as novel. The plain ``StructureMatcher``
cannot see this (it compares site species exactly), so this module adds:

1. **Substitutability** (a modified Hume-Rothery rule): two elements can replace each other when
   their atomic radii differ by at most 30 % of their mean and their Pauling electronegativities
   by at most 1.0.
2. **Substitution groups**: within one structure, the connected components of the
   "substitutable" relation among its elements.
3. **Disordering**: every site holding an element of a group gets the group's composition as
   partial occupancies (scaled by how much of the site the group held), i.e. the most disordered
   structure the ordered one could be an approximation of.
4. :class:`DisorderAwareMatcher`: ordered pairs first try the plain fit; failing that, the
   disordered query is compared with pymatgen's ``OrderDisorderElementComparator`` (a site matches
   when one element set contains the other), with supercells and subsets allowed, provided the
   fractional compositions agree within tolerance.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable
from functools import cache

from pymatgen.core import Composition, Element, Structure
from pymatgen.core.structure_matcher import (
    ElementComparator,
    OrderDisorderElementComparator,
    StructureMatcher,
)

#: Largest relative atomic-radius difference ``|r1 - r2| / mean(r1, r2)`` of substitutable elements.
RADIUS_TOLERANCE = 0.3
#: Largest Pauling electronegativity difference of substitutable elements.
ELECTRONEGATIVITY_TOLERANCE = 1.0


@cache
def _radius_and_electronegativity(symbol: str) -> tuple[float | None, float | None]:
    element = Element(symbol)
    radius = element.atomic_radius
    with warnings.catch_warnings():
        # pymatgen warns (and returns NaN) for noble gases without a Pauling value
        warnings.simplefilter("ignore")
        electronegativity = element.X
    radius_value = float(radius) if radius is not None else None
    if electronegativity is None or math.isnan(electronegativity):
        return radius_value, None
    return radius_value, float(electronegativity)


def are_substitutable(
    element1: Element | str,
    element2: Element | str,
    radius_tolerance: float = RADIUS_TOLERANCE,
    electronegativity_tolerance: float = ELECTRONEGATIVITY_TOLERANCE,
) -> bool:
    """Whether two elements may share a site (modified Hume-Rothery rule).

    Parameters
    ----------
    element1, element2
        Elements or their symbols.
    radius_tolerance
        Largest ``|r1 - r2| / mean(r1, r2)`` of the atomic radii (``Element.atomic_radius``).
    electronegativity_tolerance
        Largest ``|X1 - X2|`` of the Pauling electronegativities (``Element.X``).

    Returns
    -------
    bool
        ``True`` for the same element; ``False`` when a radius or electronegativity is unknown
        (noble gases), since the rule cannot be applied.
    """
    symbol1, symbol2 = str(Element(str(element1))), str(Element(str(element2)))
    if symbol1 == symbol2:
        return True
    radius1, x1 = _radius_and_electronegativity(symbol1)
    radius2, x2 = _radius_and_electronegativity(symbol2)
    if radius1 is None or radius2 is None or x1 is None or x2 is None:
        return False
    relative_radius_difference = abs(radius1 - radius2) / ((radius1 + radius2) / 2)
    return (
        relative_radius_difference <= radius_tolerance
        and abs(x1 - x2) <= electronegativity_tolerance
    )


def substitution_groups(
    elements: Iterable[Element | str],
    radius_tolerance: float = RADIUS_TOLERANCE,
    electronegativity_tolerance: float = ELECTRONEGATIVITY_TOLERANCE,
) -> list[frozenset[Element]]:
    """Split elements into groups of mutually substitutable ones (connected components).

    Substitutability is not transitive (A~B and B~C does not imply A~C), but a site that may hold
    A or B and a site that may hold B or C belong to one family of solid solutions, so groups are
    the connected components of the relation. Groups come sorted by their lowest atomic number.

    Returns
    -------
    list[frozenset[Element]]
        Every element appears in exactly one group; singletons are elements nothing replaces.
    """
    unique = sorted({Element(str(e)) for e in elements}, key=lambda e: e.Z)
    parent = {element: element for element in unique}

    def root(element: Element) -> Element:
        while parent[element] != element:
            element = parent[element]
        return element

    for a, b in itertools.combinations(unique, 2):
        if are_substitutable(a, b, radius_tolerance, electronegativity_tolerance):
            parent[root(b)] = root(a)
    groups: dict[Element, set[Element]] = {}
    for element in unique:
        groups.setdefault(root(element), set()).add(element)
    return sorted((frozenset(g) for g in groups.values()), key=lambda g: min(e.Z for e in g))


def disorder_structure(
    structure: Structure,
    radius_tolerance: float = RADIUS_TOLERANCE,
    electronegativity_tolerance: float = ELECTRONEGATIVITY_TOLERANCE,
) -> Structure:
    """The disordered counterpart of a structure: substitutable elements share their sites.

    Each group of mutually substitutable elements (:func:`substitution_groups`) is replaced, on
    every site that holds any of its elements, by the group's overall composition: a site with
    occupancy ``g`` of group elements gets ``g * c_e / sum(c)`` of each group element ``e``, where
    ``c`` is the group's composition in the whole structure. Overall composition, lattice and site
    positions are unchanged. Oxidation states are dropped (elements only).

    Returns
    -------
    Structure
        A new structure; equal to the input (as elements) when no two elements are substitutable.
    """
    composition = structure.composition.element_composition
    groups = [
        group
        for group in substitution_groups(
            composition.elements, radius_tolerance, electronegativity_tolerance
        )
        if len(group) > 1
    ]
    group_weights: list[dict[Element, float]] = []
    for group in groups:
        total = sum(composition[e] for e in group)
        group_weights.append({e: composition[e] / total for e in sorted(group, key=lambda e: e.Z)})

    species: list[dict[Element, float]] = []
    for site in structure:
        occupancy: dict[Element, float] = {}
        for specie, amount in site.species.element_composition.items():
            occupancy[Element(str(specie))] = occupancy.get(Element(str(specie)), 0.0) + amount
        for group, weights in zip(groups, group_weights, strict=True):
            held = sum(occupancy.pop(e) for e in group if e in occupancy)
            if held > 0:
                for element, weight in weights.items():
                    occupancy[element] = occupancy.get(element, 0.0) + held * weight
        species.append(occupancy)
    return Structure(structure.lattice, species, structure.frac_coords, charge=structure.charge)


def compositions_agree(
    composition1: Composition, composition2: Composition, atol: float = 1e-2, rtol: float = 1e-1
) -> bool:
    """Whether two fractional element compositions agree element by element.

    ``|x1 - x2| <= atol + rtol * |x2|`` for every element of either (a missing element counts 0),
    the ``numpy.isclose`` rule with ``composition2`` as the reference.
    """
    fractions1 = composition1.element_composition.fractional_composition
    fractions2 = composition2.element_composition.fractional_composition
    elements = set(fractions1.elements) | set(fractions2.elements)
    return all(
        abs(fractions1[e] - fractions2[e]) <= atol + rtol * abs(fractions2[e]) for e in elements
    )


def _element_set(structure: Structure) -> frozenset[str]:
    return frozenset(str(e) for e in structure.composition.element_composition.elements)


class DisorderAwareMatcher:
    """Match a query against a reference that may be, or be an ordering of, a solid solution.

    ``fit(query, reference)`` is ``True`` when, with ``q`` and ``r`` the query and reference
    without oxidation states, reduced the way ``StructureMatcher`` reduces them (Niggli, then
    primitive cell when ``primitive_cell``):

    0. ``q`` and ``r`` have the same element set (chemical system) — a dopant present in one
       only makes a different material, and it lets an index bucket references by chemical
       system and still give exactly this verdict;
    1. both are ordered, have the same reduced formula and the plain ordered matcher fits them
       (``ElementComparator``, no supercell, no subset); or
    2. their fractional compositions agree (:func:`compositions_agree`) and the disordered query
       (:func:`disorder_structure` of ``q``, reduced again) fits ``r`` under
       ``OrderDisorderElementComparator`` with ``attempt_supercell`` and ``allow_subset``.

    Case 2 covers a disordered reference (compared directly with the comparator) as well as an
    ordered reference that is another ordering of the same solid solution.
    """

    def __init__(
        self,
        ltol: float = 0.2,
        stol: float = 0.3,
        angle_tol: float = 5.0,
        primitive_cell: bool = True,
        scale: bool = True,
        composition_atol: float = 1e-2,
        composition_rtol: float = 1e-1,
        radius_tolerance: float = RADIUS_TOLERANCE,
        electronegativity_tolerance: float = ELECTRONEGATIVITY_TOLERANCE,
    ) -> None:
        self.primitive_cell = primitive_cell
        self.composition_atol = composition_atol
        self.composition_rtol = composition_rtol
        self.radius_tolerance = radius_tolerance
        self.electronegativity_tolerance = electronegativity_tolerance
        self.ordered_matcher = StructureMatcher(
            ltol=ltol,
            stol=stol,
            angle_tol=angle_tol,
            primitive_cell=primitive_cell,
            scale=scale,
            attempt_supercell=False,
            allow_subset=False,
            comparator=ElementComparator(),
        )
        self.disordered_matcher = StructureMatcher(
            ltol=ltol,
            stol=stol,
            angle_tol=angle_tol,
            primitive_cell=primitive_cell,
            scale=scale,
            attempt_supercell=True,
            allow_subset=True,
            comparator=OrderDisorderElementComparator(),
        )

    def reduce(self, structure: Structure) -> Structure:
        """Oxidation states removed, then reduced exactly as ``StructureMatcher.fit`` would."""
        stripped = structure.copy()
        stripped.remove_oxidation_states()
        # StructureMatcher's own (lru-cached) reduction, so skip_structure_reduction=True below
        # sees bit-for-bit the structures fit() would have built.
        return StructureMatcher._get_reduced_structure(
            Structure.from_sites(stripped), self.primitive_cell, niggli=True
        )

    def disorder_reduced(self, reduced_query: Structure) -> Structure:
        """The disordered counterpart of a reduced query, reduced again (case 2 of the class)."""
        disordered = disorder_structure(
            reduced_query, self.radius_tolerance, self.electronegativity_tolerance
        )
        return StructureMatcher._get_reduced_structure(disordered, self.primitive_cell, niggli=True)

    def fit(self, query: Structure, reference: Structure) -> bool:
        """Whether ``query`` is ``reference`` or an ordered approximation of it (see class)."""
        return self.fit_reduced(self.reduce(query), self.reduce(reference))

    def fit_reduced(
        self,
        query: Structure,
        reference: Structure,
        disordered_query: Structure | Callable[[], Structure] | None = None,
    ) -> bool:
        """:meth:`fit` on structures already passed through :meth:`reduce`.

        Parameters
        ----------
        query, reference
            Outputs of :meth:`reduce`.
        disordered_query
            ``disorder_reduced(query)``, or a callable returning it, when the caller caches it
            (it is the same for every reference the query is compared with, and only needed when
            the cheap checks pass).
        """
        if _element_set(query) != _element_set(reference):
            return False
        query_composition = query.composition.element_composition
        reference_composition = reference.composition.element_composition
        if (
            query.is_ordered
            and reference.is_ordered
            and len(query) == len(reference)  # the ordered matcher never maps different counts
            and query_composition.reduced_formula == reference_composition.reduced_formula
            and self.ordered_matcher.fit(query, reference, skip_structure_reduction=True)
        ):
            return True
        if not compositions_agree(
            query_composition, reference_composition, self.composition_atol, self.composition_rtol
        ):
            return False
        if disordered_query is None:
            disordered_query = self.disorder_reduced(query)
        elif callable(disordered_query):
            disordered_query = disordered_query()
        return self.disordered_matcher.fit(
            disordered_query, reference, skip_structure_reduction=True
        )
