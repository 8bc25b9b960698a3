"""``crystalforge finetune`` and steered ``generate`` (conditions, composition, element mask) on
the tiny model: a custom property from a CSV fine-tunes and steers in one command each."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from evaluation.io.crystals import read_crystals
from model.checkpoint import load_checkpoint
from model.finetune import specs_of
from pipeline.cli import app

runner = CliRunner()


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def build(tmp_path_factory, tiny_checkpoint) -> Path:
    """A data-build folder: the tiny checkpoint's perovskites, a chemical-system column and a
    custom CSV of volume per atom."""
    from evaluation.io.crystals import read_crystals as read
    from model.structures import structures_to_tensors
    from tests.conftest import PEROV_5_VAL

    folder = tmp_path_factory.mktemp("build")
    records = read(PEROV_5_VAL, limit=32).records
    tensors = structures_to_tensors(
        ((record.label, record.structure) for record in records), max_atoms=20
    ).tensors
    tensors.save(folder / "dataset.pt")
    with gzip.open(folder / "properties.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "chemical_system"])
        for record in records:
            writer.writerow([record.label, "-".join(sorted(record.structure.symbol_set))])
    (folder / "properties.json").write_text(
        json.dumps(
            {
                "properties": {
                    "chemical_system": {"kind": "chemical_system", "level_of_theory": "structure"}
                }
            }
        )
    )
    volumes = torch.linalg.det(tensors.lattice).abs() / tensors.num_atoms
    with open(folder / "volume.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "value"])
        for crystal_id, volume in zip(tensors.ids, volumes.tolist(), strict=True):
            writer.writerow([crystal_id, f"{volume:.3f}"])
    return folder


def finetune(build: Path, out: Path, *extra: str, base: Path):
    args = ["finetune", "--data", str(build), "--out", str(out), "--base", str(base)]
    return runner.invoke(app, [*args, "--max-steps", "4", *extra])


@pytest.fixture(scope="module")
def custom_checkpoint(build, tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("custom")
    result = finetune(
        build, out, "--property", "volume_per_atom", "--labels", str(build / "volume.csv"),
        "--kind", "scalar", base=tiny_checkpoint,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / "last.pt"


def test_a_custom_property_from_a_csv_fine_tunes_in_one_command(custom_checkpoint, build):
    specs = specs_of(load_checkpoint(custom_checkpoint).payload)
    assert [(s.name, str(s.kind)) for s in specs] == [("volume_per_atom", "scalar")]
    assert specs[0].num_labels == 32 and specs[0].source.endswith("volume.csv")
    history = json.loads((custom_checkpoint.parent / "history.json").read_text())
    assert history["step"] == 4 and history["properties"][0]["name"] == "volume_per_atom"


def test_a_custom_property_steers_generation_in_one_command(custom_checkpoint, tmp_path):
    out = tmp_path / "steered.extxyz"
    result = runner.invoke(
        app,
        [
            "generate", "--checkpoint", str(custom_checkpoint), "--out", str(out),
            "--steps", "8", "--num-samples", "4", "--condition", "volume_per_atom=10..14",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "conditions       volume_per_atom=10..14 (guidance 2)" in result.stdout
    records = read_crystals(out).records
    assert records and all(
        r.properties["conditions"] == {"volume_per_atom": "10..14"} for r in records
    )
    inequality = runner.invoke(
        app,
        [
            "generate", "--checkpoint", str(custom_checkpoint), "--out", str(out),
            "--steps", "2", "--num-samples", "1", "--condition", "volume_per_atom>=10",
        ],
    )  # fmt: skip
    assert "conditions       volume_per_atom>=10 (guidance 2)" in inequality.stdout


def test_a_chemical_system_condition_with_the_mask_never_leaves_the_system(
    build, tiny_checkpoint, tmp_path
):
    result = finetune(build, tmp_path / "ft", "--property", "chemical_system", base=tiny_checkpoint)
    assert result.exit_code == 0, result.output
    out = tmp_path / "system.extxyz"
    result = runner.invoke(
        app,
        [
            "generate", "--checkpoint", str(tmp_path / "ft" / "last.pt"), "--out", str(out),
            "--steps", "8", "--num-samples", "6", "--condition", "chemical_system=Sr-Ti-O",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for record in read_crystals(out).records:
        assert set(record.structure.symbol_set) <= {"Sr", "Ti", "O"}
        assert record.properties["element_mask"] is True


def test_a_composition_fixes_every_sample_of_the_default_model(tiny_checkpoint, tmp_path):
    out = tmp_path / "csp.extxyz"
    result = runner.invoke(
        app,
        [
            "generate", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--steps", "8",
            "--num-samples", "3", "--composition", "SrTiO3",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = read_crystals(out).records
    assert len(records) == 3
    assert all(r.structure.composition.reduced_formula == "SrTiO3" for r in records)
    assert all(len(r.structure) == 5 for r in records)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--condition", "band_gap"], "expected NAME=VALUE"),
        (["--condition", "band_gap=1", "--condition", "band_gap=2"], "band_gap is given twice"),
        (["--condition", "volume_per_atom=1"], "is fine-tuned on no property"),
        (["--composition", "Li2Xx"], "--composition: 'Li2Xx': 'Xx' is not an element symbol"),
        (["--composition", "Li25O"], "has 26 atoms; this model's cells hold at most 20"),
        (["--composition", "SrTiO3", "--num-atoms", "10"], "--num-atoms 10 contradicts"),
        (["--composition", "SrTiO3", "--elements", "Sr,Ti,O"], "leave --elements out"),
    ],
)
def test_bad_steering_options_are_one_line_and_write_nothing(
    tiny_checkpoint, tmp_path, extra, expected
):
    out = tmp_path / "never.extxyz"
    result = runner.invoke(
        app, ["generate", "--checkpoint", str(tiny_checkpoint), "--out", str(out), *extra]
    )
    assert expected in one_line_error(result)
    assert not out.exists()


def test_a_condition_the_model_was_not_tuned_on_is_refused(custom_checkpoint, tmp_path):
    result = runner.invoke(
        app,
        [
            "generate", "--checkpoint", str(custom_checkpoint), "--out", str(tmp_path / "x.extxyz"),
            "--condition", "band_gap=3",
        ],
    )  # fmt: skip
    assert "--condition band_gap: last.pt is fine-tuned on volume_per_atom" in one_line_error(
        result
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--property", "band_gap"], "--property band_gap: not labelled in"),
        (["--property", "a,a"], "give distinct names"),
        (["--property", "x", "--kind", "scalar"], "--kind describes the property in --labels"),
        (["--property", "x", "--labels", "missing.csv", "--kind", "scalar"], "no such label file"),
        (["--property", "x", "--labels", "{build}/volume.csv"], "--labels needs --kind"),
        (
            ["--property", "chemical_system", "--config", "nope.yaml"],
            "--config: fine-tuning config",
        ),
    ],
)
def test_bad_finetune_input_is_one_line_and_creates_nothing(
    build, tiny_checkpoint, tmp_path, extra, expected
):
    out = tmp_path / "never"
    extra = [part.replace("{build}", str(build)) for part in extra]
    result = finetune(build, out, *extra, base=tiny_checkpoint)
    assert expected in one_line_error(result)
    assert not out.exists()


def test_finetune_refuses_a_base_that_is_already_tuned(build, custom_checkpoint, tmp_path):
    out = tmp_path / "again"
    result = finetune(build, out, "--property", "chemical_system", base=custom_checkpoint)
    assert "is already fine-tuned" in one_line_error(result)
    assert not out.exists()
