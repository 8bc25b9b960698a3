"""Chemistry profiles of crystal sets: the numbers the model benchmarks compare."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from evaluation.metrics.chemistry import compare, describe, has_oxidation_guess, total_variation

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def rocksalt() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def scrambled() -> Structure:
    """Six elements, no symmetry, two atoms 0.3 Å apart."""
    species = ["Li", "Fe", "Co", "Ni", "Cu", "Zn"]
    coords = [[0.1, 0.2, 0.3], [0.13, 0.2, 0.3], [0.6, 0.7, 0.2], [0.35, 0.8, 0.55],
              [0.8, 0.15, 0.72], [0.45, 0.45, 0.9]]  # fmt: skip
    return Structure(Lattice.from_parameters(9.0, 10.0, 11.0, 80, 85, 95), species, coords)


def test_a_profile_counts_elements_symmetry_oxidation_states_and_distances():
    profile = describe([rocksalt().get_primitive_structure(), scrambled()])
    assert profile["n"] == 2
    assert profile["mean_elements_per_cell"] == pytest.approx((2 + 6) / 2)
    assert profile["share_at_most_4_elements"] == pytest.approx(0.5)
    assert profile["space_groups"] == {"225": 0.5, "1": 0.5}
    assert profile["p1_fraction"] == pytest.approx(0.5)
    assert profile["share_min_distance_ok"] == pytest.approx(0.5)  # 0.3 Å is too close
    assert profile["stoichiometry"] == {"AB": 0.5, "ABCDEF": 0.5}
    assert profile["share_oxidation_guess"] == pytest.approx(0.5)


def test_oxidation_guesses_of_ionic_and_many_element_compositions():
    assert has_oxidation_guess(rocksalt().composition)
    assert not has_oxidation_guess(scrambled().composition)  # 6 transition metals and Li


def test_total_variation_is_half_the_l1_distance():
    assert total_variation({"a": 1.0}, {"a": 1.0}) == 0.0
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 0.75, "c": 0.25}) == pytest.approx(0.5)
    same = describe([rocksalt()])
    assert set(compare(same, same).values()) == {0.0}
