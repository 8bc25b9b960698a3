"""Specification of the shipped reference set (evaluation.reference, scripts/build_reference.py)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from evaluation.io.crystals import read_crystals
from evaluation.paths import PROJECT_ROOT
from evaluation.records import CrystalInputError
from evaluation.reference import (
    DEFAULT_REFERENCE,
    ELEMENT_REFERENCE_FILES,
    REFERENCE_FILE,
    build_reference_set,
    load_reference,
)

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
EXPECTED_SOURCES = {
    "perov_5",
    "carbon_24",
    "lemat/mp",
    "lemat/alexandria",
    "lemat/jarvis",
    "lemat_bulk",
    "mp-pbe-element-refs",
}


def _copy_csv_head(source: Path, target: Path, n_rows: int, extra_rows=()) -> list[list[str]]:
    with source.open(newline="") as handle:
        rows = list(csv.reader(handle))
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows[: n_rows + 1] + list(extra_rows))
    return rows[1 : n_rows + 1]


@pytest.fixture
def mini_shared(tmp_path) -> Path:
    """A miniature copy of the shared data folder: a few crystals of every source."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data folder not available")
    real, mini = SHARED_DATA / "structures", tmp_path / "shared"
    structures = mini / "structures"
    _copy_csv_head(real / "perov_5/val.csv", structures / "perov_5/val.csv", 3)
    _copy_csv_head(real / "carbon_24/val.csv", structures / "carbon_24/val.csv", 3)
    for name in ("mp", "alexandria", "jarvis"):
        folder = structures / "lemat" / name
        folder.mkdir(parents=True)
        for cif in sorted((real / "lemat" / name).glob("*.cif"))[:2]:
            shutil.copy(cif, folder)
        shutil.copy(real / "lemat" / name / "metadata.csv", folder)
    bulk_cifs = sorted((real / "lemat_bulk/seed_42").glob("*.cif"))[:3]
    for seed, cifs in (("seed_1", bulk_cifs[:2]), ("seed_2", bulk_cifs[1:])):
        (structures / "lemat_bulk" / seed).mkdir(parents=True)
        for cif in cifs:  # the middle crystal lies in both samples, as in LeMat-Bulk
            shutil.copy(
                cif, structures / "lemat_bulk" / seed / cif.name.replace("_42_", f"_{seed}_")
            )

    energies = mini / "reference"
    energies.mkdir()
    for name in ELEMENT_REFERENCE_FILES[:1] + ELEMENT_REFERENCE_FILES[2:]:
        shutil.copy(SHARED_DATA / "reference" / name, energies)
    with gzip.open(SHARED_DATA / "reference/MP-PBE-Element-Refs.json.gz", "rt") as handle:
        polymorphs = json.load(handle)
    small = {
        element: {key: values[:2] for key, values in polymorphs[element].items()}
        for element in ("Si", "Al")
    }
    with gzip.open(energies / "MP-PBE-Element-Refs.json.gz", "wt") as handle:
        json.dump(small, handle)
    # A few MP formation energies: the composition-level hull reference is built alongside.
    (energies / "mp_e_form.csv").write_text("formula,target\nSiO2,-3.0\nAl2O3,-3.4\nSiO2,-2.9\n")
    # ... and the known phases: an MP E_hull table and MP-20's near-hull phases
    (energies / "mp_e_hull").mkdir()
    (energies / "mp_e_hull" / "train.csv").write_text("formula,target\nSiO2,0.0\nAl2SiO5,0.02\n")
    (energies / "mp20_hulls").mkdir()
    pd.DataFrame(
        {
            "material_id": ["mp-6930"],
            "pretty_formula": ["SiO2"],
            "species_at_sites": [["Si", "Si", "Si", "O", "O", "O", "O", "O", "O"]],
            "formation_energy_per_atom": [-3.03],
            "band_gap": [5.7],
        }
    ).to_parquet(energies / "mp20_hulls" / "mini_above_hull_dataset.parquet")
    return mini


