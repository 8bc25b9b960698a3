"""``crystalforge relax IN OUT``: every crystal of a file relaxed with an MLFF, one output entry
per input in input order, failures recorded per crystal, bad options refused before any work."""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from evaluation.io.crystals import read_crystals, write_cif_zip, write_extxyz
from evaluation.records import CrystalRecord
from pipeline.cli import app

runner = CliRunner()


def rattled(structure: Structure, seed: int) -> Structure:
    """``structure`` with every atom moved by 0.05 Å in a random direction."""
    shifts = np.random.default_rng(seed).normal(size=(len(structure), 3))
    shifts *= 0.05 / np.linalg.norm(shifts, axis=1, keepdims=True)
    moved = structure.copy()
    for index, shift in enumerate(shifts):
        moved.translate_sites([index], shift, frac_coords=False)
    return moved


def fcc(a: float) -> Lattice:
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


SILICON = rattled(Structure(fcc(5.47), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]]), 1)
ROCK_SALT = rattled(Structure(fcc(5.60), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), 2)
#: Two atoms 0.1 Å apart: no MLFF can compute it, so its relaxation fails at once.
OVERLAPPING = Structure(Lattice.cubic(4.0), ["Si", "Si"], [[0, 0, 0], [0.025, 0, 0]])


def crystal_file(tmp_path: Path, *, overlapping: bool = False) -> Path:
    """Silicon and rock-salt NaCl, slightly rattled (and the overlapping pair, last)."""
    records = [
        CrystalRecord(SILICON, id="si", source="demo", properties={"band_gap": 0.6}),
        CrystalRecord(ROCK_SALT, id="nacl", source="demo"),
    ]
    if overlapping:
        records.append(CrystalRecord(OVERLAPPING, id="overlap", source="demo"))
    path = tmp_path / "in.extxyz"
    write_extxyz(records, path)
    return path


