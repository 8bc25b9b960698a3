"""A campaign's verdicts: the same S.U.N. as ``evaluate``, judged where it matters."""

from __future__ import annotations

import csv
import json

import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from evaluation.hull.core import HullResult
from evaluation.hull.known_phases import known_phases
from evaluation.io.crystals import write_cif_zip, write_extxyz
from evaluation.records import CrystalRecord
from flows.scoring import score_campaign
from pipeline.cli import app

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
FLAGS = ("valid", "valid_structure", "valid_composition", "unique", "novelty", "novel", "stable")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(tmp_path / "cache"))


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def cscl_type() -> Structure:
    return Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def hull_dict(e_above_hull: float) -> dict:
    result = HullResult(
        formula="NaCl",
        chemsys="Cl-Na",
        e_above_hull=e_above_hull,
        formation_energy_per_atom=-2.1 + e_above_hull,
        hull_energy_per_atom=-2.1,
        decomposition={"NaCl": 1.0},
        reference="toy",
        level_of_theory="mlff:chgnet-0.3.0",
        correction="mp2020",
        reference_correction="mp2020",
        reference_level="dft:mp-gga-ggau (mp2020)",
        coverage=known_phases().coverage(
            ["Na", "Cl"], {p.formula for p in known_phases().hull_phases(["Na", "Cl"])}
        ),
    )
    return {"hull": result.to_dict(), "hull_message": ""}


def stage(structures: dict[str, Structure], status: str = "ok") -> dict:
    return {
        "results": [
            {
                "candidate_id": cid,
                "status": status,
                "reason": "",
                "structure": s.as_dict(),
                "energy_per_atom": -3.4,
                "level_of_theory": "mlff:chgnet-0.3.0",
                "n_steps": 10,
                "rmsd": 0.1,
            }
            for cid, s in structures.items()
        ],
        "seconds": 1.0,
    }


def test_uniqueness_is_judged_again_on_the_final_structures(tmp_path):
    """Two candidates that differ after the pre-relaxation but relax into one structure at the
    final stage: the later one is a duplicate, and only one counts as S.U.N."""
    reference = tmp_path / "reference.zip"
    write_cif_zip(
        [CrystalRecord(Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]]), "cu", "r")], reference
    )
    candidates = [
        {"candidate_id": cid, "structure": s.as_dict(), "provenance": {"generator": "file"}}
        for cid, s in (("a", rocksalt()), ("b", cscl_type()))
    ]
    prerelax = stage({"a": rocksalt(5.6), "b": cscl_type()})
    final = stage({"a": rocksalt(5.62), "b": rocksalt(5.63)}, status="not_converged")
    hulls = {
        "hull": {"a": hull_dict(0.01), "b": hull_dict(0.02)},
        "name": "toy",
        "coverage": None,
        "seconds": 0,
    }
    filtered = {
        "flags": {cid: {"passed": True, "failure": None} for cid in "ab"},
        "counts": {"generated": 2, "relaxed": 2, "passed_filter": 2},
        "seconds": 0.0,
    }
    score = score_campaign.original(
        candidates, prerelax, filtered, hulls, ["a", "b"], final, hulls, str(reference), {}
    )
    a, b = score["candidates"]
    assert a["unique"] and a["sun"]
    assert not b["unique"] and b["duplicate_of"] == "a" and not b["sun"]
    assert "duplicate of a" in b["verdict"]
    assert a["flags"] == ["not_converged"] and "relaxation not converged" in a["verdict"]
    summary = score["summary"]
    assert summary["n_sun"] == 1 and summary["n_sun_not_converged"] == 1
    assert "1 S.U.N. of 2" in summary["explanation"]
    assert "non-converged" in summary["explanation"]