def test_build_writes_every_source_with_counts_and_provenance(mini_shared, tmp_path):
    manifest = build_reference_set(mini_shared, tmp_path / "out")

    assert manifest["counts"] == {
        "carbon_24": 3,
        "lemat/alexandria": 2,
        "lemat/jarvis": 2,
        "lemat/mp": 2,
        "lemat_bulk": 3,  # 4 files, one crystal in two overlapping samples
        "mp-pbe-element-refs": 4,
        "perov_5": 3,
    }
    assert manifest["n_structures"] == 19
    (dropped,) = manifest["duplicates_dropped"]
    assert dropped["source"] == "lemat_bulk"
    assert dropped["id"].replace("seed_2", "seed_1") == dropped["duplicate_of"]
    result = load_reference(tmp_path / "out" / REFERENCE_FILE)
    labels = [(r.source, r.id) for r in result.records]
    assert labels == sorted(labels)
    by_source = {}
    for record in result.records:
        by_source.setdefault(record.source, []).append(record)
    assert set(by_source) == EXPECTED_SOURCES
    assert all(r.id.startswith("mp-") for r in by_source["lemat/mp"])
    assert all(r.id.startswith("agm") for r in by_source["lemat/alexandria"])
    assert all(r.id.startswith("JVASP-") for r in by_source["lemat/jarvis"])
    assert all(r.id.startswith("structure_seed_") for r in by_source["lemat_bulk"])
    assert [r.id for r in by_source["mp-pbe-element-refs"]] == ["Al-0", "Al-1", "Si-0", "Si-1"]
    assert all("heat_all" in r.properties for r in by_source["perov_5"])
    assert all("energy_per_atom" in r.properties for r in by_source["carbon_24"])
    assert all("energy_per_atom" in r.properties for r in by_source["mp-pbe-element-refs"])
    assert all("formation_energy_per_atom" in r.properties for r in by_source["lemat/jarvis"])
    assert all("spacegroup" in r.properties for r in by_source["lemat/mp"])
    assert manifest["known_phases"]["known_compositions"] == 3  # SiO2, Al2O3, Al2SiO5
    assert {"known_phases.csv.gz", "mp20_near_hull.csv.gz"} <= set(manifest["copied_files"])


