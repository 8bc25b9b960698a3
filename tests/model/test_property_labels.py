"""Property labels of a training set (``model.property_labels``, ``crystalforge data labels``).

Every test writes a tiny ``data build`` folder (``dataset.pt`` of CrystalTensors, a small
``labels.csv.gz`` and ``report.json``) in ``tmp_path`` and labels it.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from pymatgen.core import Element, Lattice, Structure
from typer.testing import CliRunner

from evaluation.metrics.chemistry import SYMPREC
from model import property_compute
from model.property_compute import jarvis_band_gaps
from model.property_labels import (
    CACHE_FILE,
    CSV_FILE,
    JSON_FILE,
    PROPERTIES,
    label_properties,
)
from model.structures import structures_to_tensors
from pipeline.cli import app

runner = CliRunner()


def rocksalt() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def diamond_si() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


def bcc_fe() -> Structure:
    return Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def write_build(folder: Path, crystals: list[tuple[str, Structure]], level: str = "") -> Path:
    """A ``data build`` folder: dataset.pt, labels.csv.gz (e_hull = 0.01 * index), report.json."""
    folder.mkdir(parents=True, exist_ok=True)
    structures_to_tensors(crystals, max_atoms=20, source="test").tensors.save(folder / "dataset.pt")
    columns = ["id", "source", "formula", "n_atoms", "status", "n_steps", "energy_per_atom"]
    with gzip.open(folder / "labels.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, "e_form", "e_hull", "split"])
        for k, (identifier, structure) in enumerate(crystals):
            e_hull = "-0.000000" if k == 0 else f"{0.01 * k:.6f}"  # as data build writes 0
            source = identifier.rpartition(":")[0]
            writer.writerow(
                [identifier, source, structure.formula, len(structure), "ok", 3, "-4.0"]
                + ["-0.5", e_hull, "train"]
            )
    report = {"settings": {"e_hull_max": 0.1}, "hull": {"name": "training set (test)"}}
    if level:
        report["level_of_theory"] = level
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def read_csv(folder: Path) -> list[dict[str, str]]:
    with gzip.open(folder / CSV_FILE, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(folder: Path) -> dict:
    return json.loads((folder / JSON_FILE).read_text())


@pytest.fixture(scope="module")
def mlff_build(tmp_path_factory) -> Path:
    """NaCl, Si and bcc Fe labelled once with the two MLFF properties (CHGNet)."""
    folder = write_build(
        tmp_path_factory.mktemp("mlff") / "build",
        [("t:nacl", rocksalt()), ("t:si", diamond_si()), ("t:fe", bcc_fe())],
    )
    label_properties(folder, ["magnetic_density", "bulk_modulus"])
    return folder


# ------------------------------------------------------------------------ structure and tables


def test_rocksalt_nacl_is_space_group_225_in_the_cl_na_system(tmp_path):
    folder = write_build(tmp_path / "b", [("t:nacl", rocksalt()), ("t:si", diamond_si())])
    run = label_properties(folder, "space_group,chemical_system")
    rows = read_csv(folder)
    assert [r["id"] for r in rows] == ["t:nacl", "t:si"]
    assert rows[0]["space_group"] == "225" and rows[0]["chemical_system"] == "Cl-Na"
    assert rows[1]["space_group"] == "227" and rows[1]["chemical_system"] == "Si"
    described = read_json(folder)["properties"]["space_group"]
    assert described["symprec"] == SYMPREC == 0.1
    assert described["kind"] == "space_group" and described["labelled"] == 2
    assert run.summaries["chemical_system"].unlabelled == 0


def test_hhi_is_the_mass_weighted_production_hhi_of_pymatgens_table(tmp_path):
    import pymatgen.analysis.hhi as hhi_module

    table = {}
    for line in Path(hhi_module.HHI_CSV_PATH).read_text().splitlines():
        if line and not line.startswith("#"):
            symbol, production, _reserve = line.split(",")
            table[symbol] = float(production)
    na, cl = float(Element("Na").atomic_mass), float(Element("Cl").atomic_mass)
    by_hand = (na * table["Na"] + cl * table["Cl"]) / (na + cl)
    lih = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.0), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    folder = write_build(tmp_path / "b", [("t:nacl", rocksalt()), ("t:lih", lih)])
    run = label_properties(folder, ["hhi"])
    assert run.values["hhi"][0] == pytest.approx(by_hand, rel=1e-9)
    assert run.values["hhi"][1] is None  # pymatgen's table has no H: unlabelled, not guessed
    assert read_csv(folder)[1]["hhi"] == ""
    assert read_json(folder)["properties"]["hhi"]["unlabelled_reasons"] == {"no HHI data for H": 1}


def test_energy_above_hull_comes_from_the_builds_labels_at_its_level(tmp_path):
    crystals = [("t:nacl", rocksalt()), ("t:si", diamond_si())]
    folder = write_build(tmp_path / "b", crystals, level="mlff:sevennet-7net-0")
    run = label_properties(folder, ["energy_above_hull"])
    assert run.values["energy_above_hull"] == [0.0, 0.01]
    assert str(run.values["energy_above_hull"][0]) == "0.0"  # "-0.000000" read as 0.0
    described = read_json(folder)["properties"]["energy_above_hull"]
    assert described["level_of_theory"] == "mlff:sevennet-7net-0"
    assert described["unit"] == "eV/atom" and "own MLFF convex hull" in described["source"]


def test_band_gap_is_jarvis_optb88vdw_for_jarvis_crystals_only(tmp_path):
    path = Path(__file__).resolve().parents[2] / "data" / "reference" / "structures.jsonl.gz"
    with gzip.open(path, "rt") as handle:
        record = next(
            r
            for r in map(json.loads, handle)
            if r["source"] == "lemat/jarvis"
            and r["properties"]["bandgap_optb88vdw"] > 0.5
            and len(r["species"]) <= 20
            and not {"He", "Ne", "Ar"} & set(r["species"])  # pymatgen warns on their formulas
        )
    jid, gaps = record["id"], jarvis_band_gaps()
    jarvis = Structure(Lattice(record["lattice"]), record["species"], record["frac_coords"])
    assert gaps[jid] == (record["properties"]["bandgap_optb88vdw"], record["species"])
    crystals = [(f"lemat/jarvis:{jid}", jarvis), ("lemat/mp:mp-22862", rocksalt())]
    folder = write_build(tmp_path / "b", crystals)
    run = label_properties(folder, ["band_gap"])
    assert run.values["band_gap"] == [
        pytest.approx(record["properties"]["bandgap_optb88vdw"]),
        None,
    ]
    described = read_json(folder)["properties"]["band_gap"]
    assert described["level_of_theory"] == "dft:optb88vdw (JARVIS-DFT)"
    assert described["unlabelled_reasons"] == {"not from JARVIS-DFT": 1}


# ------------------------------------------------------------------------------------- MLFF


def test_magnetic_density_is_near_zero_for_nacl_and_si_and_about_0_2_for_bcc_fe(mlff_build):
    rows = {r["id"]: r for r in read_csv(mlff_build)}
    assert float(rows["t:nacl"]["magnetic_density"]) < 5e-3
    assert float(rows["t:si"]["magnetic_density"]) < 5e-3
    # Fe: about 2.2 μB per 11.8 Å³ (0.19 μB/Å³); CHGNet gives 2.5 μB at a = 2.87 Å
    assert 0.15 < float(rows["t:fe"]["magnetic_density"]) < 0.25
    described = read_json(mlff_build)["properties"]["magnetic_density"]
    assert described["level_of_theory"] == "mlff:chgnet-0.3.0" and described["unit"] == "μB/Å³"
    assert "magnitudes only" in described["notes"]


def test_bulk_modulus_of_diamond_si_is_near_the_experimental_98_gpa(mlff_build):
    rows = {r["id"]: r for r in read_csv(mlff_build)}
    assert 70 < float(rows["t:si"]["bulk_modulus"]) < 120  # CHGNet: ~78; PBE ~88; expt. 98
    assert 10 < float(rows["t:nacl"]["bulk_modulus"]) < 40  # expt. ~25
    described = read_json(mlff_build)["properties"]["bulk_modulus"]
    assert described["level_of_theory"] == "mlff:chgnet-0.3.0 (BM EOS, ±6 %, ions relaxed)"
    assert described["volume_range"] == 0.06 and described["n_volumes"] == 7
    cached = [json.loads(line) for line in (mlff_build / CACHE_FILE).read_text().splitlines()]
    si = next(r for r in cached if r["id"] == "t:si" and r["property"] == "bulk_modulus")
    assert 0.94 < si["details"]["relaxed_vs_input_volume"] < 1.06 and si["reason"] == ""


def test_a_failed_eos_fit_is_unlabelled_with_a_reason_not_an_error():
    import numpy as np

    volumes = np.linspace(9.4, 10.6, 7)
    falling = property_compute.fit_bulk_modulus(volumes, -volumes, n_atoms=1)  # no minimum
    assert falling.value is None and falling.reason
    parabola = property_compute.fit_bulk_modulus(volumes, (volumes - 10.0) ** 2, n_atoms=1)
    # B = V d²E/dV² = 20 eV/Å³ = 3204 GPa at V0 = 10 Å³ (Birch-Murnaghan fits it closely)
    assert parabola.value == pytest.approx(20 * 160.21766, rel=0.02)
    assert parabola.details["v0_per_atom"] == pytest.approx(10.0, abs=1e-3)


# ---------------------------------------------------------------------------- cache and files


def test_an_interrupted_run_resumes_and_never_recomputes_a_cached_label(tmp_path, monkeypatch):
    folder = write_build(tmp_path / "b", [("t:nacl", rocksalt()), ("t:fe", bcc_fe())])
    computed: list[int] = []
    real = property_compute.compute_chunk

    def counting(name, structures, model):
        computed.append(len(structures))
        return real(name, structures, model)

    monkeypatch.setattr(property_compute, "compute_chunk", counting)
    nothing = label_properties(folder, ["magnetic_density"], limit=0)  # the cache alone
    assert nothing.values["magnetic_density"] == [None, None] and computed == []
    first = label_properties(folder, ["magnetic_density", "space_group"], limit=1)
    assert first.summaries["magnetic_density"].labelled == 1  # stopped after one crystal
    assert first.summaries["magnetic_density"].reasons == {"not computed yet (limit)": 1}
    assert computed == [1, 2]
    second = label_properties(folder, ["magnetic_density", "space_group"])
    assert computed == [1, 2, 1]  # only the crystal the first run left
    assert second.summaries["magnetic_density"].from_cache == 1

    def refuse(*_):
        raise AssertionError("a cached label was computed again")

    monkeypatch.setattr(property_compute, "compute_chunk", refuse)
    third = label_properties(folder, ["magnetic_density", "space_group"])
    assert third.values == second.values
    assert third.summaries["magnetic_density"].computed == 0


def test_worker_processes_deliver_every_chunk_with_its_own_outcomes():
    structures = [rocksalt(), diamond_si(), bcc_fe()]
    delivered: dict[int, list] = {}
    chunks = [[s] for s in structures]
    property_compute.run_chunks(
        "chemical_system", chunks, "chgnet", 2, lambda c, out: delivered.update({c: out})
    )
    assert {c: [o.value for o in out] for c, out in delivered.items()} == {
        0: ["Cl-Na"],
        1: ["Si"],
        2: ["Fe"],
    }


def test_a_later_run_adds_its_columns_and_keeps_the_earlier_ones(tmp_path):
    folder = write_build(tmp_path / "b", [("t:nacl", rocksalt()), ("t:si", diamond_si())])
    label_properties(folder, ["space_group"])
    label_properties(folder, ["hhi", "space_group"])
    with gzip.open(folder / CSV_FILE, "rt") as handle:
        assert handle.readline().strip() == "id,space_group,hhi"
    described = read_json(folder)
    assert list(described["properties"]) == ["space_group", "hhi"]
    assert described["n_crystals"] == 2 and described["dataset"].endswith("dataset.pt")
    assert set(described["versions"]) >= {"pymatgen", "spglib", "chgnet"}


def test_an_unknown_property_is_a_value_error_listing_the_built_ins(tmp_path):
    folder = write_build(tmp_path / "b", [("t:nacl", rocksalt())])
    with pytest.raises(ValueError, match="'density'") as error:
        label_properties(folder, ["space_group", "density"])
    assert all(name in str(error.value) for name in PROPERTIES)
    with pytest.raises(ValueError, match="CHGNet"):
        label_properties(folder, ["magnetic_density"], model="7net-0")
    assert sorted(p.name for p in folder.iterdir()) == [
        "dataset.pt",
        "labels.csv.gz",
        "report.json",
    ]


# ------------------------------------------------------------------------------------- CLI


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--property", "space_group,density"], "unknown property 'density'"),
        (["--property", "magnetic_density", "--model", "nonsense"], "unknown MLFF"),
    ],
)
def test_the_cli_refuses_bad_input_in_one_line_and_creates_nothing(tmp_path, args, expected):
    folder = write_build(tmp_path / "b", [("t:nacl", rocksalt())])
    result = runner.invoke(app, ["data", "labels", str(folder), *args])
    assert expected in one_line_error(result)
    assert sorted(p.name for p in folder.iterdir()) == [
        "dataset.pt",
        "labels.csv.gz",
        "report.json",
    ]


def test_the_cli_refuses_a_folder_without_dataset_pt(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["data", "labels", str(tmp_path / "empty"), "--property", "hhi"])
    assert "no dataset.pt" in one_line_error(result)
    assert list((tmp_path / "empty").iterdir()) == []


def test_the_cli_labels_and_prints_one_line_per_property(tmp_path):
    folder = write_build(tmp_path / "b", [("t:nacl", rocksalt()), ("t:si", diamond_si())])
    args = ["data", "labels", str(folder), "--property", "chemical_system,energy_above_hull"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "chemical_system: 2 labelled, 0 unlabelled" in result.stdout
    assert "energy_above_hull: 2 labelled, 0 unlabelled" in result.stdout
    assert [r["chemical_system"] for r in read_csv(folder)] == ["Cl-Na", "Si"]
