"""MLFF energies on a DFT hull: energy scales, MP2020 corrections and the E_hull arithmetic."""

from __future__ import annotations

import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Lattice, Structure

from evaluation.hull.core import MP2020_CORRECTION, MP_GGA_LEVEL, CompositionHullReference
from evaluation.hull.screening import (
    MLFFOnDFTHull,
    UnknownEnergyScale,
    energy_scale,
    known_phase_hull,
    model_energy_scale,
    mp2020_correction,
    mp_style_parameters,
)

MU = {"Li": -1.9, "O": -4.9, "Fe": -8.3}


def antifluorite_li2o() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.63), ["O", "Li"], [[0, 0, 0], [0.25, 0.25, 0.25]]
    )


def rocksalt_feo() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.3), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def test_energy_scales_say_which_mlff_predicts_mp2020_corrected_energies():
    assert energy_scale("mlff:chgnet-0.3.0") == "mp2020"
    assert energy_scale("mlff:sevennet-7net-0") == "uncorrected"
    assert energy_scale("mlff:sevennet-7net-l3i5") == "uncorrected"
    assert model_energy_scale("sevennet") == "uncorrected"
    with pytest.raises(UnknownEnergyScale, match="same-level"):
        energy_scale("mlff:matgl-M3GNet-MP-2021.2.8-PES")


def test_mp_style_parameters_follow_mps_input_set():
    assert mp_style_parameters(Composition("FeO")) == {
        "run_type": "GGA+U",
        "hubbards": {"Fe": 5.3},
    }
    assert mp_style_parameters(Composition("LiCoO2"))["hubbards"] == {"Co": 3.32}
    assert mp_style_parameters(Composition("FeS")) == {"run_type": "GGA", "hubbards": {}}


def test_mp2020_correction_of_an_oxide_of_a_u_element():
    # MP2020: oxide -0.687 eV per O, GGA/GGA+U mixing -2.256 eV per Fe
    assert mp2020_correction(rocksalt_feo()) == pytest.approx(4 * (-0.687 - 2.256), abs=1e-9)
    assert mp2020_correction(Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])) == 0.0


def test_mlff_energy_on_a_dft_hull_equals_pymatgen_on_formation_energies():
    dft = CompositionHullReference(
        ["Li2O", "Li2O2", "FeO"],
        [-2.0, -1.6, -1.4],
        name="toy DFT",
        level_of_theory=MP_GGA_LEVEL,
        correction=MP2020_CORRECTION,
    )
    hull = MLFFOnDFTHull(dft, MU)
    structure = rocksalt_feo()
    raw = -7.0  # eV/atom, an uncorrected (SevenNet-like) energy
    result = hull.e_above_hull(structure, raw, level_of_theory="mlff:sevennet-7net-0")
    e_form = raw + mp2020_correction(structure) / 8 - (MU["Fe"] + MU["O"]) / 2
    entries = [PDEntry(Composition(el), 0.0) for el in ("Fe", "O")]
    entries += [PDEntry(Composition("FeO"), -1.4 * 2)]
    query = PDEntry(Composition("FeO"), e_form * 2)
    expected = PhaseDiagram(entries).get_e_above_hull(query, allow_negative=True)
    assert result.formation_energy_per_atom == pytest.approx(e_form, abs=1e-9)
    assert result.e_above_hull == pytest.approx(expected, abs=1e-9)
    assert result.label == "mlff:sevennet-7net-0 vs dft:mp-gga-ggau (mp2020)"
    # CHGNet's energies are MP2020-corrected already: used as they are
    chgnet = hull.e_above_hull(structure, raw, level_of_theory="mlff:chgnet-0.3.0")
    assert chgnet.formation_energy_per_atom == pytest.approx(raw - (MU["Fe"] + MU["O"]) / 2)


def test_an_mlff_without_a_known_energy_scale_is_refused():
    hull = known_phase_hull()
    with pytest.raises(UnknownEnergyScale):
        hull.e_above_hull(antifluorite_li2o(), -4.8, level_of_theory="mlff:matgl-M3GNet")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_chgnet_places_antifluorite_li2o_near_the_known_li2o_on_the_shipped_hull():
    from evaluation.relax.run import relax

    (relaxed,) = relax([antifluorite_li2o()], "chgnet", 0.05, 200, progress=False)
    result = known_phase_hull().e_above_hull(
        relaxed.structure, relaxed.energy_per_atom, level_of_theory=relaxed.level_of_theory
    )
    # the known ground state itself: within the measured CHGNet screening error of 0
    assert abs(result.e_above_hull) < 0.1
    assert result.decomposition == pytest.approx({"Li2O": 1.0})
    assert result.coverage.complete  # Li-O: every known hull phase is in MP-20's set
