"""Specification of crystal reading and writing (evaluation.io.crystals)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry
from pymatgen.io.cif import CifParser, CifWriter

from evaluation.io.cif import parse_cif_text
from evaluation.io.crystals import (
    atomic_output,
    check_structure,
    read_crystals,
    write_cif_zip,
    write_extxyz,
    write_jsonl,
)
from evaluation.paths import PROJECT_ROOT
from evaluation.records import CrystalInputError, CrystalRecord

SHARED_STRUCTURES = PROJECT_ROOT.parent / "shared" / "data" / "structures"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def shared_structures() -> Path:
    if not SHARED_STRUCTURES.is_dir():
        pytest.skip("shared data folder not available")
    return SHARED_STRUCTURES


def rocksalt(a: float = 5.64) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def skewed_structure() -> Structure:
    """Low symmetry, arbitrary lattice orientation: nothing a reader could get right by luck."""
    lattice = Lattice([[4.1, 0.2, -0.3], [0.5, 5.2, 0.1], [-0.4, 0.3, 6.3]])
    coords = [[0.11, 0.23, 0.37], [0.61, 0.52, 0.91], [0.33, 0.81, 0.05]]
    return Structure(lattice, ["Li", "Co", "O"], coords)


def cif_of(structure: Structure) -> str:
    return str(CifWriter(structure))


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def first_csv_rows(path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1 : n + 1]


def assert_same_structure(first: Structure, second: Structure, atol: float = 1e-6) -> None:
    assert [str(site.species) for site in first] == [str(site.species) for site in second]
    np.testing.assert_allclose(first.lattice.matrix, second.lattice.matrix, atol=atol)
    np.testing.assert_allclose(first.frac_coords, second.frac_coords, atol=atol)


def assert_same_records(first: list[CrystalRecord], second: list[CrystalRecord]) -> None:
    assert [(r.source, r.id) for r in first] == [(r.source, r.id) for r in second]
    for before, after in zip(first, second, strict=True):
        assert_same_structure(before.structure, after.structure)
        assert after.properties == before.properties
        assert after.energy == pytest.approx(before.energy)
        assert after.energy_metadata == before.energy_metadata


BROKEN_CIFS = {
    "unparsable": ("data_broken\n_cell_length_a 4.0\nthis is not CIF at all {[", "CIF"),
    "zero_volume": (
        cif_of(rocksalt()).replace("_cell_angle_alpha   90.00000000", "_cell_angle_alpha   0"),
        "zero-volume",
    ),
    "unknown_element": (cif_of(rocksalt()).replace("  Cl  Cl1", "  Xx  Xx1"), "unknown element"),
    "nan_coordinate": (
        cif_of(rocksalt()).replace("0.50000000  0.50000000  0.50000000", "nan 0.5 0.5"),
        "non-finite",
    ),
    "no_atoms": (cif_of(rocksalt()).split("loop_\n _atom_site_type_symbol")[0], "atom"),
}


# --------------------------------------------------------------------------- CSV (MP-20 style)


def test_csv_reads_ids_properties_and_structures(tmp_path, shared_structures):
    header, rows = first_csv_rows(shared_structures / "perov_5" / "val.csv", 5)
    path = write_csv(tmp_path / "perov.csv", header, rows)

    result = read_crystals(path, source="perov_5")

    assert result.n_skipped == 0
    assert [r.id for r in result.records] == [row[1] for row in rows]  # material_id, as text
    first = result.records[0]
    assert first.source == "perov_5"
    assert len(first.structure) == 5
    assert first.properties["heat_all"] == pytest.approx(float(rows[0][4]))
    assert first.properties["formula"] == rows[0][3]
    assert "Unnamed: 0" not in first.properties  # the saved pandas index is not a property
    assert "cif" not in first.properties and "material_id" not in first.properties


def test_csv_reads_carbon_energies(tmp_path, shared_structures):
    header, rows = first_csv_rows(shared_structures / "carbon_24" / "val.csv", 3)
    result = read_crystals(write_csv(tmp_path / "carbon.csv", header, rows))
    assert {el.symbol for r in result.records for el in r.structure.composition} == {"C"}
    assert result.records[0].properties == {"energy_per_atom": float(rows[0][3])}


def test_csv_id_falls_back_to_unnamed_index_then_row_number(tmp_path):
    cif = cif_of(rocksalt())
    indexed = read_crystals(write_csv(tmp_path / "a.csv", ["", "cif"], [["17", cif]]))
    assert indexed.records[0].id == "17"
    plain = read_crystals(write_csv(tmp_path / "b.csv", ["cif", "band_gap"], [[cif, "1.5"]] * 2))
    assert [r.id for r in plain.records] == ["row-1", "row-2"]
    assert plain.records[0].properties == {"band_gap": 1.5}


def test_csv_property_types_and_missing_values(tmp_path):
    header = ["material_id", "cif", "n", "gap", "sg", "flag", "missing", "nan"]
    row = ["mp-1", cif_of(rocksalt()), "3", "0.25", "Fm-3m", "True", "", "NaN"]
    record = read_crystals(write_csv(tmp_path / "t.csv", header, [row])).records[0]
    assert record.properties == {"n": 3, "gap": 0.25, "sg": "Fm-3m", "flag": True}
    assert isinstance(record.properties["n"], int)


def test_gzipped_csv_is_read(tmp_path):
    plain = write_csv(tmp_path / "x.csv", ["material_id", "cif"], [["mp-1", cif_of(rocksalt())]])
    packed = tmp_path / "x.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    result = read_crystals(packed)
    assert [r.id for r in result.records] == ["mp-1"]
    assert result.records[0].source == "x"


def test_csv_row_with_unparsable_cif_is_reported_and_skipped(tmp_path):
    rows = [["mp-1", cif_of(rocksalt())], ["mp-2", "not a cif"], ["mp-3", cif_of(rocksalt())]]
    result = read_crystals(write_csv(tmp_path / "val.csv", ["material_id", "cif"], rows))
    assert [r.id for r in result.records] == ["mp-1", "mp-3"]
    assert len(result.problems) == 1
    assert result.problems[0].location == "val.csv row 2 (id mp-2)"
    assert "CIF" in result.problems[0].reason


@pytest.mark.parametrize("kind", sorted(BROKEN_CIFS))
def test_csv_row_with_unusable_crystal_is_reported_and_skipped(tmp_path, kind):
    text, reason = BROKEN_CIFS[kind]
    rows = [["good", cif_of(rocksalt())], ["bad", text]]
    result = read_crystals(write_csv(tmp_path / "t.csv", ["material_id", "cif"], rows))
    assert [r.id for r in result.records] == ["good"]
    assert [p.location for p in result.problems] == ["t.csv row 2 (id bad)"]
    assert reason in result.problems[0].reason


def test_csv_without_cif_column_is_rejected(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["material_id", "structure"], [["mp-1", "x"]])
    with pytest.raises(CrystalInputError, match=r"t\.csv: no 'cif' column"):
        read_crystals(path)


def test_empty_file_is_rejected(tmp_path):
    for name in ("empty.csv", "empty.cif", "empty.jsonl", "empty.extxyz"):
        (tmp_path / name).write_text("")
        with pytest.raises(CrystalInputError, match=name.replace(".", r"\.")):
            read_crystals(tmp_path / name)


def test_file_with_nothing_readable_names_the_file_and_first_problems(tmp_path):
    rows = [[f"bad-{n}", "garbage"] for n in range(5)]
    path = write_csv(tmp_path / "all_bad.csv", ["material_id", "cif"], rows)
    with pytest.raises(CrystalInputError) as error:
        read_crystals(path)
    message = str(error.value)
    assert "all_bad.csv" in message and "5 skipped" in message
    assert "row 1 (id bad-0)" in message and "row 4" not in message  # only the first few


def test_limit_stops_after_that_many_crystals(tmp_path):
    rows = [[f"mp-{n}", cif_of(rocksalt())] for n in range(10)]
    result = read_crystals(write_csv(tmp_path / "t.csv", ["material_id", "cif"], rows), limit=3)
    assert [r.id for r in result.records] == ["mp-0", "mp-1", "mp-2"]


# --------------------------------------------------------------------------- dispatch


def test_missing_path_is_rejected(tmp_path):
    with pytest.raises(CrystalInputError, match="no such file or folder"):
        read_crystals(tmp_path / "nowhere.csv")


def test_unknown_extension_is_rejected_with_the_supported_formats(tmp_path):
    (tmp_path / "crystals.poscar").write_text("whatever")
    with pytest.raises(CrystalInputError, match=r"crystals\.poscar: unsupported format.*extxyz"):
        read_crystals(tmp_path / "crystals.poscar")


def test_default_source_is_the_file_stem_or_parent_for_split_names(tmp_path):
    (tmp_path / "perov_5").mkdir()
    cif_row = [["mp-1", cif_of(rocksalt())]]
    split = write_csv(tmp_path / "perov_5" / "val.csv", ["material_id", "cif"], cif_row)
    named = write_csv(tmp_path / "my_samples.csv", ["material_id", "cif"], cif_row)
    assert read_crystals(split).records[0].source == "perov_5/val"
    assert read_crystals(named).records[0].source == "my_samples"


# --------------------------------------------------------------------------- structure checks


def test_check_structure_accepts_ordered_and_disordered_crystals():
    assert check_structure(rocksalt()) is None
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    assert check_structure(alloy) is None


@pytest.mark.parametrize(
    ("structure", "reason"),
    [
        (Structure(Lattice.cubic(3), [], []), "empty"),
        (Structure(Lattice.cubic(3), [{"Fe": 0.0}], [[0, 0, 0]]), "vacant"),
        (Structure(Lattice.cubic(3), ["X"], [[0, 0, 0]]), "unknown element 'X'"),
        (Structure(Lattice([[1, 0, 0], [0, 1, 0], [1, 1, 0]]), ["Fe"], [[0, 0, 0]]), "zero-volume"),
        (Structure(Lattice.cubic(3), ["Fe"], [[np.nan, 0, 0]]), "non-finite atomic coordinate"),
    ],
    ids=["empty", "vacancies_only", "dummy_species", "zero_volume", "nan_coordinate"],
)
def test_check_structure_rejects_unusable_crystals(structure, reason):
    assert reason in check_structure(structure)


# --------------------------------------------------------------------------- CIF files and folders


def test_p1_fast_path_gives_exactly_what_cifparser_gives(shared_structures):
    _, perov = first_csv_rows(shared_structures / "perov_5" / "val.csv", 20)
    texts = [row[2] for row in perov]
    texts += [
        p.read_text() for p in sorted((shared_structures / "lemat" / "mp").glob("*.cif"))[:20]
    ]
    near_third = Structure(
        Lattice.hexagonal(3.1, 5.0),
        ["Ne", "Ar", "Zn", "O"],  # noble gases: NaN electronegativity in the site order
        [[0.33334, 0.66666, 0.0], [-0.25, 0.1, 0.5], [1 / 3, 2 / 3, 0.25], [0.0, 0.0, 0.999999]],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no Pauling electronegativity for Ne"
        texts.append(cif_of(near_third))
    for text in texts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = CifParser.from_str(text).parse_structures(primitive=False)[0]
        (block,) = parse_cif_text(text)
        assert block.structure.lattice == expected.lattice
        assert [site.species for site in block.structure] == [site.species for site in expected]
        np.testing.assert_array_equal(block.structure.frac_coords, expected.frac_coords)
        assert block.structure.labels == expected.labels


def test_cif_with_symmetry_operations_is_expanded(tmp_path):
    structure = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0] * 3, [0.5] * 3]
    )
    (tmp_path / "nacl.cif").write_text(str(CifWriter(structure, symprec=0.01)))
    record = read_crystals(tmp_path / "nacl.cif").records[0]
    assert record.structure.composition.reduced_formula == "NaCl"
    assert len(record.structure) == 8  # conventional cell, expanded from the symmetric CIF


def test_multi_block_cif_gives_one_record_per_block_and_skips_a_bad_block(tmp_path):
    good = cif_of(rocksalt())
    text = good + "\n" + BROKEN_CIFS["unknown_element"][0].replace("data_NaCl", "data_bad")
    (tmp_path / "many.cif").write_text(text + "\n" + good.replace("data_NaCl", "data_again"))
    result = read_crystals(tmp_path / "many.cif")
    assert [r.id for r in result.records] == ["many-1", "many-3"]
    assert result.problems[0].location == "many.cif block 2 (data_bad)"
    assert "unknown element 'Xx'" in result.problems[0].reason


def test_disordered_cif_is_read(tmp_path):
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.75, "Au": 0.25}], [[0, 0, 0]])
    (tmp_path / "alloy.cif").write_text(cif_of(alloy))
    record = read_crystals(tmp_path / "alloy.cif").records[0]
    assert not record.structure.is_ordered
    assert record.structure[0].species["Cu"] == pytest.approx(0.75)


def test_garbage_cif_file_is_rejected(tmp_path):
    (tmp_path / "junk.cif").write_text("this is no crystal\n")
    with pytest.raises(CrystalInputError, match="junk.cif"):
        read_crystals(tmp_path / "junk.cif")


def test_cif_folder_joins_metadata_by_material_id_suffix_of_the_file_stem(tmp_path):
    (tmp_path / "mp_mp-1.cif").write_text(cif_of(rocksalt()))
    (tmp_path / "mp_mp-22.cif").write_text(cif_of(skewed_structure()))
    write_csv(
        tmp_path / "metadata.csv",
        ["material_id", "formula", "spacegroup", "density"],
        [
            ["mp-22", "LiCoO", "P1", "4.5"],
            ["mp-1", "NaCl", "Fm-3m", "2.1"],
            ["mp-1", "NaCl", "Fm-3m", "2.1"],
        ],
    )
    records = {r.id: r for r in read_crystals(tmp_path).records}
    assert set(records) == {"mp-1", "mp-22"}
    assert records["mp-1"].properties == {"spacegroup": "Fm-3m", "density": 2.1}
    assert records["mp-1"].source == tmp_path.name
    # A formula that merely restates the composition is not kept; record.formula gives it.
    assert "formula" not in records["mp-22"].properties


def test_cif_folder_joins_metadata_by_filename_column_and_id_prefix(tmp_path):
    (tmp_path / "JVASP-7_NaCl.cif").write_text(cif_of(rocksalt()))
    (tmp_path / "JVASP-8_LiCoO.cif").write_text(cif_of(skewed_structure()))
    header = ["jid", "formation_energy_per_atom", "cif_filename"]
    rows = [["JVASP-7", "-1.9", "JVASP-7_NaCl.cif"], ["JVASP-8", "-0.5", ""]]
    write_csv(tmp_path / "metadata.csv", header, rows)
    records = {r.id: r for r in read_crystals(tmp_path, source="jarvis").records}
    assert records["JVASP-7"].properties == {"formation_energy_per_atom": -1.9}  # by filename
    assert records["JVASP-8"].properties == {"formation_energy_per_atom": -0.5}  # by id prefix
    assert {r.source for r in records.values()} == {"jarvis"}


def test_shared_lemat_folders_read_with_their_metadata(tmp_path, shared_structures):
    for name, n_files in (("mp", 3), ("jarvis", 3)):
        folder = tmp_path / name
        folder.mkdir()
        for cif in sorted((shared_structures / "lemat" / name).glob("*.cif"))[:n_files]:
            shutil.copy(cif, folder)
        shutil.copy(shared_structures / "lemat" / name / "metadata.csv", folder)
    mp = read_crystals(tmp_path / "mp")
    assert all(r.id.startswith("mp-") and "spacegroup" in r.properties for r in mp.records)
    jarvis = read_crystals(tmp_path / "jarvis")
    assert all(r.id.startswith("JVASP-") for r in jarvis.records)
    assert all("formation_energy_per_atom" in r.properties for r in jarvis.records)


def test_cif_folder_without_metadata_uses_file_stems(tmp_path, shared_structures):
    seed = sorted((shared_structures / "lemat_bulk").glob("seed_*"))[0]
    folder = tmp_path / "seed"
    folder.mkdir()
    for cif in sorted(seed.glob("*.cif"))[:2]:
        shutil.copy(cif, folder)
    result = read_crystals(folder, source="lemat_bulk")
    assert [r.id for r in result.records] == [p.stem for p in sorted(folder.glob("*.cif"))]
    assert all(r.properties == {} for r in result.records)


@pytest.mark.parametrize("kind", sorted(BROKEN_CIFS))
def test_cif_folder_file_with_unusable_crystal_is_reported_and_skipped(tmp_path, kind):
    text, reason = BROKEN_CIFS[kind]
    (tmp_path / "good.cif").write_text(cif_of(rocksalt()))
    (tmp_path / "bad.cif").write_text(text)
    result = read_crystals(tmp_path)
    assert [r.id for r in result.records] == ["good"]
    assert [p.location for p in result.problems] == ["bad.cif"]
    assert reason in result.problems[0].reason


def test_folder_without_cifs_is_rejected(tmp_path):
    with pytest.raises(CrystalInputError, match="no .cif files"):
        read_crystals(tmp_path)


# --------------------------------------------------------------------------- extxyz


def odd_record() -> CrystalRecord:
    """Properties ASE's key=value syntax would not give back as they were."""
    properties = {
        "band_gap": 1.25,
        "n_conformers": 3,
        "is_metal": False,
        "spacegroup": "P4/nmm",
        "code": "007",  # looks like a number
        "note": "two words",
        "flag_text": "T",  # looks like a bool
        "vector": [1.0, 2.0],
        "formula": "CoLiO",
        "bad key": "x",
    }
    metadata = {"parameters": {"run_type": "GGA"}, "correction": -0.5}
    return CrystalRecord(skewed_structure(), "18517", "perov 5", properties, -12.5, metadata)


