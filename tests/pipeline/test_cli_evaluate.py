"""``crystalforge evaluate`` end to end: copies are not novel, duplicates are not unique."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp
from typer.testing import CliRunner

from evaluation.io.crystals import write_cif_zip, write_extxyz
from evaluation.records import CrystalRecord
from pipeline.cli import app

runner = CliRunner()


def reference_structures() -> dict[str, Structure]:
    return {
        "rocksalt-NaCl": Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ),
        "perovskite-SrTiO3": Structure(
            Lattice.cubic(3.905),
            ["Sr", "Ti", "O", "O", "O"],
            [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        ),
        "wurtzite-ZnO": Structure.from_spacegroup(
            "P6_3mc",
            Lattice.hexagonal(3.25, 5.21),
            ["Zn", "O"],
            [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]],
        ),
        "bcc-Fe": Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }


def disguised_copy(structure: Structure, seed: int) -> Structure:
    """Rotated, sites re-ordered, every atom moved by at most 0.05 Å."""
    rng = np.random.default_rng(seed)
    rotation = SymmOp.from_axis_angle_and_translation(rng.normal(size=3), rng.uniform(10, 80))
    rotated = Structure(
        Lattice(rotation.operate_multi(structure.lattice.matrix)),
        structure.species,
        structure.frac_coords,
    )
    order = rng.permutation(len(rotated))
    shuffled = Structure(
        rotated.lattice, [rotated[i].specie for i in order], rotated.frac_coords[order]
    )
    shifts = rng.normal(size=(len(shuffled), 3))
    shifts *= (
        0.05
        * rng.uniform(0.2, 1.0, size=(len(shuffled), 1))
        / np.linalg.norm(shifts, axis=1, keepdims=True)
    )
    for index, shift in enumerate(shifts):
        shuffled.translate_sites([index], shift, frac_coords=False)
    return shuffled


def absent_structures() -> dict[str, Structure]:
    return {
        "rocksalt-KBr": Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ),
        "zincblende-ZnO": Structure.from_spacegroup(
            "F-43m", Lattice.cubic(4.58), ["Zn", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]]
        ),
        "CsCl-NaCl": Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }


@pytest.fixture
def reference_zip(tmp_path: Path) -> Path:
    records = [
        CrystalRecord(structure=s, id=name, source="test-reference")
        for name, s in reference_structures().items()
    ]
    path = tmp_path / "reference.zip"
    write_cif_zip(records, path)
    return path


@pytest.fixture
def samples_file(tmp_path: Path) -> Path:
    reference = reference_structures()
    absent = absent_structures()
    samples = [
        ("copy-NaCl", disguised_copy(reference["rocksalt-NaCl"], 1)),
        ("copy-SrTiO3", disguised_copy(reference["perovskite-SrTiO3"], 2)),
        ("copy-ZnO", disguised_copy(reference["wurtzite-ZnO"], 3)),
        ("new-KBr", absent["rocksalt-KBr"]),
        ("new-ZnO", absent["zincblende-ZnO"]),
        ("new-NaCl-CsCl-type", absent["CsCl-NaCl"]),
        ("dup-KBr", absent["rocksalt-KBr"].copy()),
        ("dup-ZnO", absent["zincblende-ZnO"].copy()),
    ]
    path = tmp_path / "samples.extxyz"
    write_extxyz([CrystalRecord(structure=s, id=i, source="samples") for i, s in samples], path)
    return path


def read_rows(output: Path) -> dict[str, dict[str, str]]:
    with open(output / "structures.csv") as stream:
        return {row["id"]: row for row in csv.DictReader(stream)}


def test_copies_are_not_novel_duplicates_are_not_unique_the_rest_novel(
    tmp_path, reference_zip, samples_file
):
    output = tmp_path / "out"
    result = runner.invoke(
        app,
        ["evaluate", str(samples_file), "--reference", str(reference_zip), "--output", str(output)],
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(output)
    for copy in ("copy-NaCl", "copy-SrTiO3", "copy-ZnO"):
        assert rows[copy]["novel"] == "False", copy
        assert rows[copy]["matched_reference"].startswith("test-reference:")
    for new in ("new-KBr", "new-ZnO", "new-NaCl-CsCl-type"):
        assert rows[new]["novel"] == "True", new
        assert rows[new]["unique"] == "True", new
    assert rows["dup-KBr"]["unique"] == "False"
    assert rows["dup-KBr"]["duplicate_of"] == rows["new-KBr"]["index"]
    assert rows["dup-ZnO"]["unique"] == "False"
    assert rows["dup-ZnO"]["duplicate_of"] == rows["new-ZnO"]["index"]

    summary = json.loads((output / "summary.json").read_text())
    assert summary["n_structures"] == 8
    assert summary["n_novel"] == 5  # 3 new + their 2 duplicates
    assert summary["n_unique"] == 6
    assert summary["n_unique_novel"] == 3
    assert summary["stability_evaluated"] is False
    assert (output / "e_above_hull_hist.png").stat().st_size > 0
    assert (output / "uniqueness_vs_samples.png").stat().st_size > 0


def test_structures_csv_starts_with_the_paper_columns(tmp_path, reference_zip, samples_file):
    output = tmp_path / "out"
    runner.invoke(
        app,
        ["evaluate", str(samples_file), "--reference", str(reference_zip), "--output", str(output)],
    )
    header = (output / "structures.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == [
        "index",
        "formula",
        "valid",
        "unique",
        "novel",
        "e_above_hull",
        "stable",
        "sun",
    ]


def test_missing_samples_file_is_a_one_line_error_with_exit_code_2(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope.extxyz")])
    assert result.exit_code == 2
    assert "nope.extxyz" in result.output


def test_unreadable_samples_file_is_exit_code_2_and_writes_nothing(tmp_path, reference_zip):
    bad = tmp_path / "bad.csv"
    bad.write_text("material_id,cif\n1,not a cif\n")
    output = tmp_path / "out"
    result = runner.invoke(
        app, ["evaluate", str(bad), "--reference", str(reference_zip), "--output", str(output)]
    )
    assert result.exit_code == 2
    assert not (output / "summary.json").exists()


def test_a_bad_setting_names_the_option(tmp_path, samples_file, reference_zip):
    result = runner.invoke(
        app, ["evaluate", str(samples_file), "--reference", str(reference_zip), "--n-jobs", "0"]
    )
    assert result.exit_code == 2
    assert "n-jobs" in result.output or "n_jobs" in result.output


def test_config_file_with_an_unknown_key_is_rejected(tmp_path, samples_file, reference_zip):
    config = tmp_path / "config.yaml"
    config.write_text("relax: none\nstabilty_threshold: 0.1\n")  # misspelt key
    result = runner.invoke(
        app,
        ["evaluate", str(samples_file), "--reference", str(reference_zip), "--config", str(config)],
    )
    assert result.exit_code == 2
    assert "stabilty_threshold" in result.output


def test_the_paper_config_in_the_repository_loads():
    from evaluation.report.evaluate import EvaluationSettings

    settings = EvaluationSettings.from_yaml(
        Path(__file__).parents[2] / "configs/evaluation/paper.yaml"
    )
    assert settings.relax == "chgnet"
    assert settings.stability_threshold == 0.1
    assert (settings.matcher.ltol, settings.matcher.stol, settings.matcher.angle_tol) == (
        0.2,
        0.3,
        5.0,
    )


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("evaluate", "data", "version"):
        assert command in result.output


def test_the_summary_says_what_each_share_counts_and_skips_a_flat_uniqueness_plot(
    tmp_path, reference_zip
):
    samples = tmp_path / "two.extxyz"
    structures = [
        Structure(Lattice.cubic(5.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    ]
    write_extxyz([CrystalRecord(s, f"s{i}", "t") for i, s in enumerate(structures)], samples)
    output = tmp_path / "out"
    args = ["evaluate", str(samples), "--reference", str(reference_zip), "--output", str(output)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "S.U.N.: stable, unique and novel, validity not required" in result.stdout
    assert (output / "e_above_hull_hist.png").exists()
    assert not (output / "uniqueness_vs_samples.png").exists()  # 2 unique samples: a flat line
