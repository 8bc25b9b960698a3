"""``crystalforge data tensors``, ``train`` and ``generate`` on the tiny model (CPU, seconds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from evaluation.io.crystals import read_crystals, write_extxyz
from evaluation.paths import PROJECT_ROOT
from evaluation.records import CrystalRecord
from model.data import CrystalTensors
from pipeline.cli import app

runner = CliRunner()
TINY = PROJECT_ROOT / "configs" / "model" / "tiny.yaml"
PEROV_5_VAL = PROJECT_ROOT.parent / "shared" / "data" / "structures" / "perov_5" / "val.csv"


@pytest.fixture(scope="module")
def perov_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("perov") / "perov.csv"
    pd.read_csv(PEROV_5_VAL, nrows=24).to_csv(path, index=False)
    return path


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    # Progress lines ("read 24 crystals, ...") may come first; the error is one line, the last.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0]


def generate(checkpoint: Path, out: Path, *extra: str):
    args = ["generate", "--checkpoint", str(checkpoint), "--out", str(out), "--steps", "12"]
    return runner.invoke(app, [*args, *extra])


def dropped_count(output: str) -> int:
    return int(re.search(r"dropped\s+(\d+)", output).group(1))


# ------------------------------------------------------------------------------ data tensors


def test_data_tensors_round_trip_keeps_the_crystals_in_symmetric_form(tmp_path, perov_csv):
    out = tmp_path / "sub" / "perov.pt"
    result = runner.invoke(app, ["data", "tensors", str(perov_csv), str(out)])
    assert result.exit_code == 0, result.output
    assert "kept 24 crystals" in result.stdout and "skipped 0" in result.stdout
    tensors = CrystalTensors.load(out)
    assert len(tensors) == 24 and tensors.num_atoms.tolist() == [5] * 24
    assert torch.allclose(tensors.lattice, tensors.lattice.mT, atol=1e-5)  # symmetric (A27)
    assert bool((tensors.frac_coords >= 0).all() and (tensors.frac_coords < 1).all())
    originals = read_crystals(perov_csv).records
    assert sorted(tensors.atomic_numbers[:5].tolist()) == sorted(
        site.specie.Z for site in originals[0].structure
    )
    volumes = torch.linalg.det(tensors.lattice.double()).abs()
    assert np.allclose(volumes.numpy(), [r.structure.volume for r in originals], rtol=1e-4)
    assert not list(out.parent.glob("*.partial"))


def test_data_tensors_reports_what_it_skipped_and_why(tmp_path):
    rock_salt = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    big = rock_salt.copy()
    big.make_supercell([3, 2, 2])  # 24 atoms
    source = tmp_path / "mixed.extxyz"
    write_extxyz([CrystalRecord(rock_salt, "small", "t"), CrystalRecord(big, "big", "t")], source)
    result = runner.invoke(app, ["data", "tensors", str(source), str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    assert "kept 1 crystals" in result.stdout
    assert re.search(r"skipped\s+1\s+more than 20 atoms", result.stdout)
    assert len(CrystalTensors.load(tmp_path / "m.pt")) == 1


def test_data_tensors_bad_input_is_one_line_and_writes_nothing(tmp_path, perov_csv):
    out = tmp_path / "x.pt"
    assert "nope.csv" in one_line_error(
        runner.invoke(app, ["data", "tensors", str(tmp_path / "nope.csv"), str(out)])
    )
    message = one_line_error(
        runner.invoke(app, ["data", "tensors", str(perov_csv), str(out), "--max-atoms", "4"])
    )
    assert "more than 4 atoms" in message
    assert ".pt" in one_line_error(
        runner.invoke(app, ["data", "tensors", str(perov_csv), str(tmp_path / "x.txt")])
    )
    assert not out.exists()


# ------------------------------------------------------------------------------------- train


def test_train_writes_checkpoints_and_history_and_resumes(tmp_path, perov_csv):
    out = tmp_path / "run"
    args = ["train", "--config", str(TINY), "--data", str(perov_csv), "--out", str(out)]
    result = runner.invoke(app, [*args, "--max-steps", "20", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "step 20:" in result.stdout  # a progress line
    for expected in ("last.pt", "best validation", "wall time", "history.json"):
        assert expected in result.stdout
    assert (out / "last.pt").is_file()
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == 20 and history["resumed_from"] is None
    assert history["history"][-1]["step"] == 20
    assert history["best_validation"] == pytest.approx(
        min(h["validation"] for h in history["history"])
    )

    # Training again into the same folder without --resume would overwrite it: refused.
    again = runner.invoke(app, [*args, "--max-steps", "20"])
    assert "--resume" in one_line_error(again)

    # From the tensor file this time: the same crystals, so the same split.
    tensors = tmp_path / "perov.pt"
    assert runner.invoke(app, ["data", "tensors", str(perov_csv), str(tensors)]).exit_code == 0
    resumed = runner.invoke(
        app,
        ["train", "--config", str(TINY), "--data", str(tensors), "--out", str(out),
         "--resume", str(out / "last.pt"), "--max-steps", "30"],
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == 30 and history["resumed_from"] == str(out / "last.pt")
    assert [h["step"] for h in history["history"]] == [20, 30]
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 30


@pytest.mark.parametrize(
    "case",
    [
        "unknown config key",
        "missing data",
        "corrupt data",
        "resume",
    ],
)
def test_bad_train_input_is_one_line_with_exit_code_2(tmp_path, perov_csv, case):
    config, data, extra = TINY, perov_csv, []
    if case == "unknown config key":
        config = tmp_path / "bad.yaml"
        config.write_text(TINY.read_text() + "lerning_rate: 0.1\n")
        expected = "lerning_rate"
    elif case == "missing data":
        data, expected = tmp_path / "nowhere.csv", "nowhere.csv"
    elif case == "corrupt data":
        data = tmp_path / "junk.pt"
        data.write_bytes(np.random.default_rng(0).bytes(2048))
        expected = "junk.pt"
    else:
        junk = tmp_path / "junk.pt"
        junk.write_bytes(np.random.default_rng(1).bytes(2048))
        extra, expected = ["--resume", str(junk)], "--resume"
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["train", "--config", str(config), "--data", str(data), "--out", str(out), *extra]
    )
    assert expected in one_line_error(result)
    assert not out.exists()


# ---------------------------------------------------------------------------------- generate


def test_generate_writes_samples_with_provenance_and_is_reproducible(tmp_path, tiny_checkpoint):
    first, second, other = tmp_path / "a.extxyz", tmp_path / "b.extxyz", tmp_path / "c.extxyz"
    extra = ["--num-samples", "6", "--num-atoms", "7", "--batch-size", "4", "--seed", "5"]
    result = generate(tiny_checkpoint, first, *extra)
    assert result.exit_code == 0, result.output
    for expected in ("wrote", "dropped", "wall time", "samples/s"):
        assert expected in result.stdout
    records = read_crystals(first).records
    assert len(records) + dropped_count(result.stdout) == 6 and len(records) >= 3
    assert all(len(r.structure) == 7 for r in records)
    indices = [r.properties["index"] for r in records]
    assert len(set(indices)) == len(indices) and all(0 <= i < 6 for i in indices)
    record = records[0]
    assert record.id == f"mattergen-5-{record.properties['index']}"
    assert record.properties["generator"] == "mattergen"
    assert record.properties["checkpoint"] == str(tiny_checkpoint)
    assert record.properties["seed"] == 5 and record.properties["steps"] == 12

    assert generate(tiny_checkpoint, second, *extra).exit_code == 0
    again = read_crystals(second).records
    assert [r.id for r in again] == [r.id for r in records]
    for a, b in zip(records, again, strict=True):
        assert a.structure.species == b.structure.species
        assert np.allclose(a.structure.lattice.matrix, b.structure.lattice.matrix)
        assert np.allclose(a.structure.frac_coords, b.structure.frac_coords)

    extra[-1] = "6"
    assert generate(tiny_checkpoint, other, *extra).exit_code == 0
    different = read_crystals(other).records
    assert not np.allclose(
        different[0].structure.lattice.matrix, records[0].structure.lattice.matrix
    )


def test_generate_draws_atom_counts_from_the_training_data(tmp_path, tiny_checkpoint):
    out = tmp_path / "s.extxyz"
    result = generate(tiny_checkpoint, out, "--num-samples", "4")
    assert result.exit_code == 0, result.output
    assert {len(r.structure) for r in read_crystals(out).records} == {5}  # perov_5: 5 atoms


def test_generate_with_elements_places_only_those(tmp_path, tiny_checkpoint):
    out = tmp_path / "lio.extxyz"
    result = generate(tiny_checkpoint, out, "--num-samples", "6", "--elements", "Li,O")
    assert result.exit_code == 0, result.output
    species = {el.symbol for r in read_crystals(out).records for el in r.structure.composition}
    assert species and species <= {"Li", "O"}


@pytest.mark.parametrize("case", ["missing", "absent file", "random bytes", "not a checkpoint"])
def test_bad_checkpoint_is_one_line_with_exit_code_2(tmp_path, case, perov_csv, monkeypatch):
    out = tmp_path / "s.extxyz"
    args = ["generate", "--num-samples", "2", "--out", str(out)]
    if case == "missing":  # no --checkpoint, and the default one is not there
        monkeypatch.setenv("CRYSTALFORGE_CHECKPOINT", str(tmp_path / "gone" / "shipped.pt"))
        expected = "shipped.pt"
    else:
        path = tmp_path / "model.pt"
        if case == "random bytes":
            path.write_bytes(np.random.default_rng(2).bytes(4096))
        elif case == "not a checkpoint":
            runner.invoke(app, ["data", "tensors", str(perov_csv), str(path)])
        args += ["--checkpoint", str(path)]
        expected = "model.pt"
    assert expected in one_line_error(runner.invoke(app, args))
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--elements", "Li,Xx"], "'Xx'"),
        (["--elements", "Li,,O"], "empty element"),
        (["--out", "samples.cif"], ".extxyz"),
    ],
)
def test_bad_generate_options_are_one_line(tmp_path, tiny_checkpoint, extra, expected):
    args = ["generate", "--checkpoint", str(tiny_checkpoint), "--num-samples", "2"]
    args += ["--out", str(tmp_path / "s.extxyz")] if "--out" not in extra else []
    assert expected in one_line_error(runner.invoke(app, [*args, *extra]))


# ------------------------------------------------------------------------------ data build


def test_data_build_writes_tensors_labels_and_a_report(tmp_path, perov_csv, monkeypatch):
    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "set"
    args = ["data", "build", str(perov_csv), "--out", str(out), "--limit", "6"]
    result = runner.invoke(app, [*args, "--max-steps", "30"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    labels = pd.read_csv(out / "labels.csv.gz", keep_default_na=False)
    tensors = CrystalTensors.load(out / "dataset.pt")
    assert len(labels) == sum(report["counts"]["selected"].values())
    assert set(tensors.ids) == set(labels.loc[labels["split"] != "", "id"])
    assert report["counts"]["training_set"] == len(tensors)
    assert all(float(v) < 0.1 for v in labels.loc[labels["split"] != "", "e_hull"])
    again = runner.invoke(app, [*args, "--max-steps", "30"])  # every label cached: same set
    assert again.exit_code == 0, again.output
    assert CrystalTensors.load(out / "dataset.pt").ids == tensors.ids


@pytest.mark.parametrize(
    ("extra", "expected"),
    [(["nowhere.csv"], "nowhere.csv"), (["PEROV", "--model", "nonsense"], "unknown MLFF")],
)
def test_data_build_bad_input_is_one_line_with_exit_code_2(tmp_path, perov_csv, extra, expected):
    sources = [str(perov_csv) if e == "PEROV" else e for e in extra]
    result = runner.invoke(app, ["data", "build", *sources, "--out", str(tmp_path / "o")])
    assert expected in one_line_error(result)
    assert not (tmp_path / "o" / "dataset.pt").exists()
