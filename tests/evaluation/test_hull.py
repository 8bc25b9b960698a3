"""Convex hulls at one level of theory: against pymatgen, the shipped MP reference, MP2020."""

from __future__ import annotations

import gzip
import json
import time
import warnings

import numpy as np
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from evaluation.hull.core import (
    CompositionHullReference,
    CorrectionMismatchWarning,
    EntryHullReference,
    LevelOfTheoryMismatch,
    UnknownElementError,
    resolve_level,
)
from evaluation.hull.mp_entries import (
    MP_E_FORM_FILE,
    apply_mp2020_compatibility,
    convert_mp_e_form_csv,
    correction_scheme_of,
    entry_e_above_hull,
    mp_elemental_energies,
    mp_formation_energy_reference,
)
from evaluation.paths import reference_dir

LEVEL = "mlff:test-model"
MU = {"Li": -1.9, "Fe": -8.3, "O": -4.9}


def _total(formula: str, e_form_per_atom: float) -> PDEntry:
    """A PDEntry whose formation energy per atom (against MU) is ``e_form_per_atom``."""
    comp = Composition(formula)
    mu_total = sum(n * MU[el.symbol] for el, n in comp.items())
    return PDEntry(comp, comp.num_atoms * e_form_per_atom + mu_total, name=formula)


LI_FE_O = [
    _total("Li2O", -2.0),
    _total("Li2O2", -1.6),
    _total("LiO2", -1.0),  # unstable
    _total("FeO", -1.4),
    _total("Fe2O3", -1.7),
    _total("Fe3O4", -1.6),
    _total("LiFeO2", -1.9),
    _total("Li5FeO4", -1.95),
    _total("LiFe5O8", -1.5),  # unstable
    _total("Fe3Li", 0.1),  # unstable
]


@pytest.fixture(scope="module")
def li_fe_o() -> tuple[EntryHullReference, PhaseDiagram]:
    ours = EntryHullReference(LI_FE_O, MU, level_of_theory=LEVEL, name="toy Li-Fe-O")
    elements = [PDEntry(Composition(el), mu) for el, mu in MU.items()]
    return ours, PhaseDiagram(LI_FE_O + elements)


def test_binary_hand_computed() -> None:
    # A, B at 0; AB at -1 eV/atom; A3B at -0.3: hull at x_B = 1/4 is -0.5, so E_hull = 0.2.
    ref = CompositionHullReference(
        ["Li", "O", "LiO", "Li3O"], [0.0, 0.0, -1.0, -0.3], name="toy", level_of_theory=LEVEL
    )
    result = ref.e_above_hull("Li3O", -0.3, level_of_theory=LEVEL)
    assert result.e_above_hull == pytest.approx(0.2, abs=1e-12)
    assert result.hull_energy_per_atom == pytest.approx(-0.5)
    # pymatgen writes the reduced formula of LiO as the peroxide Li2O2
    assert result.decomposition == pytest.approx({"Li": 0.5, "Li2O2": 0.5})
    assert ref.e_above_hull("LiO", -1.0, level_of_theory=LEVEL).e_above_hull == pytest.approx(0)
    # Same toy as total energies with non-zero elemental references gives the same answer.
    mu = {"Li": -1.9, "O": -4.9}
    entries = [(Composition("LiO"), 2 * -1.0 - 1.9 - 4.9), ("Li3O", 4 * -0.3 + 3 * -1.9 - 4.9)]
    ours = EntryHullReference(entries, mu, level_of_theory=LEVEL)
    total_pa = (4 * -0.3 + 3 * -1.9 - 4.9) / 4
    result = ours.e_above_hull("Li3O", total_pa, level_of_theory=LEVEL, kind="total")
    assert result.e_above_hull == pytest.approx(0.2, abs=1e-12)
    assert result.formation_energy_per_atom == pytest.approx(-0.3)


def test_matches_pymatgen_phase_diagram(li_fe_o) -> None:
    ours, reference_pd = li_fe_o
    for entry in LI_FE_O:
        result = ours.e_above_hull(
            entry.composition, entry.energy_per_atom, level_of_theory=LEVEL, kind="total"
        )
        expected = reference_pd.get_e_above_hull(entry)
        assert result.e_above_hull == pytest.approx(expected, abs=1e-8), entry.name
        decomp = reference_pd.get_decomposition(entry.composition)
        expected_decomp = {e.composition.reduced_formula: x for e, x in decomp.items()}
        assert result.decomposition == pytest.approx(expected_decomp)
    # Points on the hull sit at 0 (formation-energy input this time).
    for formula, e_form in [("LiFeO2", -1.9), ("Fe2O3", -1.7), ("O", 0.0)]:
        on_hull = ours.e_above_hull(formula, e_form, level_of_theory=LEVEL)
        assert on_hull.e_above_hull == pytest.approx(0.0, abs=1e-10)