def cu_au_candidates() -> list[CrystalRecord]:
    def l12(a: float, corner: str, face: str) -> Structure:
        positions = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
        return Structure(Lattice.cubic(a), [corner, face, face, face], positions)

    l10 = Structure(Lattice.tetragonal(2.85, 3.70), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    broken = Structure(Lattice.cubic(4.0), ["Cu", "Au"], [[0, 0, 0], [0.05, 0, 0]])
    return [
        CrystalRecord(l10, "cuau-L10", "t"),
        CrystalRecord(l12(3.75, "Au", "Cu"), "cu3au-L12", "t"),
        CrystalRecord(l12(3.98, "Cu", "Au"), "cuau3-L12", "t"),
        CrystalRecord(l12(3.76, "Au", "Cu"), "cu3au-again", "t"),
        CrystalRecord(broken, "broken", "t"),
    ]


def test_a_campaign_and_evaluate_give_the_same_flags_on_the_same_candidates(tmp_path):
    samples, reference = tmp_path / "candidates.extxyz", tmp_path / "reference.zip"
    records = cu_au_candidates()
    write_extxyz(records, samples)
    write_cif_zip([CrystalRecord(records[0].structure.copy(), "CuAu-L10", "ref")], reference)
    config = tmp_path / "campaign.yaml"
    config.write_text(
        "prerelax_model: chgnet\nfinal_model: chgnet\nfmax: 0.05\nfinal_fmax: 0.05\n"
        "max_steps: 200\nfinal_max_steps: 200\nshard_size: 8\n"
    )
    store = ["--store", str(tmp_path / "store")]
    ran = runner.invoke(
        app,
        ["campaign", "run", "Au-Cu", "--generator", "file", "--input", str(samples),
         "--num-candidates", "5", "--top-k", "5", "--reference", str(reference),
         "--campaign-id", "parity", "--config", str(config), *store],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    listed = runner.invoke(
        app, ["results", "list", "--campaign", "parity", "--format", "json", *store]
    )
    campaign = {row["candidate_id"]: row for row in json.loads(listed.stdout)}
    output = tmp_path / "evaluation"
    evaluated = runner.invoke(
        app,
        ["evaluate", str(samples), "--reference", str(reference), "--relax", "chgnet",
         "--fmax", "0.05", "--steps", "200", "--output", str(output)],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    with open(output / "structures.csv") as stream:
        rows = {row["id"]: row for row in csv.DictReader(stream)}
    shown = runner.invoke(app, ["results", "show", "parity/cu3au-L12", "--format", "json", *store])
    document = json.loads(shown.stdout)
    for record in records:
        ours, theirs = campaign[record.id], rows[record.id]
        for flag in FLAGS + ("sun",):
            assert str(document_value(ours, document, flag, record.id)) == theirs[flag], (
                record.id,
                flag,
            )
    assert campaign["cuau-L10"]["novelty"] == "known" and campaign["cu3au-again"]["unique"] is False
    assert campaign["cu3au-L12"]["sun"] and rows["cu3au-L12"]["sun"] == "True"  # not vacuous
    assert campaign["broken"]["stable"] is False
    assert "hull_coverage" in document and document["hull_label"].endswith("(mp2020)")


def document_value(listed: dict, shown: dict, flag: str, candidate_id: str):
    """A flag from `results list` (or, for cu3au-L12, `results show`: the two agree)."""
    return shown[flag] if candidate_id == "cu3au-L12" else listed.get(flag)


def test_known_li2o_and_licoo2_are_not_reported_as_discoveries_by_a_campaign(tmp_path):
    li2o = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.63), ["O", "Li"], [[0, 0, 0], [0.25, 0.25, 0.25]]
    )
    licoo2 = Structure.from_spacegroup(
        "R-3m",
        Lattice.hexagonal(2.82, 14.05),
        ["Li", "Co", "O"],
        [[0, 0, 0.5], [0, 0, 0], [0, 0, 0.2604]],
    )
    samples = tmp_path / "known.extxyz"
    write_extxyz(
        [CrystalRecord(li2o, "antifluorite-Li2O", "t"), CrystalRecord(licoo2, "R-3m-LiCoO2", "t")],
        samples,
    )
    config = tmp_path / "campaign.yaml"
    config.write_text("final_model: chgnet\nfmax: 0.05\nmax_steps: 150\nfinal_max_steps: 150\n")
    store = ["--store", str(tmp_path / "store")]
    ran = runner.invoke(
        app,
        ["campaign", "run", "Li-Co-O", "--generator", "file", "--input", str(samples),
         "--num-candidates", "2", "--top-k", "2", "--campaign-id", "known", "--config", str(config),
         *store],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "verdicts: 0 S.U.N. of 2" in ran.output
    assert "2 unverified (known MP compositions, not counted)" in ran.output
    assert "hull coverage      Co-Li-O:" in ran.output and "CoO" in ran.output
    listed = runner.invoke(
        app, ["results", "list", "--campaign", "known", "--format", "json", *store]
    )
    for row in json.loads(listed.stdout):
        assert row["novelty"] == "unverified" and not row["novel"] and not row["sun"], row
        assert row["hull_label"] == "mlff:chgnet-0.3.0 vs dft:mp-gga-ggau (mp2020)"
        assert abs(row["e_above_hull"]) < 0.15  # the known phases themselves, near the hull
    table = runner.invoke(app, ["results", "list", "--campaign", "known", *store]).output
    assert "unverified" in table and "hull: known hull phases present/known" in table
