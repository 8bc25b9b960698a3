"""``evaluate --reference ENTRIES --relax none``: carried energies on the user's own hull, as
``mattergen-evaluate`` scores them."""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import pytest
from pymatgen.analysis.phase_diagram import PhaseDiagram
from pymatgen.core import Lattice, Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedStructureEntry
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TOY = {"level_of_theory": "dft:toy-pbe"}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(tmp_path / "cache"))


def cell(species: list[str], a: float = 4.0) -> Structure:
    """Atoms on a simple grid in a cube (distances > 1 Å: structurally valid)."""
    n = len(species)
    coords = [[(i + 0.5) / n, ((i * 3) % n + 0.5) / n, ((i * 5) % n + 0.5) / n] for i in range(n)]
    return Structure(Lattice.cubic(a * max(1, n / 4) ** (1 / 3)), species, coords)


def entry(species: list[str], energy: float, name: str, data=None, **kw) -> ComputedStructureEntry:
    return ComputedStructureEntry(cell(species), energy, entry_id=name, data=data or {}, **kw)


def write_jsonl_gz(entries: list[ComputedStructureEntry], path: Path) -> Path:
    with gzip.open(path, "wt") as handle:
        for item in entries:
            handle.write(json.dumps(item.as_dict()) + "\n")
    return path


def rows_of(output: Path) -> dict[str, dict[str, str]]:
    with open(output / "structures.csv") as stream:
        return {row["id"]: row for row in csv.DictReader(stream)}


def evaluate(samples: Path, reference: Path, output: Path):
    return runner.invoke(
        app,
        ["evaluate", str(samples), "--reference", str(reference), "--relax", "none",
         "--output", str(output)],
    )  # fmt: skip


def test_carried_energies_are_scored_on_the_users_reference_as_pymatgen_does(tmp_path):
    reference = [
        entry(["Li", "Li"], 2 * -1.9, "Li", TOY),
        entry(["Li", "Li"], 2 * -1.85, "Li-b", TOY),
        entry(["O", "O"], 2 * -4.9, "O2", TOY),
        entry(["Li", "Li", "O"], -14.9, "Li2O", TOY),
        entry(["Li", "Li", "O", "O"], -17.4, "Li2O2", TOY),
        entry(["Li", "O", "O"], -11.0, "LiO2", TOY),
    ]
    samples = [
        entry(["Li", "Li", "O"], -14.7, "Li2O-polymorph", TOY),
        entry(["Li", "Li", "Li", "O", "O"], -22.8, "Li3O2", TOY),
        entry(["Li", "O", "O", "O"], -13.0, "LiO3", TOY),
        entry(["Li", "Li", "O"], -15.2, "below-Li2O", TOY),
    ]
    output = tmp_path / "out"
    result = evaluate(
        write_jsonl_gz(samples, tmp_path / "samples.jsonl.gz"),
        write_jsonl_gz(reference, tmp_path / "my_entries.jsonl.gz"),
        output,
    )
    assert result.exit_code == 0, result.output
    assert "my_entries.jsonl.gz" in result.output and "not evaluated" not in result.output
    diagram = PhaseDiagram(reference)
    rows = rows_of(output)
    for sample in samples:
        row = rows[sample.entry_id]
        expected = diagram.get_e_above_hull(sample, allow_negative=True)
        assert float(row["e_above_hull"]) == pytest.approx(expected, abs=1e-6), sample.entry_id
        assert row["level_of_theory"] == "dft:toy-pbe" and row["correction"] == "none"
        assert row["hull_label"] == "dft:toy-pbe"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["stability_evaluated"] and summary["level_of_theory"] == "dft:toy-pbe"
    assert summary["reference"]["n_entries"] == len(reference)


def mp_style(structure: Structure, energy: float, name: str, potcars: bool = True):
    """An MP-style GGA/GGA+U entry (the run type, U values and POTCARs MP's input set uses)."""
    from pymatgen.io.vasp.sets import MPRelaxSet

    from evaluation.hull.screening import mp_style_parameters

    parameters = dict(mp_style_parameters(structure.composition))
    if potcars:
        symbols = MPRelaxSet.CONFIG["POTCAR"]
        parameters["potcar_spec"] = [
            {"titel": f"PAW_PBE {symbols[el.symbol]}", "hash": None} for el in structure.composition
        ]
    return ComputedStructureEntry(structure, energy, parameters=parameters, entry_id=name)


