"""One S.U.N.: what valid, unique, novel, stable and S.U.N. mean, for campaigns and evaluate."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from evaluation.hull.core import HullResult
from evaluation.hull.known_phases import known_phases
from evaluation.matching.index import ReferenceIndex
from evaluation.metrics.sun import Judged, SUNSettings, judge, summarize
from evaluation.records import CrystalRecord
from evaluation.reference import load_reference

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def antifluorite_li2o() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.63), ["O", "Li"], [[0, 0, 0], [0.25, 0.25, 0.25]]
    )


def r3m_licoo2() -> Structure:
    """The layered cathode LiCoO2 (R-3m, mp-22526)."""
    return Structure.from_spacegroup(
        "R-3m",
        Lattice.hexagonal(2.82, 14.05),
        ["Li", "Co", "O"],
        [[0, 0, 0.5], [0, 0, 0], [0, 0, 0.2604]],
    )


def hull_at(formula: str, e_above_hull: float, present: set[str]) -> HullResult:
    """A hull result for ``formula`` on a reference holding the compositions ``present``."""
    from pymatgen.core import Composition

    elements = [el.symbol for el in Composition(formula)]
    return HullResult(
        formula=formula,
        chemsys="-".join(sorted(elements)),
        e_above_hull=e_above_hull,
        formation_energy_per_atom=-2.0 + e_above_hull,
        hull_energy_per_atom=-2.0,
        decomposition={formula: 1.0},
        reference="test hull",
        level_of_theory="mlff:chgnet-0.3.0",
        correction="mp2020",
        reference_correction="mp2020",
        reference_level="dft:mp-gga-ggau (mp2020)",
        coverage=known_phases().coverage(elements, present),
    )


@pytest.fixture(scope="module")
def shipped_index() -> ReferenceIndex:
    return ReferenceIndex.build(load_reference().records)


def empty_index(tmp_path, settings: SUNSettings | None = None) -> ReferenceIndex:
    copper = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    matcher = (settings or SUNSettings()).matcher_settings()
    return ReferenceIndex.build([CrystalRecord(copper, "cu", "ref")], matcher, cache=tmp_path)


def test_antifluorite_li2o_and_layered_licoo2_are_never_novel_against_the_shipped_set(
    shipped_index,
):
    items = [
        Judged(
            "Li2O",
            antifluorite_li2o(),
            antifluorite_li2o(),
            "ok",
            hull_at("Li2O", 0.0, {"Li2O", "Li2O2"}),
        ),
        Judged(
            "LiCoO2", r3m_licoo2(), r3m_licoo2(), "ok", hull_at("LiCoO2", 0.0, {"LiCoO2", "Li2O"})
        ),
    ]
    verdicts = judge(items, shipped_index, SUNSettings(), reference_complete=False)
    for verdict in verdicts:
        assert verdict.novelty == "unverified" and not verdict.novel and not verdict.sun
        assert verdict.stable  # stable, unique ... but not a discovery
    assert verdicts[0].known_composition == "Li2O (mp-1960)"
    assert verdicts[1].known_composition.startswith("LiCoO2 (mp-")
    assert "unverified: Li2O (mp-1960) is a known composition" in verdicts[0].explanation
    counted = judge(
        items, shipped_index, SUNSettings(count_unverified=True), reference_complete=False
    )
    assert all(v.sun for v in counted)


def test_a_li2o_polymorph_is_sun_only_when_it_lies_below_the_known_li2o(tmp_path):
    index = empty_index(tmp_path)
    settings = SUNSettings()

    def verdict(e_above_hull: float, present: set[str]):
        item = Judged(
            "x",
            antifluorite_li2o(),
            antifluorite_li2o(),
            "ok",
            hull_at("Li2O", e_above_hull, present),
        )
        return judge([item], index, settings, reference_complete=False)[0]

    near = verdict(0.05, {"Li2O", "Li2O2"})
    assert near.stable and near.novelty == "unverified" and not near.sun
    below = verdict(-0.15, {"Li2O", "Li2O2"})
    assert below.novelty == "novel" and below.sun
    assert "below the hull holding Li2O (mp-1960)" in below.explanation
    # far below a hull that lacks the known Li2O proves nothing: still unverified
    blind = verdict(-0.15, {"Li2O2"})
    assert blind.novelty == "unverified" and not blind.sun
    assert "incomplete_hull" in blind.flags


def test_a_users_reference_counts_as_complete_and_a_known_composition_is_then_novel(tmp_path):
    item = Judged(
        "x", antifluorite_li2o(), antifluorite_li2o(), "ok", hull_at("Li2O", 0.0, {"Li2O", "Li2O2"})
    )
    (verdict,) = judge([item], empty_index(tmp_path), SUNSettings(), reference_complete=True)
    assert verdict.novelty == "novel" and verdict.sun
    assert SUNSettings().complete_reference(user_reference=True) is True
    assert SUNSettings().complete_reference(user_reference=False) is False
    assert SUNSettings(reference_complete=False).complete_reference(user_reference=True) is False


def test_stable_means_e_hull_at_most_the_threshold_as_mattergen_counts(tmp_path):
    structure = Structure(Lattice.cubic(2.9), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    items = [
        Judged(f"x{i}", structure, structure, "ok", hull_at("CsCl", e, set()))
        for i, e in enumerate((0.1, 0.1000001))
    ]
    verdicts = judge(items, empty_index(tmp_path), SUNSettings(), reference_complete=True)
    assert verdicts[0].stable and not verdicts[1].stable
    assert verdicts[0].on_hull is False


def test_validity_includes_charge_balance_and_can_gate_sun(tmp_path):
    li13coo = Structure(
        Lattice.cubic(7.0),
        ["Li"] * 13 + ["Co", "O"],
        [[i / 15, (i * 7 % 15) / 15, (i * 4 % 15) / 15] for i in range(15)],
    )
    item = Judged("x", li13coo, li13coo, "ok", hull_at("Li13CoO", 0.0, set()))
    (verdict,) = judge([item], empty_index(tmp_path), SUNSettings(), reference_complete=True)
    assert verdict.valid_structure and not verdict.valid_composition and not verdict.valid
    assert verdict.sun  # the paper's S.U.N. does not ask for charge balance ...
    (strict,) = judge(
        [item],
        empty_index(tmp_path),
        SUNSettings(require_charge_balance=True),
        reference_complete=True,
    )
    assert not strict.sun and "not charge balanced" in strict.explanation  # ... unless asked


def test_a_failed_relaxation_is_neither_unique_nor_stable_and_shadows_nothing(tmp_path):
    structure = antifluorite_li2o()
    items = [
        Judged("failed", structure, structure, "exploded", hull_at("Li2O", 0.0, set())),
        Judged("later", structure, structure, "ok", hull_at("Li2O", 0.0, set())),
        Judged("again", structure, structure, "not_converged", hull_at("Li2O", 0.0, set())),
    ]
    failed, later, again = judge(
        items, empty_index(tmp_path), SUNSettings(), reference_complete=True
    )
    assert not failed.unique and not failed.stable and failed.e_above_hull is None
    assert later.unique and later.sun
    assert not again.unique and again.duplicate_of == "later" and "not_converged" in again.flags
    counts = summarize([failed, later, again])
    assert counts["n_structures"] == 3 and counts["n_sun"] == 1 and counts["n_not_converged"] == 1


def test_uniqueness_honours_the_ordered_disordered_matcher(tmp_path):
    """Two orderings of fcc Cu3Au (L1_2 and an eight-site superstructure): different
    structures to the plain matcher, approximants of one solid solution to the disorder one."""
    l12 = Structure(
        Lattice.cubic(3.75),
        ["Au", "Cu", "Cu", "Cu"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    other = l12.copy()
    other.make_supercell([2, 1, 1])
    au, cu = other.indices_from_symbol("Au")[1], other.indices_from_symbol("Cu")[0]
    other.replace(au, "Cu")
    other.replace(cu, "Au")
    items = [Judged("a", l12, l12), Judged("b", other, other)]
    plain = judge(items, empty_index(tmp_path), SUNSettings(), reference_complete=True)
    assert [v.unique for v in plain] == [True, True]
    settings = SUNSettings(disorder=True)
    with pytest.raises(ValueError, match="novelty index was built with"):
        judge(items, empty_index(tmp_path), settings, reference_complete=True)
    disordered = judge(items, empty_index(tmp_path, settings), settings, reference_complete=True)
    assert [v.unique for v in disordered] == [True, False] and disordered[1].duplicate_of == "a"
