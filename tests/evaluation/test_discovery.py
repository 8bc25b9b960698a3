"""The chemical-system benchmark's scoring: Table D3, the combined hull, group statistics.

Numbers are worked out by hand: a Li-O system whose reference holds Li2O, to which two methods
add LiO (below the reference hull: it becomes a vertex) and LiO2 (above the new hull).
"""

from __future__ import annotations

import math

import pytest
from pymatgen.core import Lattice, Structure

from evaluation.discovery.combined import (
    REFERENCE,
    FinalStructure,
    combined_reference,
    score_system,
)
from evaluation.discovery.report import (
    aggregate,
    markdown_groups,
    markdown_table,
    markdown_versus_paper,
    mean_interval,
    versus_paper,
)
from evaluation.discovery.systems import (
    TABLE_D3,
    benchmark_systems,
    canonical_name,
    excluded_systems,
    well_explored,
)
from evaluation.hull.core import EntryHullReference, LevelOfTheoryMismatch
from evaluation.matching.index import ReferenceIndex
from evaluation.metrics.sun import SUNSettings

LEVEL = "mlff:test-model"


# --- Table D3 -------------------------------------------------------------------------------
def test_table_d3_has_nine_systems_per_group_and_per_arity():
    assert len(TABLE_D3) == 27
    for group in ("well", "partially", "not"):
        members = [s for s in TABLE_D3 if s.exploration == group]
        assert len(members) == 9
        assert sorted(s.n_elements for s in members) == [3] * 3 + [4] * 3 + [5] * 3
    assert all(s.name == canonical_name(s.name) for s in TABLE_D3)  # alphabetical, as printed
    assert {"O-Sr-V", "Cu-Gd-O-Ru-Sr", "K-Mo-O-P-Sr"} <= {s.name for s in TABLE_D3}


def test_systems_option_takes_the_table_a_group_or_a_list_in_any_order():
    assert len(benchmark_systems("table-d3")) == 27
    assert [s.name for s in benchmark_systems("table-d3:well")] == well_explored()
    chosen = benchmark_systems("V-Sr-O, Li-Co-O")
    assert [s.name for s in chosen] == ["O-Sr-V", "Co-Li-O"]
    assert chosen[0].exploration == "well"  # Table D3's grouping follows its systems
    assert chosen[1].exploration is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("table-d3:some", "unknown group"),
        ("Xx-O", "not an element symbol"),
        ("Fe", "one element"),
        ("O-Sr-V,V-Sr-O", "named twice"),
        (" , ", "no system named"),
    ],
)
def test_bad_systems_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        benchmark_systems(spec)


def test_the_training_set_option_names_the_well_explored_element_sets():
    sets = excluded_systems("table-d3-well-explored")
    assert len(sets) == 9
    assert frozenset({"O", "Sr", "V"}) in sets
    assert excluded_systems("Mn-O-Se") == {frozenset({"Mn", "O", "Se"})}


# --- the combined hull ----------------------------------------------------------------------
def rocksalt(a: float = 4.2) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Li", "O"], [[0, 0, 0], [0.5] * 3])


def cell(species: list[str], a: float) -> Structure:
    """A simple cubic-ish cell with the given species spread apart (distances >= 1.5 Å)."""
    coords = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0]]
    return Structure(Lattice.cubic(a), species, coords[: len(species)])


def final(key: str, structure: Structure, e_form: float, level: str = LEVEL) -> FinalStructure:
    # elemental energies of the reference below are 0, so total == formation energy per atom
    return FinalStructure(key, structure, structure, e_form, level)


@pytest.fixture
def reference() -> EntryHullReference:
    return EntryHullReference(
        [("Li2O", 3 * -2.0)], {"Li": 0.0, "O": 0.0}, level_of_theory=LEVEL, name="Li-O reference"
    )


@pytest.fixture
def empty_index() -> ReferenceIndex:
    return ReferenceIndex.build([], settings=SUNSettings().matcher_settings(), cache=False)