def test_mp_style_entries_are_mp2020_corrected_on_both_sides_and_a_bad_entry_fails_alone(
    tmp_path,
):
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.3), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    reference = [
        mp_style(Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5] * 3]), -16.6, "Fe"),
        mp_style(Structure(Lattice.cubic(4.0), ["O", "O"], [[0, 0, 0], [0.5, 0, 0]]), -9.8, "O2"),
        mp_style(rocksalt, 8 * -6.9, "FeO"),
    ]
    unusable = mp_style(rocksalt.copy(), 8 * -7.5, "FeO-no-potcars", potcars=False)
    samples = [
        mp_style(rocksalt.copy(), 8 * -6.95, "FeO-again"),
        mp_style(rocksalt.copy(), 8 * -6.95, "no-potcars", potcars=False),
        ComputedStructureEntry(
            rocksalt.copy(), 8 * -6.95, parameters={"run_type": "GGA"}, entry_id="gga-only"
        ),
    ]
    output = tmp_path / "out"
    result = evaluate(
        write_jsonl_gz(samples, tmp_path / "samples.jsonl.gz"),
        write_jsonl_gz([*reference, unusable], tmp_path / "entries.jsonl.gz"),
        output,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((output / "summary.json").read_text())
    skipped = summary["reference"]["entries_skipped"]  # a bad reference entry is left out, named
    assert (
        list(skipped) == ["entries:FeO-no-potcars"]
        and "potcar" in skipped["entries:FeO-no-potcars"]
    )
    rows = rows_of(output)
    compatibility = MaterialsProject2020Compatibility()
    processed = compatibility.process_entries(reference + samples[:1], inplace=False)
    expected = PhaseDiagram(processed[:-1]).get_e_above_hull(processed[-1], allow_negative=True)
    scored = rows["FeO-again"]
    assert float(scored["e_above_hull"]) == pytest.approx(expected, abs=1e-6)
    assert scored["correction"] == "mp2020" and scored["level_of_theory"] == "dft:mp-gga-ggau"
    for name in ("no-potcars", "gga-only"):  # each that entry's failure, never the run's
        assert rows[name]["e_above_hull"] == "", name
        assert "MP2020 corrections cannot be applied" in rows[name]["hull_message"], name


def test_a_sample_at_another_level_than_the_reference_is_that_samples_failure(tmp_path):
    reference = [
        entry(["Li", "Li"], -3.8, "Li", TOY),
        entry(["O", "O"], -9.8, "O2", TOY),
    ]
    samples = [
        entry(["Li", "Li", "O"], -14.7, "same", TOY),
        entry(["Li", "Li", "O"], -14.7, "other", {"level_of_theory": "dft:gpaw-pbe"}),
    ]
    output = tmp_path / "out"
    result = evaluate(
        write_jsonl_gz(samples, tmp_path / "s.jsonl.gz"),
        write_jsonl_gz(reference, tmp_path / "r.jsonl.gz"),
        output,
    )
    assert result.exit_code == 0, result.output
    rows = rows_of(output)
    assert math.isfinite(float(rows["same"]["e_above_hull"]))
    assert rows["other"]["e_above_hull"] == ""
    assert "dft:gpaw-pbe" in rows["other"]["hull_message"]
    assert "dft:toy-pbe" in rows["other"]["hull_message"]


def test_a_reference_that_mixes_levels_is_a_one_line_error(tmp_path):
    reference = [
        entry(["Li", "Li"], -3.8, "Li", TOY),
        entry(["O", "O"], -9.8, "O2", {"level_of_theory": "dft:gpaw-pbe"}),
    ]
    samples = [entry(["Li", "Li", "O"], -14.7, "x", TOY)]
    output = tmp_path / "out"
    result = evaluate(
        write_jsonl_gz(samples, tmp_path / "s.jsonl.gz"),
        write_jsonl_gz(reference, tmp_path / "r.jsonl.gz"),
        output,
    )
    assert result.exit_code == 2
    assert "mix levels of theory" in result.output
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1
    assert not (output / "summary.json").exists()


def test_an_mlff_of_unmeasured_energy_scale_is_refused_before_any_relaxation(tmp_path):
    samples = write_jsonl_gz([entry(["Li", "Li", "O"], -14.7, "x")], tmp_path / "s.jsonl.gz")
    config = tmp_path / "matgl.yaml"
    config.write_text("relax: matgl:/nowhere/M3GNet\n")
    result = runner.invoke(
        app, ["evaluate", str(samples), "--config", str(config), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert "energy scale" in result.output and "same-level" in result.output
    assert not (tmp_path / "o").exists()