def relax(*args: str | Path) -> Result:
    result = runner.invoke(app, ["relax", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def one_line_error(result: Result, *, after_reading: bool = False) -> str:
    """The one ``error:`` line of a run that exited 2: all of stderr, or, for an error found
    after reading the input, its last line after the read summary."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), result.stderr
    assert len(lines) == 1 or (after_reading and "read " in lines[0]), result.stderr
    return lines[-1]


def written(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.rglob("*")} - {"in.extxyz"}


def test_writes_one_relaxed_frame_per_input_with_the_relaxation_in_its_info(tmp_path):
    out = tmp_path / "out.extxyz"
    result = relax(crystal_file(tmp_path), out, "--steps", "5")
    assert result.exit_code == 0, result.output
    back = read_crystals(out).records
    assert [(r.source, r.id) for r in back] == [("demo", "si"), ("demo", "nacl")]
    for record, before in zip(back, (SILICON, ROCK_SALT), strict=True):
        props = record.properties
        assert props["status"] in ("ok", "not_converged")
        assert props["level_of_theory"] == "mlff:chgnet-0.3.0"
        assert 0 <= props["n_steps"] <= 5 and props["max_force"] >= 0
        assert -10 < props["energy_per_atom"] < 0
        assert record.energy == pytest.approx(props["energy_per_atom"] * len(record.structure))
        assert record.energy_metadata["data"]["level_of_theory"] == "mlff:chgnet-0.3.0"
        if props["n_steps"]:
            assert not np.allclose(record.structure.cart_coords, before.cart_coords)
    assert back[0].properties["band_gap"] == 0.6  # the input's own properties stay


def test_a_crystal_that_cannot_be_computed_is_kept_as_failed_while_the_others_relax(tmp_path):
    out = tmp_path / "out.extxyz"
    result = relax(crystal_file(tmp_path, overlapping=True), out, "--steps", "3")
    assert result.exit_code == 0, result.output
    back = read_crystals(out).records
    assert [r.id for r in back] == ["si", "nacl", "overlap"]
    assert [r.properties["status"] for r in back[:2]] != ["failed", "failed"]
    assert all(r.properties["status"] in ("ok", "not_converged") for r in back[:2])
    failed = back[2]
    assert failed.properties["status"] == "failed"
    assert failed.properties["reason"].startswith("input has atoms 0.10")
    assert "energy_per_atom" not in failed.properties and failed.energy is None
    assert np.allclose(failed.structure.cart_coords, OVERLAPPING.cart_coords)  # the input's


def test_a_zip_output_holds_one_cif_per_input_with_the_relaxation_as_data_items(tmp_path):
    out = tmp_path / "out.zip"
    result = relax(crystal_file(tmp_path, overlapping=True), out, "--steps", "2")
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["si.cif", "nacl.cif", "overlap.cif", "metadata.csv"]
        cif = archive.read("si.cif").decode()
    back = {r.id: r.properties for r in read_crystals(out).records}
    assert back["overlap"]["status"] == "failed"
    assert back["overlap"]["reason"] == "input has atoms 0.10 Å apart (< 0.5 Å)"
    assert back["si"]["level_of_theory"] == "mlff:chgnet-0.3.0"
    assert back["si"]["status"] in ("ok", "not_converged")
    for item in ("status", "energy_per_atom", "n_steps", "max_force", "level_of_theory"):
        assert f"_crystalforge_{item} " in cif


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--steps", "1"], "0 converged, 2 not converged, 1 failed"),
        (["--steps", "1", "--fmax", "100"], "2 converged, 1 failed"),
    ],
)
def test_ends_with_a_one_line_summary_of_the_outcomes(tmp_path, options, expected):
    out = tmp_path / "out.extxyz"
    result = relax(crystal_file(tmp_path, overlapping=True), out, *options)
    assert result.exit_code == 0, result.output
    summary = result.stdout.strip().splitlines()[-1]
    pattern = r"relaxed 3 structures with mlff:chgnet-0\.3\.0 in [\d.]+ s: (.*) -> (.*)"
    match = re.fullmatch(pattern, summary)
    assert match, summary
    assert match.groups() == (expected, str(out))
    assert "in.extxyz: read 3 crystals, skipped 0" in result.stderr


def test_jobs_relax_through_the_worker_pool_with_the_same_output(tmp_path):
    out = tmp_path / "out.extxyz"
    # three crystals make one chunk, so the pool relaxes them in this process: no spawn cost
    result = relax(crystal_file(tmp_path, overlapping=True), out, "--steps", "2", "--jobs", "2")
    assert result.exit_code == 0, result.output
    back = read_crystals(out).records
    assert [r.properties["status"] != "failed" for r in back] == [True, True, False]


def test_reads_any_format_such_as_a_zip_of_cifs(tmp_path):
    source = tmp_path / "in.zip"
    write_cif_zip([CrystalRecord(ROCK_SALT, id="nacl", source="demo")], source)
    out = tmp_path / "relaxed.xyz"
    result = relax(source, out, "--steps", "1")
    assert result.exit_code == 0, result.output
    assert [r.id for r in read_crystals(out).records] == ["nacl"]
    assert "relaxed 1 structure with" in result.stdout


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--fmax", "0"], "error: --fmax: must be greater than 0"),
        (["--fmax", "-0.1"], "error: --fmax: must be greater than 0"),
        (["--steps", "0"], "error: --steps: must be at least 1"),
        (["--jobs", "0"], "error: --jobs: must be at least 1"),
    ],
)
def test_bad_numbers_are_one_line_errors_naming_the_option_and_write_nothing(
    tmp_path, options, expected
):
    result = relax(crystal_file(tmp_path), tmp_path / "out.extxyz", *options)
    assert one_line_error(result).startswith(expected)
    assert written(tmp_path) == set()


def test_cuda_without_a_gpu_is_a_one_line_error_naming_the_option(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = relax(crystal_file(tmp_path), tmp_path / "out.extxyz", "--device", "cuda")
    assert one_line_error(result).startswith("error: --device cuda: no CUDA device")
    assert written(tmp_path) == set()


@pytest.mark.parametrize("option", ["--model", "--device"])
def test_an_unknown_choice_is_one_line_naming_the_option_from_the_console(
    tmp_path, monkeypatch, capsys, option
):
    from pipeline.cli import main

    source = crystal_file(tmp_path)
    monkeypatch.setattr(
        sys, "argv", ["crystalforge", "relax", str(source), "o.extxyz", option, "x"]
    )
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: Invalid value for '{option}'")
    assert written(tmp_path) == set()


@pytest.mark.parametrize("name", ["out.cif", "out.json", "out"])
def test_an_output_that_is_not_extxyz_or_zip_is_refused_before_reading(tmp_path, name):
    result = relax(tmp_path / "missing.extxyz", tmp_path / name)
    assert "use .extxyz, .xyz or .zip" in one_line_error(result)  # the input was not read
    assert not (tmp_path / name).exists()


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("keep me")
    result = relax(crystal_file(tmp_path), tmp_path / "file" / "out.extxyz")
    assert "is a file, not a folder" in one_line_error(result)
    assert (tmp_path / "file").read_text() == "keep me"


def test_a_missing_output_folder_is_created(tmp_path):
    out = tmp_path / "new" / "folder" / "out.extxyz"
    assert relax(crystal_file(tmp_path), out, "--steps", "1").exit_code == 0
    assert len(read_crystals(out).records) == 2


@pytest.mark.parametrize(
    ("content", "expected"), [(None, "no such file or folder"), ("", "contains no crystals")]
)
def test_unreadable_input_is_a_one_line_error_and_writes_nothing(tmp_path, content, expected):
    source = tmp_path / "in.extxyz"
    if content is not None:
        source.write_text(content)
    result = relax(source, tmp_path / "out.extxyz")
    assert expected in one_line_error(result)
    assert written(tmp_path) == set()


def test_disordered_input_into_extxyz_is_refused_before_relaxing(tmp_path):
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    source = tmp_path / "in.zip"
    write_cif_zip([CrystalRecord(alloy, id="cuau", source="demo")], source)
    result = relax(source, tmp_path / "out.extxyz")
    assert "disordered" in one_line_error(result, after_reading=True)
    assert "write a .zip instead" in result.stderr
    assert not (tmp_path / "out.extxyz").exists()


def test_a_missing_mlff_is_a_one_line_error_and_writes_nothing(tmp_path, monkeypatch):
    import evaluation.relax.run
    from evaluation.relax.calculators import MLFFUnavailable

    def unavailable(*args, **kwargs):
        raise MLFFUnavailable("SevenNet checkpoint for 7net-l3i5 is missing at /nowhere")

    monkeypatch.setattr(evaluation.relax.run, "relax", unavailable)
    result = relax(crystal_file(tmp_path), tmp_path / "out.extxyz", "--model", "7net-l3i5")
    error = one_line_error(result, after_reading=True)
    assert "SevenNet checkpoint for 7net-l3i5 is missing" in error
    assert written(tmp_path) == set()


def test_an_existing_output_is_replaced_only_by_a_complete_one(tmp_path, monkeypatch):
    import evaluation.relax.run
    from evaluation.relax.calculators import MLFFUnavailable

    out = tmp_path / "out.extxyz"
    out.write_text("previous results")

    def unavailable(*args, **kwargs):
        raise MLFFUnavailable("no model")

    monkeypatch.setattr(evaluation.relax.run, "relax", unavailable)
    assert relax(crystal_file(tmp_path), out).exit_code == 2
    assert out.read_text() == "previous results"
    assert written(tmp_path) == {"out.extxyz"}  # no temporary file left behind