def test_extxyz_round_trip_keeps_provenance_properties_and_energy(tmp_path):
    records = [odd_record(), CrystalRecord(rocksalt(), "mp-1", "mp", {"spacegroup": "Fm-3m"})]
    write_extxyz(records, tmp_path / "out.extxyz")
    again = read_crystals(tmp_path / "out.extxyz")
    assert_same_records(records, again.records)
    assert again.records[1].energy is None


@pytest.mark.parametrize(
    "reason",
    ["input has atoms 0.10 Å apart", 'a "quoted" word', "tab\there", "back\\slash", "line\nbreak"],
)
def test_extxyz_round_trip_keeps_strings_that_need_json_escapes(tmp_path, reason):
    # ASE escapes a value's quotes but not its backslashes: an Å (\u00c5 in JSON) lost its
    # backslash and a quote lost the whole entry, until such values went as base64
    record = CrystalRecord(rocksalt(), "a", "s", {"reason": reason, "model": "mlff:chgnet-0.3.0"})
    write_extxyz([record], tmp_path / "out.extxyz")
    assert read_crystals(tmp_path / "out.extxyz").records[0].properties == record.properties


def test_gzipped_extxyz_round_trip(tmp_path):
    records = [CrystalRecord(skewed_structure(), "a", "s", {"x": 1.0}, energy=-3.0)]
    write_extxyz(records, tmp_path / "out.xyz.gz")
    assert_same_records(records, read_crystals(tmp_path / "out.xyz.gz").records)