def test_a_structure_below_the_reference_hull_becomes_a_vertex_and_moves_the_hull(
    reference, empty_index
):
    lio = final("mg/lio", rocksalt(), -1.8)  # reference hull at x_O = 1/2: -1.5 eV/atom
    lio2 = final("rss/lio2", cell(["Li", "O", "O"], 4.0), -1.0)  # new hull at 2/3: -1.2
    score = score_system(
        "Li-O",
        reference,
        {"mattergen": [lio], "rss": [lio2]},
        empty_index,
        SUNSettings(),
        reference_complete=True,
    )
    assert score.verdicts["mg/lio"]["e_above_hull"] == pytest.approx(0.0, abs=1e-9)
    assert score.verdicts["rss/lio2"]["e_above_hull"] == pytest.approx(0.2)
    mattergen, rss = score.methods["mattergen"], score.methods["rss"]
    assert (mattergen.n_sun, mattergen.n_on_hull, mattergen.sun_rate) == (1, 1, 1.0)
    assert (rss.n_stable, rss.n_sun, rss.n_on_hull, rss.sun_rate) == (0, 0, 0, 0.0)
    assert score.reference_on_hull == 1  # Li2O stays a vertex
    sources = {(p.formula, p.source) for p in score.hull_points if len(p.fractions) > 1}
    assert sources == {("Li2O", REFERENCE), ("Li2O2", "mattergen")}  # pymatgen's name of LiO
    assert score.level_of_theory == LEVEL
    # the reference's own hull: -1.5 at x_O = 1/2, -1.0 at 2/3 (Li2O to O)
    assert score.verdicts["mg/lio"]["e_above_reference_hull"] == pytest.approx(-0.3)
    assert score.verdicts["rss/lio2"]["e_above_reference_hull"] == pytest.approx(0.0, abs=1e-9)
    assert (mattergen.n_far_below, rss.n_far_below) == (1, 0)  # 0.3 below: flagged


class FixedHull:
    """A check hull that puts every energy at a fixed E_hull (its level named in the label)."""

    name = "known phases"

    def __init__(self, e_above_hull: float) -> None:
        self.value = e_above_hull

    def e_above_hull(self, structure, energy_per_atom, *, level_of_theory):
        from evaluation.hull.core import HullResult

        return HullResult(
            formula=structure.composition.reduced_formula,
            chemsys=structure.composition.chemical_system,
            e_above_hull=self.value,
            formation_energy_per_atom=0.0,
            hull_energy_per_atom=0.0,
            decomposition={},
            reference=self.name,
            level_of_theory=level_of_theory,
            correction="none",
            reference_correction="mp2020",
            reference_level="dft:test",
        )


@pytest.mark.parametrize(
    ("check", "confirmed", "suspect"), [(0.05, 1, 0), (0.3, 0, 0), (-0.15, 1, 0), (-0.5, 0, 1)]
)
def test_a_complete_check_hull_confirms_sun_and_judges_what_is_too_good(
    reference, empty_index, check, confirmed, suspect
):
    lio = final("mg/lio", rocksalt(), -1.8)  # 0.3 below the reference hull
    score = score_system(
        "Li-O",
        reference,
        {"mattergen": [lio]},
        empty_index,
        SUNSettings(),
        reference_complete=True,
        check_hull=FixedHull(check),
    )
    method = score.methods["mattergen"]
    # 0.5 eV/atom below every known phase is too good to confirm anything: flagged instead
    assert (method.n_sun, method.n_sun_known_hull, method.n_far_below) == (1, confirmed, suspect)
    assert score.check_hull == f"known phases ({LEVEL} vs dft:test)"
    assert score.verdicts["mg/lio"]["e_above_known_hull"] == check


def test_duplicates_count_once_and_are_not_sun(reference, empty_index):
    twice = [final("mg/a", rocksalt(), -1.8), final("mg/b", rocksalt(), -1.8)]
    score = score_system(
        "Li-O", reference, {"mattergen": twice}, empty_index, SUNSettings(), reference_complete=True
    )
    method = score.methods["mattergen"]
    assert (method.n_final, method.n_unique, method.n_sun, method.n_on_hull) == (2, 1, 1, 1)
    assert method.sun_rate == 0.5


def test_energies_at_another_level_never_join_the_hull(reference):
    with pytest.raises(LevelOfTheoryMismatch):
        combined_reference(reference, {"rss": [final("x", rocksalt(), -1.0, level="dft:pbe")]})


def test_structures_outside_the_system_are_refused(reference, empty_index):
    stray = final("x", Structure(Lattice.cubic(4), ["Li", "F"], [[0] * 3, [0.5] * 3]), -1.0)
    with pytest.raises(ValueError, match="outside Li-O"):
        score_system("Li-O", reference, {"rss": [stray]}, empty_index, SUNSettings())


def test_the_reference_coverage_travels_with_the_score(reference, empty_index):
    score = score_system("Li-O", reference, {"rss": []}, empty_index, SUNSettings())
    assert score.coverage["chemsys"] == "Li-O"
    assert "known hull phases" in score.coverage["label"]  # Li2O2 etc. are known: incomplete


