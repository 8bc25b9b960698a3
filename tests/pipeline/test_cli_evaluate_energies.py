"""``crystalforge evaluate`` with energies: one level of theory per hull, failures stay local."""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry
from typer.testing import CliRunner

from evaluation.io.crystals import write_cif_zip, write_extxyz
from evaluation.records import CrystalRecord
from pipeline.cli import app

runner = CliRunner()

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(tmp_path / "cache"))


def read_rows(output: Path) -> dict[str, dict[str, str]]:
    with open(output / "structures.csv") as stream:
        return {row["id"]: row for row in csv.DictReader(stream)}


def test_mp_style_dft_entries_are_scored_on_the_mp2020_hull_of_the_known_phases(
    tmp_path, mp_style_feo_entry
):
    feo = mp_style_feo_entry(-8.3 * 8, "feo-mp-style")
    bare = ComputedStructureEntry(
        Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]]), -3.7, entry_id="cu-no-parameters"
    )
    samples = tmp_path / "entries.json.gz"
    with gzip.open(samples, "wt") as stream:
        json.dump([feo.as_dict(), bare.as_dict()], stream)
    output = tmp_path / "out"
    reference = tmp_path / "reference.zip"
    write_cif_zip([CrystalRecord(feo.structure.copy(), "feo", "ref")], reference)

    result = runner.invoke(
        app, ["evaluate", str(samples), "--reference", str(reference), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(output)
    scored = rows["feo-mp-style"]
    assert math.isfinite(float(scored["e_above_hull"]))
    assert scored["level_of_theory"] == "dft:mp-gga-ggau"
    assert scored["correction"] == "mp2020"
    # MP2020-corrected entries on the MP2020 hull of MP-20's phases: one scheme, no mismatch
    assert scored["hull_message"] == ""
    assert scored["hull_label"] == "dft:mp-gga-ggau"
    assert "known hull phases" in scored["hull_coverage"]
    unscored = rows["cu-no-parameters"]
    assert unscored["e_above_hull"] == ""
    assert unscored["stable"] == "False"
    assert "no shipped reference at that level" in unscored["hull_message"]


def test_same_level_hull_scores_at_one_level_and_a_failure_stays_local(tmp_path):
    fcc_cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.62), ["Cu"], [[0, 0, 0]])
    l10_cuau = Structure(Lattice.tetragonal(2.85, 3.70), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    broken = Structure(Lattice.cubic(4.0), ["Cu", "Au"], [[0, 0, 0], [0.05, 0, 0]])
    samples = tmp_path / "samples.extxyz"
    write_extxyz(
        [
            CrystalRecord(fcc_cu, "fcc-Cu", "s"),
            CrystalRecord(l10_cuau, "L1_0-CuAu", "s"),
            CrystalRecord(broken, "broken", "s"),
        ],
        samples,
    )
    reference = tmp_path / "reference.zip"
    write_cif_zip([CrystalRecord(l10_cuau.copy(), "CuAu", "ref")], reference)
    output = tmp_path / "out"

    result = runner.invoke(
        app,
        [
            "evaluate",
            str(samples),
            "--reference",
            str(reference),
            "--relax",
            "chgnet",
            "--output",
            str(output),
            "--fmax",
            "0.1",
            "--steps",
            "200",
            "--hull",
            "same-level",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(output)
    assert rows["broken"]["relax_status"] == "failed"
    assert rows["broken"]["e_above_hull"] == ""
    for name in ("fcc-Cu", "L1_0-CuAu"):
        row = rows[name]
        assert row["relax_status"] in ("ok", "not_converged"), row
        assert row["level_of_theory"] == "mlff:chgnet-0.3.0"
        assert float(row["rmsd"]) < 0.5
    # fcc Cu is (close to) the MLFF's own elemental ground state; L1_0 CuAu is the reference
    # compound relaxed by the same MLFF, so it sits on the hull.
    assert abs(float(rows["fcc-Cu"]["e_above_hull"])) < 0.05
    assert float(rows["L1_0-CuAu"]["e_above_hull"]) == pytest.approx(0.0, abs=2e-3)
    assert rows["L1_0-CuAu"]["novel"] == "False"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["level_of_theory"] == "mlff:chgnet-0.3.0"
    assert summary["n_relax_failed"] == 1
    assert summary["stability_evaluated"] is True