def test_extxyz_from_other_tools_uses_info_as_properties_and_energy(tmp_path):
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info.update({"config_type": "bulk", "temperature": 300.0})
    atoms.calc = SinglePointCalculator(atoms, energy=-3.7, forces=np.zeros((1, 3)))
    write(tmp_path / "md.extxyz", [atoms, atoms])
    result = read_crystals(tmp_path / "md.extxyz")
    assert [r.id for r in result.records] == ["frame-1", "frame-2"]
    assert result.records[0].source == "md"
    assert result.records[0].properties == {"config_type": "bulk", "temperature": 300.0}
    assert result.records[0].energy == pytest.approx(-3.7)


FRAME = 'Lattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"'


@pytest.mark.parametrize(
    ("bad_frame", "reason"),
    [
        (f"2\n{FRAME}\nNa 0 0 0\nXx 2 2 2\n", "unknown element 'Xx'"),
        (f"2\n{FRAME}\nNa 0 0 0\nCl nan 2 2\n", "non-finite atomic coordinate"),
        ("1\nProperties=species:S:1:pos:R:3\nNa 0 0 0\n", "not a periodic crystal"),
        (f"2\n{FRAME.replace('4 0 0 0 4 0', '4 0 0 4 0 0')}\nNa 0 0 0\nCl 2 2 2\n", "zero-volume"),
    ],
    ids=["unknown_element", "nan_coordinate", "no_cell", "zero_volume"],
)
def test_extxyz_bad_frame_is_reported_and_skipped(tmp_path, bad_frame, reason):
    good = f"2\n{FRAME}\nNa 0 0 0\nCl 2 2 2\n"
    (tmp_path / "t.extxyz").write_text(good + bad_frame + good)
    result = read_crystals(tmp_path / "t.extxyz")
    assert [r.id for r in result.records] == ["frame-1", "frame-3"]
    assert result.problems[0].location == "t.extxyz frame 2"
    assert reason in result.problems[0].reason