# --- group statistics -----------------------------------------------------------------------
def test_mean_interval_is_the_student_t_interval_of_the_mean():
    stat = mean_interval([10.0, 20.0, 30.0], bounds=(-math.inf, math.inf))
    half = 4.302652729911275 * 10.0 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert stat["mean"] == pytest.approx(20.0)
    assert stat["low"] == pytest.approx(20.0 - half)
    assert stat["high"] == pytest.approx(20.0 + half)
    assert (stat["min"], stat["max"], stat["n"]) == (10.0, 30.0, 3)
    clipped = mean_interval([10.0, 20.0, 30.0], bounds=(0.0, 100.0))
    assert clipped["low"] == 0.0  # a share cannot be negative
    assert mean_interval([])["mean"] is None
    assert mean_interval([5.0])["low"] is None  # one system: no interval


def result(chemsys: str, exploration: str, rates: dict[str, tuple[int, ...]]) -> dict:
    """``rates``: per method (S.U.N., final[, S.U.N. also on the known hull (default: all)])."""
    methods = {
        m: {
            "n_final": n,
            "n_sun": k,
            "sun_rate": k / n,
            "n_on_hull": k,
            "n_sun_known_hull": confirmed[0] if confirmed else k,
        }
        for m, (k, n, *confirmed) in rates.items()
    }
    return {
        "chemsys": chemsys,
        "exploration": exploration,
        "n_elements": chemsys.count("-") + 1,
        "methods": methods,
        "reference_on_hull": 2,
        "level_of_theory": LEVEL,
        "coverage": {"label": "3/5 known hull phases"},
    }


def test_aggregate_groups_by_exploration_and_by_number_of_elements():
    results = [
        result("O-Sr-V", "well", {"mattergen": (5, 10), "rss": (1, 10)}),
        result("Mn-O-Se", "well", {"mattergen": (3, 10), "rss": (1, 10)}),
        result("Br-Pb-Rh", "not", {"mattergen": (2, 10), "rss": (0, 10)}),
    ]
    groups = aggregate(results, ["mattergen", "rss"])
    well = groups["exploration"]["well"]
    assert well["systems"] == ["O-Sr-V", "Mn-O-Se"]
    assert well["mattergen"]["sun_rate"]["mean"] == pytest.approx(40.0)
    assert well["mattergen"]["on_hull"]["total"] == 8
    assert well[REFERENCE]["on_hull"]["total"] == 4
    assert groups["n_elements"]["ternary"]["rss"]["sun_rate"]["mean"] == pytest.approx(20 / 3)
    table = markdown_table(results, ["mattergen", "rss"])
    assert table.splitlines()[0].startswith("| system | group | mattergen | rss |")
    assert "| `O-Sr-V` | well | 50 % (5/10; 5 on known hull) · 5 on hull |" in table


def test_the_paper_claim_is_checked_per_group_leader_tie_and_interval():
    results = [
        result("O-Sr-V", "well", {"mattergen": (5, 10), "rss": (1, 10)}),
        result("Mn-O-Se", "well", {"mattergen": (6, 10), "rss": (0, 10)}),
        result("Bi-Cu-Pb-S", "well", {"mattergen": (5, 10), "rss": (1, 10)}),
        result("Br-Pb-Rh", "not", {"mattergen": (2, 10), "rss": (2, 10)}),
        result("Li-Pr-Te", "not", {"mattergen": (0, 10), "rss": (4, 10)}),
    ]
    rows = {
        r["group"]: r
        for r in versus_paper(aggregate(results, ["mattergen", "rss"]), ["mattergen", "rss"])
    }
    well, unexplored, ternary = rows["well"], rows["not"], rows["ternary"]
    assert well["leaders"] == ["mattergen"] and well["mattergen_leads"]
    assert well["separated"]  # 53 % [39, 68] against 7 % [0, 21]
    assert unexplored["leaders"] == ["rss"] and not unexplored["mattergen_leads"]
    assert ternary["systems"] == 4 and not ternary["separated"]
    table = markdown_versus_paper(list(rows.values()))
    assert "| well | 3 | mattergen | yes | yes |" in table
    assert "| not | 2 | rss | no | no |" in table


