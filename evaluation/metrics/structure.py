"""Per-structure metrics of the paper: validity, stability thresholds and RMSD (Eq. D47).

Names follow MatterGen's evaluation. Validity has two halves, as in CDVAE/MatterGen:

* structural: every interatomic distance (periodic images included) is at least 0.5 Å and the
  cell volume is at least 0.1 Å³;
* compositional: SMACT charge balance — some combination of the elements' common oxidation
  states is neutral for the reduced stoichiometry and passes Pauling's electronegativity test;
  single elements and all-metal compositions (alloys) count as valid.

Uniqueness and novelty live in :mod:`evaluation.matching.index`; energies above hull in
:mod:`evaluation.hull.core`.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Structure
from scipy.optimize import linear_sum_assignment

#: Paper thresholds (Section 2.2; Appendix D.3.1 of the preprint).
MIN_INTERATOMIC_DISTANCE = 0.5  # Å
MIN_CELL_VOLUME = 0.1  # Å^3
STABILITY_THRESHOLD = 0.1  # eV/atom: "stable" means E_hull <= 0.1 (MatterGen's evaluator)
STRICT_STABILITY_THRESHOLD = 0.0  # eV/atom: "on the hull" means E_hull <= 0.0


def min_interatomic_distance(structure: Structure) -> float:
    """Shortest distance between two atoms of the periodic crystal, images included (Å).

    For a one-atom cell this is the shortest lattice translation.
    """
    if len(structure) == 1:
        lattice = structure.lattice
        # The shortest vector of the Niggli-reduced lattice is the shortest translation.
        return float(min(lattice.get_niggli_reduced_lattice().abc))
    distances = structure.distance_matrix
    np.fill_diagonal(distances, np.inf)
    shortest = float(distances.min())
    # An atom can be closest to its own periodic image in a very thin cell.
    self_image = float(min(structure.lattice.get_niggli_reduced_lattice().abc))
    return min(shortest, self_image)


def is_structurally_valid(
    structure: Structure,
    min_distance: float = MIN_INTERATOMIC_DISTANCE,
    min_volume: float = MIN_CELL_VOLUME,
) -> bool:
    """All interatomic distances ≥ ``min_distance`` Å and volume ≥ ``min_volume`` Å³."""
    if not math.isfinite(structure.volume) or structure.volume < min_volume:
        return False
    return min_interatomic_distance(structure) >= min_distance


@lru_cache(maxsize=4096)
def _smact_valid_reduced(symbols: tuple[str, ...], counts: tuple[int, ...]) -> bool:
    """Whether some assignment of the elements' oxidation states is neutral and passes
    Pauling's test (every cation less electronegative than every anion).

    SMACT enumerates every combination of states, which explodes for many-element
    compositions (a 12-element sample has millions). The same question is answered exactly
    here: an assignment passes Pauling's test iff some threshold separates the cations'
    electronegativities (below) from the anions' (above). For each threshold between
    consecutive electronegativities, elements below may only take states >= 0 and elements
    above states <= 0, and whether a neutral choice exists is a subset-sum over the reachable
    total charges.
    """
    # Imported here: smact reads its data tables at import, which CLI start-up need not pay.
    import smact

    if len(symbols) == 1:
        return True
    if all(symbol in smact.metals for symbol in symbols):
        return True  # alloys are valid compositions (CDVAE/MatterGen convention)
    elements = [smact.Element(symbol) for symbol in symbols]
    # smact lists no oxidation states for He, Ne, Ar, Pm, At, Rn, Fr, Ra, Es and Fm: count them
    # as neutral (a noble gas in a crystal is); an element without an electronegativity sits
    # out the Pauling test.
    states = [tuple(element.oxidation_states or [0]) for element in elements]
    enegs = [element.pauling_eneg for element in elements]
    known = sorted({e for e in enegs if e is not None})
    thresholds = [-math.inf, *((a + b) / 2 for a, b in itertools.pairwise(known)), math.inf]
    for threshold in thresholds:
        reachable = {0}
        for element_states, eneg, count in zip(states, enegs, counts, strict=True):
            if eneg is None:
                allowed = element_states
            elif eneg < threshold:
                allowed = tuple(q for q in element_states if q >= 0)
            else:
                allowed = tuple(q for q in element_states if q <= 0)
            reachable = {total + q * count for total in reachable for q in allowed}
            if not reachable:
                break
        if 0 in reachable:
            return True
    return False


def is_compositionally_valid(composition: Composition) -> bool:
    """SMACT charge balance with Pauling's electronegativity test (see module docstring)."""
    composition = Composition(composition).element_composition
    reduced, _ = composition.get_reduced_composition_and_factor()
    symbols, counts = [], []
    for element, amount in sorted(reduced.items(), key=lambda item: item[0].Z):
        if abs(amount - round(amount)) > 1e-6:
            return False  # fractional stoichiometry (a disordered cell) cannot be charge-counted
        symbols.append(element.symbol)
        counts.append(int(round(amount)))
    return _smact_valid_reduced(tuple(symbols), tuple(counts))