def test_truncated_extxyz_keeps_the_complete_frames(tmp_path):
    good = f"2\n{FRAME}\nNa 0 0 0\nCl 2 2 2\n"
    (tmp_path / "cut.extxyz").write_text(good + f"2\n{FRAME}\nNa 0 0 0\n")
    result = read_crystals(tmp_path / "cut.extxyz")
    assert len(result.records) == 1
    assert "ends inside" in result.problems[0].reason


def test_disordered_crystal_cannot_be_written_as_extxyz(tmp_path):
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(CrystalInputError, match="alloy-1: disordered"):
        write_extxyz([CrystalRecord(alloy, "alloy-1")], tmp_path / "x.extxyz")
    assert not (tmp_path / "x.extxyz").exists()


# --------------------------------------------------------------------------- JSON / JSONL


def test_json_list_of_structure_dicts(tmp_path):
    (tmp_path / "s.json").write_text(
        json.dumps([rocksalt().as_dict(), skewed_structure().as_dict()])
    )
    result = read_crystals(tmp_path / "s.json")
    assert [r.id for r in result.records] == ["item-1", "item-2"]
    assert_same_structure(result.records[1].structure, skewed_structure())


def test_json_mapping_of_ids_to_structures(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"nacl": rocksalt().as_dict()}))
    assert read_crystals(tmp_path / "s.json").records[0].id == "nacl"


