"""``crystalforge data info`` and ``data convert``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from evaluation.io.crystals import read_crystals, write_extxyz
from evaluation.records import CrystalRecord
from pipeline.cli import app

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def small_set(tmp_path: Path) -> Path:
    records = [
        CrystalRecord(
            Structure(Lattice.cubic(4.0 + i * 0.1), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
            id=f"nacl-{i}",
            source="t",
            properties={"band_gap": 5.0 + i},
        )
        for i in range(3)
    ]
    path = tmp_path / "set.extxyz"
    write_extxyz(records, path)
    return path


def test_info_prints_counts_elements_sizes_and_properties(tmp_path):
    result = runner.invoke(app, ["data", "info", str(small_set(tmp_path))])
    assert result.exit_code == 0, result.output
    for expected in ("3", "Na", "Cl", "band_gap"):
        assert expected in result.stdout


def test_info_json_is_machine_readable(tmp_path):
    result = runner.invoke(app, ["data", "info", str(small_set(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["n_structures"] == 3


def test_info_on_a_shared_csv_reads_the_mp20_style_format(tmp_path):
    # The first rows of perov_5 exactly as published: a cif column plus properties.
    rows = pd.read_csv(SHARED / "structures/perov_5/val.csv", nrows=5)
    csv_path = tmp_path / "perov.csv"
    rows.to_csv(csv_path, index=False)
    result = runner.invoke(app, ["data", "info", str(csv_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["n_structures"] == 5
    assert "heat_all" in json.dumps(info)


def test_info_on_an_unknown_format_is_exit_code_2(tmp_path):
    path = tmp_path / "crystals.docx"
    path.write_text("hello")
    result = runner.invoke(app, ["data", "info", str(path)])
    assert result.exit_code == 2
    assert "crystals.docx" in result.output


def test_convert_to_cif_zip_and_back_keeps_provenance(tmp_path):
    zipped = tmp_path / "set.zip"
    result = runner.invoke(app, ["data", "convert", str(small_set(tmp_path)), str(zipped)])
    assert result.exit_code == 0, result.output
    back = read_crystals(zipped)
    assert sorted(r.id for r in back.records) == ["nacl-0", "nacl-1", "nacl-2"]
    assert {r.source for r in back.records} == {"t"}


def test_convert_to_an_unknown_format_is_exit_code_2_and_writes_nothing(tmp_path):
    target = tmp_path / "set.pdf"
    result = runner.invoke(app, ["data", "convert", str(small_set(tmp_path)), str(target)])
    assert result.exit_code == 2
    assert not target.exists()
