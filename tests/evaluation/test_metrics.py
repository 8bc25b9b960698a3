"""Specifications of the per-structure metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from evaluation.metrics.structure import (
    is_compositionally_valid,
    is_on_hull,
    is_stable,
    is_structurally_valid,
    min_interatomic_distance,
    rmsd,
)


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def four_atom_cell() -> Structure:
    return Structure(
        Lattice.cubic(4.0),
        ["Na", "Cl", "Na", "Cl"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0.5]],
    )


# --- structural validity -------------------------------------------------------------------


def test_rocksalt_shortest_distance_is_half_the_cubic_edge():
    assert min_interatomic_distance(rocksalt(5.64)) == pytest.approx(2.82)


def test_one_atom_cell_distance_is_its_shortest_lattice_vector():
    structure = Structure(Lattice.from_parameters(3, 4, 5, 90, 90, 90), ["Cu"], [[0, 0, 0]])
    assert min_interatomic_distance(structure) == pytest.approx(3.0)


def test_atoms_closer_than_half_an_angstrom_make_a_structure_invalid():
    structure = Structure(Lattice.cubic(5.0), ["Si", "Si"], [[0, 0, 0], [0.09, 0, 0]])  # 0.45 Å
    assert not is_structurally_valid(structure)
    structure = Structure(Lattice.cubic(5.0), ["Si", "Si"], [[0, 0, 0], [0.11, 0, 0]])  # 0.55 Å
    assert is_structurally_valid(structure)


def test_distance_to_a_periodic_image_counts():
    # 9.6 Å apart inside the cell, but only 0.4 Å apart through the boundary.
    structure = Structure(Lattice.cubic(10.0), ["Si", "Si"], [[0.02, 0, 0], [0.98, 0, 0]])
    assert min_interatomic_distance(structure) == pytest.approx(0.4)
    assert not is_structurally_valid(structure)


def test_tiny_volume_is_invalid():
    structure = Structure(Lattice.cubic(0.4), ["H"], [[0, 0, 0]])  # 0.064 Å^3, and 0.4 Å apart
    assert not is_structurally_valid(structure)
    assert not is_structurally_valid(structure, min_distance=0.0)


# --- compositional validity (SMACT) ------------------------------------------------------


@pytest.mark.parametrize("formula", ["NaCl", "LiCoO2", "Fe2O3", "BaTiO3", "Si", "Fe3Co", "CsPbI3"])
def test_charge_balanced_or_alloy_compositions_are_valid(formula):
    assert is_compositionally_valid(Composition(formula))


@pytest.mark.parametrize("formula", ["NaCl2", "LiO3F", "Na3O", "KBr3O"])
def test_compositions_that_cannot_balance_charge_are_invalid(formula):
    assert not is_compositionally_valid(Composition(formula))


@pytest.mark.parametrize(("formula", "valid"), [("NaClAr", True), ("Na2ClHe", False)])
def test_elements_without_smact_oxidation_states_count_as_neutral(formula, valid):
    assert is_compositionally_valid(Composition(formula)) is valid


def _brute_force_smact(symbols, counts) -> bool:
    """SMACT's own enumeration: every combination of states, then Pauling's test."""
    import itertools

    import smact
    from smact.screening import pauling_test

    if all(symbol in smact.metals for symbol in symbols):
        return True  # the alloy convention both implementations share
    elements = [smact.Element(symbol) for symbol in symbols]
    for states in itertools.product(*[e.oxidation_states or [0] for e in elements]):
        if sum(q * n for q, n in zip(states, counts, strict=True)) != 0:
            continue
        tested = [(q, e.pauling_eneg) for q, e in zip(states, elements, strict=True)]
        tested = [(q, eneg) for q, eneg in tested if eneg is not None]
        if not tested or pauling_test([q for q, _ in tested], [eneg for _, eneg in tested]):
            return True
    return False


def test_charge_balance_by_thresholds_agrees_with_smacts_enumeration():
    from evaluation.metrics.structure import _smact_valid_reduced

    pool = ["Li", "Na", "Mg", "Fe", "Co", "Mn", "Ti", "Ar", "H", "C", "N", "O", "F", "S", "P", "Cl"]
    rng = np.random.default_rng(7)
    for _ in range(300):
        size = int(rng.integers(2, 5))
        symbols = tuple(sorted(rng.choice(pool, size, replace=False).tolist()))
        counts = tuple(int(c) for c in rng.integers(1, 5, size))
        expected = _brute_force_smact(symbols, counts)
        assert _smact_valid_reduced(symbols, counts) is expected, (symbols, counts)


def test_many_element_compositions_are_judged_quickly():
    import time

    started = time.perf_counter()
    formula = "RbAcCe2GdTlVCdGa2FeNiMoPPtPbAu2CO"  # 17 elements: ~10^11 state combinations
    is_compositionally_valid(Composition(formula))
    assert time.perf_counter() - started < 2.0


def test_composition_validity_uses_the_reduced_formula():
    assert is_compositionally_valid(Composition("Na4Cl4"))


# --- stability thresholds ------------------------------------------------------------------


def test_stable_means_at_most_the_threshold():
    assert is_stable(0.099)
    assert is_stable(0.1)  # MatterGen counts E_hull <= 0.1
    assert not is_stable(0.1000001)
    assert is_stable(-0.05)
    assert not is_stable(None)
    assert not is_stable(float("nan"))


def test_on_hull_means_at_or_below_zero():
    assert is_on_hull(0.0)
    assert is_on_hull(-0.01)
    assert not is_on_hull(1e-4)
    assert not is_on_hull(None)


# --- RMSD (Eq. D47) ------------------------------------------------------------------------


def test_rmsd_of_a_structure_with_itself_is_zero():
    assert rmsd(rocksalt(), rocksalt()) == pytest.approx(0.0, abs=1e-12)


def test_rmsd_of_one_displaced_atom_out_of_four_matches_hand_value():
    # One atom moves by d; after removing the rigid shift d/4 the displacements are
    # 3d/4 (once) and d/4 (three times): rms = d * sqrt((9 + 3) / 16 / 4) = d * sqrt(3) / 4.
    generated = four_atom_cell()
    relaxed = generated.copy()
    relaxed.translate_sites([0], [0.1 / 4.0, 0, 0])  # 0.1 Å along a
    assert rmsd(generated, relaxed) == pytest.approx(0.1 * math.sqrt(3) / 4)


def test_rmsd_ignores_a_rigid_translation():
    generated = four_atom_cell()
    shifted = generated.copy()
    shifted.translate_sites(list(range(4)), [0.3, 0.2, 0.1])
    assert rmsd(generated, shifted) == pytest.approx(0.0, abs=1e-9)


def test_rmsd_minimises_over_permutations_of_the_same_element():
    generated = four_atom_cell()
    permuted = Structure(
        generated.lattice,
        ["Na", "Na", "Cl", "Cl"],
        [[0.5, 0, 0], [0, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.5]],
    )
    assert rmsd(generated, permuted) == pytest.approx(0.0, abs=1e-12)


def test_rmsd_never_swaps_different_elements():
    # Swapping Na and Cl labels would be free under any permutation; element-aware is not.
    generated = four_atom_cell()
    swapped = Structure(generated.lattice, ["Cl", "Na", "Cl", "Na"], generated.frac_coords)
    assert rmsd(generated, swapped) > 1.0


def test_rmsd_uses_minimum_image_across_the_cell_boundary():
    generated = Structure(Lattice.cubic(10.0), ["Si", "C"], [[0.99, 0, 0], [0.5, 0.5, 0.5]])
    relaxed = Structure(Lattice.cubic(10.0), ["Si", "C"], [[0.01, 0, 0], [0.5, 0.5, 0.5]])
    # 0.2 Å across the boundary, shared between two atoms after removing the rigid shift.
    assert rmsd(generated, relaxed) == pytest.approx(0.1)


def test_rmsd_of_a_uniform_strain_is_measured_in_the_average_cell():
    generated = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    relaxed = Structure(Lattice.cubic(4.2), ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert rmsd(generated, relaxed) == pytest.approx(0.0, abs=1e-12)


def test_rmsd_refuses_different_compositions():
    with pytest.raises(ValueError, match="same atoms"):
        rmsd(rocksalt(), Structure(Lattice.cubic(4), ["Na"], [[0, 0, 0]]))


def test_rmsd_is_invariant_to_the_order_of_sites():
    rng = np.random.default_rng(0)
    generated = four_atom_cell()
    relaxed = generated.copy()
    relaxed.perturb(0.1, min_distance=0.05)
    order = rng.permutation(len(relaxed))
    reordered = Structure(
        relaxed.lattice, [relaxed[i].specie for i in order], relaxed.frac_coords[order]
    )
    assert rmsd(generated, reordered) == pytest.approx(rmsd(generated, relaxed))