def test_jsonl_of_computed_structure_entries_keeps_energy_and_its_metadata(tmp_path):
    entry = ComputedStructureEntry(
        rocksalt(),
        energy=-10.0,
        correction=-0.4,
        parameters={"run_type": "GGA", "hubbards": {}},
        data={"task_id": "mp-1-task"},
        entry_id="mp-22862-GGA",
    )
    path = tmp_path / "alex_mp_icsd.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(entry.as_dict()) + "\n").encode()))
    record = read_crystals(path).records[0]
    assert record.id == "mp-22862-GGA"
    assert record.energy == pytest.approx(-10.4)  # corrected total energy
    assert record.energy_metadata["uncorrected_energy"] == pytest.approx(-10.0)
    assert record.energy_metadata["correction"] == pytest.approx(-0.4)
    assert record.energy_metadata["parameters"]["run_type"] == "GGA"
    assert record.energy_metadata["level_of_theory"] == "GGA"
    assert record.energy_metadata["data"] == {"task_id": "mp-1-task"}


def test_jsonl_bad_lines_are_reported_and_skipped(tmp_path):
    good = json.dumps(rocksalt().as_dict())
    no_crystal = json.dumps({"hello": "world"})
    bad_species = json.dumps(
        {"lattice": np.eye(3).tolist(), "species": ["Xx"], "frac_coords": [[0, 0, 0]]}
    )
    (tmp_path / "t.jsonl").write_text("\n".join([good, "{not json", no_crystal, bad_species, good]))
    result = read_crystals(tmp_path / "t.jsonl")
    assert [r.id for r in result.records] == ["item-1", "item-5"]
    assert [p.location for p in result.problems] == [
        "t.jsonl line 2",
        "t.jsonl line 3",
        "t.jsonl line 4",
    ]
    assert "invalid JSON" in result.problems[0].reason
    assert "not a crystal" in result.problems[1].reason
    assert "unknown element 'Xx'" in result.problems[2].reason


