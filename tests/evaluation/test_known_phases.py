"""Known phases and hull coverage: what the shipped MP tables say a hull should hold."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from evaluation.hull.core import EntryHullReference
from evaluation.hull.known_phases import (
    HullCoverage,
    KnownPhases,
    build_known_phases,
    known_phases,
    on_hull_formulas,
)


def test_the_li_o_and_li_co_o_hulls_know_their_stable_oxides():
    table = known_phases()
    li_o = {phase.formula for phase in table.hull_phases(["Li", "O"])}
    assert {"Li2O", "Li2O2"} <= li_o
    li_co_o = {phase.formula for phase in table.hull_phases(["Li", "Co", "O"])}
    assert {"Li2O", "LiCoO2", "CoO", "Co3O4"} <= li_co_o
    assert table.composition("Li2O").mp_ids[0] == "mp-1960"
    assert table.composition("Li2O").label == "Li2O (mp-1960)"
    # known but on no hull: a composition MP lists above its hull
    assert table.composition("LiO3") is not None and table.composition("LiO3").on_hull == ()
    assert table.composition("Li13CoO") is None


def test_coverage_counts_present_and_missing_known_phases():
    coverage = known_phases().coverage(["Li", "O"], present={"Li2O", "LiO3"})
    assert coverage.chemsys == "Li-O"
    assert coverage.holds("Li2O") and not coverage.holds("Li2O2")
    assert "Li2O2" in coverage.missing and not coverage.complete
    assert coverage.n_present == coverage.n_known - len(coverage.missing)
    assert coverage.label().startswith(f"{coverage.n_present}/{coverage.n_known} known hull phases")
    assert "Li2O2 (mp-841)" in coverage.label()
    assert HullCoverage.from_dict(coverage.to_dict()) == coverage


def test_a_system_without_known_compounds_is_vacuously_complete():
    coverage = known_phases().coverage(["He", "Ne"], present=set())
    assert coverage.complete and coverage.n_known == 0 and coverage.fraction == 1.0


def test_every_hull_result_records_the_coverage_of_its_reference():
    mu = {"Li": -1.9, "O": -4.9}
    hull = EntryHullReference(
        [PDEntry(Composition("Li2O"), 3 * -2.0 + 2 * -1.9 - 4.9)], mu, level_of_theory="mlff:x"
    )
    result = hull.e_above_hull("LiO2", -4.0, level_of_theory="mlff:x", kind="total")
    assert result.coverage.chemsys == "Li-O"
    assert result.coverage.holds("Li2O") and "Li2O2" in result.coverage.missing


def _reference_on_hull(energies: dict[str, float]) -> set[str]:
    """Compounds on the hull of each system by one pymatgen PhaseDiagram per system."""
    systems: dict[frozenset, list[str]] = {}
    for formula in energies:
        systems.setdefault(frozenset(Composition(formula).chemical_system.split("-")), []).append(
            formula
        )
    stable = set()
    for system, formulas in systems.items():
        if len(system) < 2:
            continue
        entries = [PDEntry(Composition(el), 0.0) for el in system]
        for formula, energy in energies.items():
            if frozenset(Composition(formula).chemical_system.split("-")) <= system:
                composition = Composition(formula)
                entries.append(PDEntry(composition, energy * composition.num_atoms, name=formula))
        diagram = PhaseDiagram(entries)
        for entry in entries:
            if entry.name in formulas and diagram.get_e_above_hull(entry) <= 1e-3:
                stable.add(entry.name)
    return stable


def test_on_hull_formulas_agrees_with_one_phase_diagram_per_system():
    rng = np.random.default_rng(7)
    elements = ["Li", "Co", "O", "Fe"]
    energies = {}
    for size in (2, 3, 4):
        for system in itertools.combinations(elements, size):
            for _ in range(4):
                counts = rng.integers(1, 5, size=size)
                formula = Composition(dict(zip(system, counts.tolist(), strict=True)))
                energies[formula.reduced_formula] = float(rng.uniform(-2.0, 0.2))
    chemsys = {f: Composition(f).chemical_system for f in energies}
    assert on_hull_formulas(energies, chemsys) == _reference_on_hull(energies)


def test_on_hull_formulas_solves_many_element_systems_by_linear_programs():
    elements = ["Li", "Na", "K", "Mg", "Ca", "Al", "O"]  # 7 elements: the LP branch
    energies = {"Li2O": -2.0, "Na2O": -1.4, "MgO": -3.0, "LiNaKMgCaAlO5": -2.6}
    energies["LiNaKMgCaAlO6"] = -1.0  # far above the others' mixture
    chemsys = {f: Composition(f).chemical_system for f in energies}
    on_hull = on_hull_formulas(energies, chemsys)
    assert {"Li2O", "Na2O", "MgO"} <= on_hull
    # the 7-element compound: on the hull iff below the mix of known phases at its composition
    assert ("LiNaKMgCaAlO5" in on_hull) == (
        "LiNaKMgCaAlO5" in _reference_on_hull({f: energies[f] for f in energies})
    )
    assert "LiNaKMgCaAlO6" not in on_hull
    assert set(Composition("LiNaKMgCaAlO6").chemical_system.split("-")) == set(elements)


@pytest.fixture
def shared_reference(tmp_path):
    """A miniature of ../shared/data/reference in its published formats."""
    root = tmp_path / "shared"
    (root / "mp_e_hull").mkdir(parents=True)
    (root / "mp20_hulls").mkdir()
    pd.DataFrame(
        {
            "formula": ["Li2O", "Li4O2", "Li2O2", "LiO3", "NaN", "Co3O4", "CoO"],
            "target": [-2.07, -2.0, -1.65, -0.5, 0.2, -1.42, -1.33],
        }
    ).to_csv(root / "mp_e_form.csv", index=False)
    pd.DataFrame({"formula": ["Li2O", "LiO3"], "target": [0.0, 0.2]}).to_csv(
        root / "mp_e_hull" / "train.csv", index=False
    )
    pd.DataFrame(
        {
            "material_id": ["mp-1960", "mp-841", "mp-18748"],
            "pretty_formula": ["Li2O", "Li2O2", "Co3O4"],
            "species_at_sites": [["Li", "Li", "O"], ["Li"] * 4 + ["O"] * 4, ["Co"] * 6 + ["O"] * 8],
            "formation_energy_per_atom": [-2.06, -1.65, -1.30],
            "band_gap": [5.0, 2.0, 0.5],
        }
    ).to_parquet(root / "mp20_hulls" / "ensemble_above_hull_dataset.parquet")
    return root


def test_build_known_phases_writes_reproducible_tables_from_the_shared_formats(
    shared_reference, tmp_path
):
    counts = build_known_phases(shared_reference, tmp_path / "a")
    build_known_phases(shared_reference, tmp_path / "b")
    for name in ("known_phases.csv.gz", "mp20_near_hull.csv.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    table = KnownPhases.read(tmp_path / "a" / "known_phases.csv.gz")
    assert counts["known_compositions"] == len(table) == 6  # Li4O2 is Li2O; NaN is sodium nitride
    assert table.composition("NaN") is not None
    assert table.composition("Li2O").on_hull == ("legacy", "mp_e_hull")
    assert table.composition("Li2O").mp_ids == ("mp-1960",)
    assert table.composition("LiO3").on_hull == ()  # above the hull in both complete sources
    assert {p.formula for p in table.hull_phases(["Co", "Li", "O"])} == {
        "Li2O",
        "Li2O2",
        "Co3O4",
        "CoO",
    }
    with gzip.open(tmp_path / "a" / "mp20_near_hull.csv.gz", "rt") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    assert lines[0].strip() == "material_id,formula,chemsys,n_sites,e_form,band_gap"
    assert len(lines) == 4 and "mp-18748,Co3O4,Co-O,14,-1.300000" in lines[1]