def test_build_is_byte_reproducible_and_hashes_its_output(mini_shared, tmp_path):
    first = build_reference_set(mini_shared, tmp_path / "a")
    second = build_reference_set(mini_shared, tmp_path / "b")
    for name in (REFERENCE_FILE, "SOURCES.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    data = (tmp_path / "a" / REFERENCE_FILE).read_bytes()
    assert first["sha256"] == second["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == first


def test_build_copies_elemental_energy_files_byte_for_byte(mini_shared, tmp_path):
    build_reference_set(mini_shared, tmp_path / "out")
    for name in ELEMENT_REFERENCE_FILES:
        copy = (tmp_path / "out" / name).read_bytes()
        assert copy == (mini_shared / "reference" / name).read_bytes()


def test_sources_file_credits_every_source_with_count_and_licence(mini_shared, tmp_path):
    build_reference_set(mini_shared, tmp_path / "out")
    sources = (tmp_path / "out" / "SOURCES.md").read_text()
    for source in EXPECTED_SOURCES:
        assert f"| `{source}` |" in sources
    assert "| `perov_5` | 3 |" in sources
    assert "CC-BY-4.0" in sources and "Castelli" in sources and "Pickard" in sources


def test_build_keeps_other_files_in_the_output_folder(mini_shared, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "my_notes.txt").write_bytes(b"kept")
    build_reference_set(mini_shared, tmp_path / "out")
    assert (tmp_path / "out" / "my_notes.txt").read_bytes() == b"kept"


def test_build_writes_the_composition_level_mp_reference_with_lowest_energy_per_formula(
    mini_shared, tmp_path
):
    from evaluation.hull.mp_entries import MP_E_FORM_FILE, mp_formation_energy_reference

    manifest = build_reference_set(mini_shared, tmp_path / "out")
    assert MP_E_FORM_FILE in manifest["copied_files"]
    reference = mp_formation_energy_reference(str(tmp_path / "out" / MP_E_FORM_FILE))
    result = reference.e_above_hull("SiO2", -3.0, level_of_theory="dft:mp-gga-legacy")
    assert result.e_above_hull == 0.0  # -3.0 wins over -2.9 for SiO2


def test_build_lists_skipped_rows_with_reasons(mini_shared, tmp_path):
    csv_path = mini_shared / "structures/perov_5/val.csv"
    with csv_path.open("a", newline="") as handle:
        csv.writer(handle).writerow(["9", "broken-1", "not a cif", "X", "1", "1", "0", "0"])
    manifest = build_reference_set(mini_shared, tmp_path / "out")
    assert manifest["counts"]["perov_5"] == 3
    (skipped,) = manifest["skipped"]
    assert skipped["source"] == "perov_5"
    assert skipped["location"] == "perov_5/val.csv: val.csv row 4 (id broken-1)"
    assert "CIF" in skipped["reason"]


def test_build_rejects_a_folder_without_the_shared_layout(tmp_path):
    with pytest.raises(CrystalInputError, match="structures: folder not found"):
        build_reference_set(tmp_path, tmp_path / "out")


def test_build_script_runs_and_reports_bad_paths(mini_shared, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "build_reference", PROJECT_ROOT / "scripts" / "build_reference.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--shared", str(mini_shared), "--out", str(tmp_path / "out")]) == 0
    assert "mp-pbe-element-refs" in capsys.readouterr().out
    assert script.main(["--shared", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "folder not found" in capsys.readouterr().err


def test_load_reference_defaults_to_the_shipped_set(mini_shared, tmp_path, monkeypatch):
    build_reference_set(mini_shared, tmp_path / "data" / "reference")
    monkeypatch.setenv("CRYSTALFORGE_DATA", str(tmp_path / "data"))
    result = load_reference()
    assert len(result.records) == 19


def test_load_reference_says_how_to_build_a_missing_shipped_set(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALFORGE_DATA", str(tmp_path))
    with pytest.raises(CrystalInputError, match="build_reference.py"):
        load_reference()


def test_load_reference_reads_a_user_folder_of_cifs(mini_shared):
    result = load_reference(mini_shared / "structures" / "lemat" / "mp")
    assert [r.id[:3] for r in result.records] == ["mp-", "mp-"]


def test_shipped_reference_set_matches_its_manifest():
    manifest_path = DEFAULT_REFERENCE.parent / "manifest.json"
    if not DEFAULT_REFERENCE.exists():
        pytest.skip("reference set not built")
    manifest = json.loads(manifest_path.read_text())
    data = DEFAULT_REFERENCE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    assert len(data) <= 25_000_000
    assert set(manifest["counts"]) == EXPECTED_SOURCES
    assert sum(manifest["counts"].values()) == manifest["n_structures"]
    sample = read_crystals(DEFAULT_REFERENCE, limit=100)
    assert all(r.source in EXPECTED_SOURCES and r.id for r in sample.records)


@pytest.mark.slow
def test_shipped_reference_set_is_rebuilt_identically_from_the_shared_data(tmp_path):
    if not SHARED_DATA.is_dir() or not DEFAULT_REFERENCE.exists():
        pytest.skip("shared data or shipped reference set not available")
    manifest = build_reference_set(SHARED_DATA, tmp_path / "out")
    assert (tmp_path / "out" / REFERENCE_FILE).read_bytes() == DEFAULT_REFERENCE.read_bytes()
    result = load_reference()
    assert len(result.records) == manifest["n_structures"]
    assert result.n_skipped == 0