def test_invalid_json_file_is_rejected(tmp_path):
    (tmp_path / "t.json").write_text("[{")
    with pytest.raises(CrystalInputError, match="invalid JSON"):
        read_crystals(tmp_path / "t.json")


# --------------------------------------------------------------------------- writers


def records_for_round_trips() -> list[CrystalRecord]:
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.75, "Au": 0.25}, "Ni"], [[0, 0, 0], [0.5] * 3])
    return [
        odd_record(),
        CrystalRecord(alloy, "alloy/1", "icsd", {"temperature": 300}),
        CrystalRecord(rocksalt(), "mp-1", "mp", {}, energy=-7.0),
    ]


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_jsonl_round_trip_is_exact(tmp_path, name):
    records = records_for_round_trips()
    write_jsonl(records, tmp_path / name)
    again = read_crystals(tmp_path / name).records
    assert_same_records(records, again)
    assert again[1].structure[0].species["Au"] == pytest.approx(0.25)


def test_jsonl_with_decimals_rounds_coordinates_and_is_byte_reproducible(tmp_path):
    records = records_for_round_trips()
    write_jsonl(records, tmp_path / "a.jsonl.gz", decimals=6)
    write_jsonl(records, tmp_path / "b.jsonl.gz", decimals=6)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert_same_records(records, read_crystals(tmp_path / "a.jsonl.gz").records)
    line = json.loads(gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).splitlines()[2])
    assert line["species"] == ["Na", "Cl"]
    assert set(line) == {
        "id",
        "source",
        "lattice",
        "species",
        "frac_coords",
        "properties",
        "energy",
    }