def is_stable(e_above_hull: float | None, threshold: float = STABILITY_THRESHOLD) -> bool:
    """``E_hull <= threshold`` (default 0.1 eV/atom), as MatterGen's evaluator counts it;
    unknown energies are not stable."""
    return e_above_hull is not None and math.isfinite(e_above_hull) and e_above_hull <= threshold


def is_on_hull(e_above_hull: float | None, tolerance: float = STRICT_STABILITY_THRESHOLD) -> bool:
    """The strict definition: ``E_hull ≤ 0.0`` eV/atom (``tolerance`` above zero allowed)."""
    return e_above_hull is not None and math.isfinite(e_above_hull) and e_above_hull <= tolerance


def rmsd(generated: Structure, relaxed: Structure) -> float:
    """Root-mean-square displacement between a structure and its relaxed counterpart (Eq. D47).

    ``sqrt(min_P (1/N) Σ_n |x_gen[P(n)] − x_relaxed[n]|²)`` in Å, where ``P`` permutes atoms
    of the same element only. Because the two cells differ after a cell relaxation, periodic
    displacements are taken in fractional space (minimum image) and measured in the average of
    the two lattices; a rigid translation of the whole crystal (the origin of a periodic
    crystal is arbitrary) is removed. The optimal ``P`` is found per element by linear
    assignment, alternated with the translation until the assignment stops changing.

    Raises
    ------
    ValueError
        If the two structures do not have the same number of atoms of each element.
    """
    if generated.composition != relaxed.composition or len(generated) != len(relaxed):
        raise ValueError(
            f"RMSD needs the same atoms: {generated.composition.formula} vs "
            f"{relaxed.composition.formula}"
        )
    lattice = (generated.lattice.matrix + relaxed.lattice.matrix) / 2.0  # rows are vectors
    gen_frac = np.mod(generated.frac_coords, 1.0)
    rel_frac = np.mod(relaxed.frac_coords, 1.0)
    gen_species = np.array([site.specie.symbol for site in generated])
    rel_species = np.array([site.specie.symbol for site in relaxed])

    translation = np.zeros(3)  # fractional shift applied to the generated structure
    assignment = None
    for _ in range(10):
        displacement = np.empty((len(relaxed), 3))
        new_assignment = np.empty(len(relaxed), dtype=int)
        for symbol in np.unique(rel_species):
            rel_idx = np.flatnonzero(rel_species == symbol)
            gen_idx = np.flatnonzero(gen_species == symbol)
            # delta[i, j]: minimum-image displacement from generated atom j to relaxed atom i
            delta = rel_frac[rel_idx, None, :] - (gen_frac[None, gen_idx, :] + translation)
            delta -= np.round(delta)
            cost = np.sum((delta @ lattice) ** 2, axis=-1)
            rows, cols = linear_sum_assignment(cost)
            new_assignment[rel_idx[rows]] = gen_idx[cols]
            displacement[rel_idx[rows]] = delta[rows, cols]
        # The best rigid shift is the mean displacement; wrapped displacements stay consistent
        # because each is already the minimum image.
        shift = displacement.mean(axis=0)
        translation += shift
        converged = assignment is not None and np.array_equal(assignment, new_assignment)
        assignment = new_assignment
        if converged and np.allclose(shift, 0.0, atol=1e-10):
            break
    centred = (displacement - displacement.mean(axis=0)) @ lattice
    return float(np.sqrt(np.mean(np.sum(centred**2, axis=-1))))