def test_below_hull_is_negative_and_matches_pymatgen(li_fe_o) -> None:
    ours, reference_pd = li_fe_o
    for formula, e_form in [("Li3FeO3", -2.5), ("LiFeO2", -2.1), ("Fe2O3", -1.9)]:
        comp = Composition(formula)
        total = comp.num_atoms * e_form + sum(n * MU[el.symbol] for el, n in comp.items())
        query = PDEntry(comp, total)
        _, expected = reference_pd.get_decomp_and_e_above_hull(
            query, allow_negative=True, check_stable=False
        )
        result = ours.e_above_hull(comp, e_form, level_of_theory=LEVEL)
        assert expected < 0
        assert result.e_above_hull == pytest.approx(expected, abs=1e-8)
        assert result.is_stable()


def test_single_element_and_duplicates() -> None:
    entries = [_total("Li2O", -1.8), _total("Li2O", -2.0), _total("Li4O2", -1.9)]
    ref = EntryHullReference(entries, MU, level_of_theory=LEVEL)
    assert ref.e_above_hull("Li2O", -2.0, level_of_theory=LEVEL).e_above_hull == pytest.approx(0)
    assert ref.e_above_hull("Li2O", -1.8, level_of_theory=LEVEL).e_above_hull == pytest.approx(0.2)
    assert ref.e_above_hull("Li", 0.1, level_of_theory=LEVEL).e_above_hull == pytest.approx(0.1)
    below = ref.e_above_hull("Li8", -0.05, level_of_theory=LEVEL)
    assert below.e_above_hull == pytest.approx(-0.05)
    assert below.chemsys == "Li" and below.decomposition == {"Li": 1.0}


def test_errors_name_the_problem(li_fe_o) -> None:
    ours, _ = li_fe_o
    with pytest.raises(UnknownElementError, match=f"no elemental reference for Co at {LEVEL}"):
        ours.e_above_hull("LiCoO2", -1.0, level_of_theory=LEVEL)
    with pytest.raises(UnknownElementError, match="Co"):
        EntryHullReference([("CoO", -10.0)], MU, level_of_theory=LEVEL)
    with pytest.raises(LevelOfTheoryMismatch, match="dft:gpaw-pbe") as info:
        ours.e_above_hull("LiFeO2", -1.0, level_of_theory="dft:gpaw-pbe")
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="not finite"):
        ours.e_above_hull("LiFeO2", float("nan"), level_of_theory=LEVEL)
    with pytest.raises(ValueError, match="not an element"):
        ours.phase_diagram("Li-Qq")


def test_resolve_level_aliases() -> None:
    assert resolve_level("dft:mp-gga-legacy") == ("dft:mp-gga-ggau", "mp-legacy")
    assert resolve_level("dft:mp-gga-ggau-mp2020") == ("dft:mp-gga-ggau", "mp2020")
    assert resolve_level("mlff:chgnet-0.3.0") == ("mlff:chgnet-0.3.0", "none")
    with pytest.raises(ValueError, match="implies correction"):
        resolve_level("dft:mp-gga-legacy", "mp2020")


# --- the shipped MP formation-energy reference ------------------------------------------------
@pytest.fixture(scope="module")
def mp_ref() -> CompositionHullReference:
    return mp_formation_energy_reference()


def test_shipped_file_is_compact_and_credited() -> None:
    path = reference_dir() / MP_E_FORM_FILE
    assert path.stat().st_size < 2_000_000
    with gzip.open(path, "rt") as handle:
        head = handle.read(400)
    assert "CC-BY-4.0" in head and "convert_mp_e_form_csv" in head


def test_mp_ground_state_is_on_hull(mp_ref) -> None:
    assert len(mp_ref) > 90_000 and {"Li", "O", "Fe"} <= mp_ref.elements
    result = mp_ref.e_above_hull("Li2O", -2.0715152, level_of_theory="dft:mp-gga-legacy")
    assert abs(result.e_above_hull) < 1e-6
    assert result.decomposition == pytest.approx({"Li2O": 1.0})
    assert (result.level_of_theory, result.correction) == ("dft:mp-gga-ggau", "mp-legacy")
    assert result.reference == mp_ref.name and not result.correction_mismatch
    made_up = mp_ref.e_above_hull("LiO3", 0.0, level_of_theory="dft:mp-gga-legacy")
    assert made_up.e_above_hull > 0.5
    json.dumps(made_up.to_dict())


def test_mp_reference_errors(mp_ref) -> None:
    with pytest.raises(UnknownElementError, match="no elemental reference for Xe"):
        mp_ref.e_above_hull("XeF2", -0.5, level_of_theory="dft:mp-gga-legacy")
    with pytest.raises(LevelOfTheoryMismatch):
        mp_ref.e_above_hull("Li2O", -2.0, level_of_theory="mlff:chgnet-0.3.0")
    with pytest.raises(ValueError, match="total"):  # composition-level: no total energies
        mp_ref.e_above_hull("Li2O", -5.0, level_of_theory="dft:mp-gga-legacy", kind="total")