def test_cif_zip_round_trip_keeps_ids_sources_properties_and_energies(tmp_path):
    records = records_for_round_trips() + [
        CrystalRecord(rocksalt(5.0), "MP-1", "mp", {"id": "clash", "filename": "also"}),
    ]
    write_cif_zip(records, tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        names = sorted(archive.namelist())
        metadata = archive.read("metadata.csv").decode()
    # Safe, unique file names even on case-blind file systems.
    assert names == ["18517.cif", "MP-1-2.cif", "alloy_1.cif", "metadata.csv", "mp-1.cif"]
    assert metadata.splitlines()[0].startswith("filename,id,source,formula,energy")

    again = {r.id: r for r in read_crystals(tmp_path / "out.zip").records}
    for before in records:
        after = again[before.id]
        expected_properties = dict(before.properties)
        if before.id == "18517":  # CSV is untyped: number-like text and lists change type
            expected_properties |= {"code": 7, "vector": "[1.0, 2.0]"}
        assert after.source == before.source
        assert after.properties == expected_properties
        assert after.energy == before.energy
        assert after.energy_metadata == before.energy_metadata
        # CIF keeps the crystal, not the lattice orientation: compare parameters and contents.
        after_lattice, before_lattice = after.structure.lattice, before.structure.lattice
        np.testing.assert_allclose(after_lattice.abc, before_lattice.abc, atol=1e-6)
        np.testing.assert_allclose(after_lattice.angles, before_lattice.angles, atol=1e-6)
        assert after.structure.composition.almost_equals(before.structure.composition)


def test_zip_of_cifs_from_elsewhere_is_read_and_bad_archives_are_rejected(tmp_path):
    with zipfile.ZipFile(tmp_path / "cifs.zip", "w") as archive:
        archive.writestr("cifs/mp-1.cif", cif_of(rocksalt()))
        archive.writestr("cifs/broken.cif", "data_x\n")
        archive.writestr("cifs/readme.txt", "not a crystal")
    result = read_crystals(tmp_path / "cifs.zip")
    assert [(r.id, r.source) for r in result.records] == [("mp-1", "cifs")]
    assert [p.location for p in result.problems] == ["cifs.zip:cifs/broken.cif"]

    with zipfile.ZipFile(tmp_path / "none.zip", "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    with pytest.raises(CrystalInputError, match="no .cif files"):
        read_crystals(tmp_path / "none.zip")
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(CrystalInputError, match="not a readable zip"):
        read_crystals(tmp_path / "fake.zip")


def test_failing_writer_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "set.jsonl"
    write_jsonl([CrystalRecord(rocksalt(), "old")], target)
    before = target.read_bytes()
    unwritable = CrystalRecord(rocksalt(), "new", properties={"thing": object()})
    with pytest.raises(CrystalInputError, match="new: cannot be written as JSON"):
        write_jsonl([CrystalRecord(rocksalt(), "fine"), unwritable], target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.jsonl"]  # no temporary left


def test_crash_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    import ase.io

    def write_half_then_crash(handle, frames, format):  # noqa: A002 - ASE's signature
        handle.write("2\npartial")
        raise OSError("disk full")

    monkeypatch.setattr(ase.io, "write", write_half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        write_extxyz([CrystalRecord(rocksalt(), "a")], tmp_path / "new.extxyz.gz")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_replaces_the_file_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as handle:
        handle.write("new, half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    with atomic_output(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# --------------------------------------------------------------------------- the full shared data


@pytest.mark.slow
def test_reading_all_shared_structures_is_quick_and_clean(shared_structures):
    started = time.perf_counter()
    paths = [shared_structures / "perov_5" / "val.csv", shared_structures / "carbon_24" / "val.csv"]
    paths += sorted((shared_structures / "lemat").iterdir())
    paths += sorted((shared_structures / "lemat_bulk").iterdir())
    results = [read_crystals(path) for path in paths]
    elapsed = time.perf_counter() - started
    assert sum(len(r.records) for r in results) == 17_267
    assert sum(r.n_skipped for r in results) == 0
    assert elapsed < 60
