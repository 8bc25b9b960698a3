"""The training-set build: selection, MLFF labels, one-level hull, filter, caches."""

from __future__ import annotations

import gzip
import json
import math

import pytest
from pymatgen.core import Lattice, Structure

import model.training_set as training_set
from evaluation.hull.core import CompositionHullReference
from evaluation.hull.mlff_reference import energy_cache_path, energy_key, read_energy_cache
from evaluation.records import CrystalRecord
from model.training_set import (
    BuildSettings,
    Label,
    label_training_set,
    mp_consistency,
    select_crystals,
    source_name,
    write_build,
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(tmp_path / "cache"))


def _rocksalt(a: str, b: str, lattice: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(lattice), [a, b], [[0] * 3, [0.5] * 3])


def _cscl(a: str, b: str, lattice: float) -> Structure:
    return Structure(Lattice.cubic(lattice), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _write_cifs(folder, structures: dict[str, Structure]) -> None:
    folder.mkdir(parents=True)
    for name, structure in structures.items():
        structure.to(filename=str(folder / f"{name}.cif"))


def test_source_names_are_unique_per_data_set(tmp_path):
    assert source_name(tmp_path / "perov_5" / "val.csv") == "perov_5/val"
    assert source_name(tmp_path / "lemat" / "mp") == "lemat/mp"
    assert source_name(tmp_path / "carbon_24" / "val.csv") != source_name(
        tmp_path / "perov_5" / "val.csv"
    )


def test_selection_drops_large_unsupported_and_duplicate_crystals(tmp_path):
    big = _rocksalt("Na", "Cl", 5.6)
    big.make_supercell([2, 2, 2])  # 64 atoms
    _write_cifs(
        tmp_path / "a" / "first",
        {"nacl": _rocksalt("Na", "Cl", 5.6), "big": big, "po": _cscl("Po", "Na", 3.4)},
    )
    _write_cifs(tmp_path / "b" / "second", {"nacl-again": _rocksalt("Na", "Cl", 5.62)})
    records, counts = select_crystals(
        [tmp_path / "a" / "first", tmp_path / "b" / "second"], BuildSettings(max_atoms=20)
    )
    assert [r.label for r in records] == ["a/first:nacl"]  # the first source wins duplicates
    assert counts["read"] == {"a/first": 3, "b/second": 1}
    assert counts["dropped"] == {
        "more than 20 atoms": 1,
        "element without a reference or beyond the model's range": 1,
        "duplicate of an earlier crystal": 1,
    }


def test_mp_consistency_splits_corrected_from_uncorrected_compositions():
    records = [
        CrystalRecord(_cscl("Cu", "Au", 3.0), "1", "s"),
        CrystalRecord(_cscl("Cu", "Au", 3.1), "2", "s"),  # a higher polymorph: not compared
        CrystalRecord(_rocksalt("Na", "Cl", 5.6), "3", "s"),
    ]
    labels = {
        "s:1": Label("ok", -4.0, e_form=-0.10),
        "s:2": Label("ok", -3.9, e_form=0.05),
        "s:3": Label("ok", -3.4, e_form=-2.00),
    }
    figures = mp_consistency(records, labels, {"CuAu": -0.13, "NaCl": -2.10})
    assert figures["uncorrected"]["n_formulas"] == 1
    assert figures["uncorrected"]["mae"] == pytest.approx(0.03)
    assert figures["corrected"]["mean_signed"] == pytest.approx(0.10)  # Cl is corrected by MP


def test_mp_formation_energy_csv_keeps_sodium_nitride(tmp_path):
    table = tmp_path / "e_form.csv"
    table.write_text("formula,target\nNaN,-0.09\nNaCl,-2.1\n")
    reference = CompositionHullReference.from_csv(table, name="t", level_of_theory="dft:x")
    assert dict(reference.rows()) == {"NaN": -0.09, "NaCl": -2.1}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Four Cu-Au/Na-Cl crystals labelled with CHGNet (real relaxations, a few seconds)."""
    root = tmp_path_factory.mktemp("build")
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRYSTALFORGE_CACHE", str(cache))
        _write_cifs(
            root / "toy" / "set",
            {
                "cuau": _cscl("Cu", "Au", 3.05),
                "cuau-rocksalt": _rocksalt("Cu", "Au", 5.0),
                "nacl": _rocksalt("Na", "Cl", 5.6),
                "nacl-cscl": _cscl("Na", "Cl", 3.3),
            },
        )
        # mp_tolerance=0: a hull of the set alone (MP points would need an exact agreement)
        settings = BuildSettings(max_steps=60, fmax=0.1, e_hull_max=0.1, mp_tolerance=0.0)
        build = label_training_set([root / "toy" / "set"], root / "out", settings)
        yield build, settings, root, cache


def test_labels_are_formation_energies_against_the_mlffs_own_elements(labelled):
    build, _, _, _ = labelled
    mu = build.report["hull"]["elemental_references"]
    for record in build.records:
        label = build.labels[record.label]
        comp = record.structure.composition
        expected = label.energy_per_atom - sum(
            comp.get_atomic_fraction(el) * mu[el.symbol] for el in comp.elements
        )
        assert label.e_form == pytest.approx(expected)
    assert build.report["level_of_theory"] == "mlff:chgnet-0.3.0"


def test_hull_is_built_from_the_set_and_filters_at_the_threshold(labelled):
    build, settings, _, _ = labelled
    label = {r.id: build.labels[r.label] for r in build.records}
    assert all(v.e_hull is not None and v.e_hull >= -1e-9 for v in label.values())
    for pair in (("cuau", "cuau-rocksalt"), ("nacl", "nacl-cscl")):
        low, high = sorted(pair, key=lambda i: label[i].e_form)
        # two polymorphs of one composition: the hull is the lower one or the elements (0)
        lowest = min(label[low].e_form, 0.0)
        assert label[low].e_hull == pytest.approx(label[low].e_form - lowest, abs=1e-6)
        assert label[high].e_hull == pytest.approx(label[high].e_form - lowest, abs=1e-6)
    kept = {r.id for r in build.kept}
    assert kept == {i for i, v in label.items() if v.e_hull < settings.e_hull_max}
    assert not build.report["hull"]["mp_used"]
    counts = build.report["counts"]
    assert counts["selected"] == {"toy/set": 4}
    assert counts[f"e_hull_below_{settings.e_hull_max}"] == len(kept)


def test_rebuild_reuses_cached_labels_and_shares_them_with_hull_references(labelled, monkeypatch):
    build, settings, root, cache = labelled
    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(cache))

    def no_relaxation(*args, **kwargs):
        raise AssertionError("a cached label was recomputed")

    monkeypatch.setattr(training_set, "relax_parallel", no_relaxation)
    again = label_training_set([root / "toy" / "set"], root / "out", settings)
    assert {k: v.energy_per_atom for k, v in again.labels.items()} == {
        k: v.energy_per_atom for k, v in build.labels.items()
    }
    shared = read_energy_cache(energy_cache_path("mlff:chgnet-0.3.0"))
    for record in build.records:
        row = shared[energy_key(record.structure, settings.fmax, settings.max_steps)]
        per_atom = row["energy"] / len(record.structure)
        assert per_atom == pytest.approx(build.labels[record.label].energy_per_atom)


def test_written_build_has_one_row_per_crystal_and_the_split(labelled, tmp_path):
    build, _, _, _ = labelled
    split_of = {r.label: "train" for r in build.kept}
    write_build(build, tmp_path, split_of)
    import pandas as pd

    table = pd.read_csv(tmp_path / "labels.csv.gz", keep_default_na=False)
    assert len(table) == len(build.records)
    assert set(table.loc[table["split"] == "train", "id"]) == set(split_of)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["e_hull_max"] == 0.1
    assert all(math.isfinite(float(v)) for v in table["e_hull"] if v != "")


def test_non_finite_mlff_energy_is_a_failed_label():
    from evaluation.relax.engine import RelaxResult

    result = RelaxResult("x", "ok", energy=math.nan, energy_per_atom=math.nan)
    label = training_set._label_of(result)
    assert (label.status, label.energy_per_atom, label.ok) == ("failed", None, False)


def test_evaluate_places_mlff_energies_on_the_saved_training_set_hull(labelled, tmp_path):
    from evaluation.hull.core import EntryHullReference
    from evaluation.report.evaluate import EvaluationSettings, evaluate

    build, settings, _, cache = labelled
    write_build(build, tmp_path, {})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRYSTALFORGE_CACHE", str(cache))
        sample = CrystalRecord(_cscl("Cu", "Au", 3.05), "sample", "test")
        evaluation = evaluate(
            [sample],
            [CrystalRecord(_rocksalt("Na", "Cl", 5.6), "ref", "test")],
            EvaluationSettings(
                relax="chgnet",
                relax_fmax=settings.fmax,
                relax_steps=settings.max_steps,
                hull_reference=str(tmp_path / "hull.json.gz"),
            ),
        )
    row = evaluation.rows[0]
    with gzip.open(tmp_path / "hull.json.gz", "rt") as handle:
        reloaded = EntryHullReference.from_dict(json.load(handle))
    assert reloaded.name == build.hull.name and len(reloaded) == len(build.hull)
    expected = build.hull.e_above_hull(
        "CuAu", row.energy_per_atom, level_of_theory=row.level_of_theory, kind="total"
    )
    assert row.e_above_hull == pytest.approx(expected.e_above_hull, abs=1e-9)
    # the same crystal as the labelled CsCl CuAu: on (or within meV of) the set's hull
    assert row.e_above_hull == pytest.approx(build.labels["toy/set:cuau"].e_hull, abs=5e-3)