def test_the_paper_claim_is_judged_again_on_the_structures_the_known_hull_confirms():
    # RSS leads on the combined hull, but its S.U.N. structures sit where the reference lacks
    # the known phases: against those, MatterGen's hold and RSS's do not.
    results = [
        result("O-Sr-V", "well", {"mattergen": (2, 4, 2), "rss": (4, 4, 0)}),
        result("Mn-O-Se", "well", {"mattergen": (1, 4, 1), "rss": (3, 4, 1)}),
    ]
    methods = ["mattergen", "rss"]
    aggregated = aggregate(results, methods)
    well = aggregated["exploration"]["well"]
    assert well["rss"]["sun_rate"]["mean"] == pytest.approx(87.5)
    assert well["rss"]["sun_known_hull_rate"]["mean"] == pytest.approx(12.5)
    assert well["mattergen"]["sun_known_hull_rate"]["mean"] == pytest.approx(37.5)
    (row,) = [r for r in versus_paper(aggregated, methods) if r["group"] == "well"]
    assert row["leaders"] == ["rss"] and not row["mattergen_leads"]
    assert row["known_hull"]["leaders"] == ["mattergen"] and row["known_hull"]["mattergen_leads"]
    assert (row["verdict"], row["known_hull"]["verdict"]) == ("no", "yes")
    assert "| well | 2 | rss | no | no | mattergen | yes | no |" in markdown_versus_paper([row])
    assert "12.5 %" in markdown_groups(aggregated, methods)


def test_systems_without_the_known_hull_check_leave_that_rate_undefined():
    unchecked = result("O-Sr-V", "well", {"mattergen": (1, 2), "rss": (1, 2)})
    for score in unchecked["methods"].values():
        score["n_sun_known_hull"] = None
    aggregated = aggregate([unchecked], ["mattergen", "rss"])
    assert aggregated["exploration"]["well"]["rss"]["sun_known_hull_rate"]["n"] == 0
    (row, _) = versus_paper(aggregated, ["mattergen", "rss"])
    assert row["known_hull"] is None
    assert "| well | 1 | mattergen, rss | tied | no | – | – | – |" in markdown_versus_paper([row])


def test_hits_per_budget_count_the_window_and_leave_outliers_and_failures_out():
    from evaluation.discovery.property import hits_by_budget

    values = [450.0, None, 2180.0, 410.0, 120.0]
    hits = hits_by_budget(values, 400.0, 600.0, [2, 4, 10])
    assert hits["2"] == {"hits": 1, "outliers": 0, "spent": 2}
    assert hits["4"] == {"hits": 2, "outliers": 1, "spent": 4}
    assert hits["10"] == {"hits": 2, "outliers": 1, "spent": 5}  # the pool ran out


def test_the_screening_predictor_learns_a_property_of_composition():
    import numpy as np

    from evaluation.discovery.property import cross_validated

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4))
    targets = 3 * features[:, 0] - features[:, 2] + rng.normal(scale=0.1, size=200)
    model, quality = cross_validated(features, targets)
    assert quality["cv_mae"] < 0.2 and quality["cv_spearman"] > 0.95
    assert np.allclose(model.predict(features[:3]), targets[:3], atol=0.4)


def test_a_fully_labelled_property_has_no_screening_arm_and_a_decimal_threshold_names_files(
    tmp_path,
):
    from pipeline.benchmarks.property import write_property_report

    hits = {str(b): {"hits": 0, "outliers": 0, "spent": min(b, 27)} for b in (20, 60)}
    document = {
        "property": "magnetic_density",
        "threshold": 0.2,
        "budgets": [20, 60],
        "level_of_theory": "mlff:chgnet-0.3.0",
        "protocol": "protocol",
        "methods": {
            "mattergen": {"hits": hits, "n_samples": 128, "n_sun": 27, "checkpoint": "m.pt",
                          "hull": "h"},
            "screening": {"hits": {b: {"hits": 0, "outliers": 0, "spent": 0} for b in hits},
                          "n_pool": 0, "predictor": "ridge",
                          "quality": {"cv_mae": 0.012, "cv_spearman": 0.55}},
            "labelled data": {"hits": 1, "outliers": 0, "n_labelled": 6891},
        },
    }  # fmt: skip
    written = write_property_report(document, tmp_path)
    names = sorted(p.name for p in written)
    assert names == [f"property_magnetic_density_ge0.2.{s}" for s in ("json", "md", "png", "svg")]
    table = (tmp_path / "property_magnetic_density_ge0.2.md").read_text()
    assert "| screening | – | – |" in table and "nothing to screen" in table
    assert "| labelled data | 1 | 1 |" in table