def test_mp_ternary_hull_is_fast_and_cached(mp_ref) -> None:
    start = time.perf_counter()
    diagram = mp_ref.phase_diagram("Li-Mn-O")
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    assert mp_ref.phase_diagram(["O", "Mn", "Li"]) is diagram
    assert time.perf_counter() - start < 0.01
    result = mp_ref.e_above_hull("LiMn2O4", -1.9, level_of_theory="dft:mp-gga-legacy")
    assert result.chemsys == "Li-Mn-O"


def test_correction_mismatch_is_flagged(mp_ref) -> None:
    with pytest.warns(CorrectionMismatchWarning, match="mp2020"):
        result = mp_ref.e_above_hull("Li2O", -2.0, level_of_theory="dft:mp-gga-ggau-mp2020")
    assert result.correction_mismatch and result.correction == "mp2020"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorrectionMismatchWarning)
        mp_ref.e_above_hull("Li2O", -2.0, level_of_theory="dft:mp-gga-legacy")


def test_convert_mp_e_form_csv_keeps_lowest(tmp_path) -> None:
    source = tmp_path / "e_form.csv"
    source.write_text("formula,target\nLi2O1,-2.0\nLi4O2,-2.1\nO1,0.0\nLi1,0.0\nO1,0.3\n")
    destination = tmp_path / "out.csv.gz"
    assert convert_mp_e_form_csv(source, destination) == 3
    ref = CompositionHullReference.from_csv(destination, name="t", level_of_theory=LEVEL)
    assert ref.e_above_hull("Li2O", -2.1, level_of_theory=LEVEL).e_above_hull == pytest.approx(0)
    first = destination.read_bytes()
    convert_mp_e_form_csv(source, destination)
    assert destination.read_bytes() == first  # byte-reproducible


# --- MP-style VASP entries -------------------------------------------------------------------
def test_mp2020_entry_against_legacy_hull(mp_ref, mp_style_feo_entry) -> None:
    raw = mp_style_feo_entry(-8.3 * 8)
    assert correction_scheme_of(raw) == "none"
    (corrected,) = apply_mp2020_compatibility([raw])
    assert correction_scheme_of(corrected) == "mp2020" and corrected.correction < 0
    assert raw.correction == 0  # the input is left alone
    with pytest.warns(CorrectionMismatchWarning):
        result = entry_e_above_hull(corrected, mp_ref)
    mu = mp_elemental_energies()
    expected = (corrected.energy - 4 * mu["Fe"] - 4 * mu["O"]) / 8
    assert result.formation_energy_per_atom == pytest.approx(expected)
    assert result.correction_mismatch and result.correction == "mp2020"
    assert result.level_of_theory == "dft:mp-gga-ggau"


def test_entry_level_is_checked(mp_ref, mp_style_feo_entry) -> None:
    entry = mp_style_feo_entry(-60.0)
    entry.data["level_of_theory"] = "mlff:chgnet-0.3.0"
    with pytest.raises(LevelOfTheoryMismatch):
        entry_e_above_hull(entry, mp_ref)
    ours = EntryHullReference(
        [("FeO", -2 * 1.4 - 8.3 - 4.9)], MU, level_of_theory="mlff:chgnet-0.3.0"
    )
    result = entry_e_above_hull(entry, ours)
    assert result.e_above_hull == pytest.approx(-60.0 / 8 - (-1.4 + (-8.3 - 4.9) / 2))


def test_linear_program_hull_agrees_with_the_phase_diagram(monkeypatch):
    import evaluation.hull.core as hull_module
    from evaluation.hull.core import EntryHullReference

    rng = np.random.default_rng(3)
    elements = ["Li", "Co", "O", "Mn"]
    mu = {el: float(-rng.uniform(1, 5)) for el in elements}
    entries = []
    for _ in range(40):
        counts = rng.integers(0, 4, len(elements))
        if counts.sum() < 2 or (counts > 0).sum() < 2:
            continue
        comp = Composition({el: int(n) for el, n in zip(elements, counts, strict=True) if n})
        e_form = float(rng.uniform(-1.5, 0.3))
        total = comp.num_atoms * e_form + sum(n * mu[el.symbol] for el, n in comp.items())
        entries.append((comp, total))
    reference = EntryHullReference(entries, mu, level_of_theory="mlff:test")
    queries = ["LiCoO2", "Li2MnO3", "LiCoMnO4", "Co3O4", "LiMn2CoO5"]
    by_diagram = [
        reference.e_above_hull(q, -0.5, level_of_theory="mlff:test").e_above_hull for q in queries
    ]
    monkeypatch.setattr(hull_module, "MAX_PHASE_DIAGRAM_ELEMENTS", 1)
    by_program = [
        reference.e_above_hull(q, -0.5, level_of_theory="mlff:test").e_above_hull for q in queries
    ]
    assert by_program == pytest.approx(by_diagram, abs=1e-7)
