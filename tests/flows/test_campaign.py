"""Campaigns end to end on the embedded store: scoring, resume, kill -9, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from evaluation.io.crystals import write_cif_zip, write_extxyz
from evaluation.records import CrystalRecord
from flows.relax import stable_uuid
from pipeline.cli import app
from pipeline.store import ResultsStore
from tests.conftest import l10_cuau, l12

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    candidates = [
        CrystalRecord(l10_cuau(), "cuau-L10", "t"),  # known: in the reference below
        CrystalRecord(l12(3.75, "Au", "Cu"), "cu3au-L12", "t"),
        CrystalRecord(l12(3.98, "Cu", "Au"), "cuau3-L12", "t"),
        CrystalRecord(l12(3.75, "Au", "Cu"), "cu3au-again", "t"),  # duplicate
        CrystalRecord(
            Structure(Lattice.cubic(4.0), ["Cu", "Au"], [[0, 0, 0], [0.05, 0, 0]]), "broken", "t"
        ),
    ]
    samples = tmp_path / "candidates.extxyz"
    write_extxyz(candidates, samples)
    reference = tmp_path / "reference.zip"
    write_cif_zip([CrystalRecord(l10_cuau(), "CuAu-L10", "ref")], reference)
    return {"samples": samples, "reference": reference, "store": tmp_path / "store"}


def campaign_args(inputs: dict[str, Path], campaign_id: str) -> list[str]:
    return [
        "campaign", "run", "Au-Cu", "--generator", "file", "--input", str(inputs["samples"]),
        "--num-candidates", "5", "--top-k", "2", "--max-steps", "60",
        "--reference", str(inputs["reference"]), "--store", str(inputs["store"]),
        "--campaign-id", campaign_id, "--config", str(Path(__file__).parent / "campaign_test.yaml"),
    ]  # fmt: skip


def test_campaign_scores_every_candidate_and_results_list_returns_flags(inputs):
    result = runner.invoke(app, campaign_args(inputs, "cuau-1"))
    assert result.exit_code == 0, result.output
    listed = runner.invoke(
        app,
        [
            "results",
            "list",
            "--campaign",
            "cuau-1",
            "--format",
            "json",
            "--store",
            str(inputs["store"]),
        ],
    )
    assert listed.exit_code == 0, listed.output
    rows = {row["candidate_id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"cuau-L10", "cu3au-L12", "cuau3-L12", "cu3au-again", "broken"}
    assert rows["cuau-L10"]["novel"] is False
    assert rows["cu3au-again"]["unique"] is False
    assert rows["broken"]["valid"] is False and "prerelax" in rows["broken"]["failure"]
    assert rows["broken"]["e_above_hull"] is None
    for name in ("cu3au-L12", "cuau3-L12"):
        row = rows[name]
        assert row["valid"] and row["unique"] and row["novel"]
        assert isinstance(row["e_above_hull"], float)
        assert row["sun"] == (row["e_above_hull"] < 0.1)
    # The two selected candidates were scored again at the final stage's own level of theory.
    selected = [row for row in rows.values() if row["selected"]]
    assert len(selected) == 2
    assert {row["level_of_theory"] for row in selected} == {"mlff:sevennet-7net-0"}


def test_a_campaign_prints_one_timed_line_per_stage_and_no_library_logs(inputs):
    result = runner.invoke(app, campaign_args(inputs, "cuau-progress"))
    assert result.exit_code == 0, result.output
    for line in (
        r"\[0:\d\d\] generate: 5 candidates \(file\)",
        r"\[0:\d\d\] prerelax: 5 candidates in 2 shard\(s\) with chgnet",
        r"prerelax shard 1/2 \(chgnet\): 3 to relax",
        r"filter: \d of 5 pass",
        r"hull: \d of 5 placed on",
        r"select: the 2 lowest E_hull",
        r"final hull: 2 of 2 placed on",
    ):
        assert re.search(line, result.output), line
    assert "Starting job" not in result.output and "INFO" not in result.output


def test_rerunning_a_campaign_reuses_finished_jobs_and_duplicates_nothing(inputs):
    assert runner.invoke(app, campaign_args(inputs, "cuau-2")).exit_code == 0
    again = runner.invoke(app, campaign_args(inputs, "cuau-2"))
    assert again.exit_code == 0, again.output
    assert "reused finished jobs: generate, prerelax, filter" in again.output
    assert "prerelax reused" in again.output  # not the first run's seconds
    store = ResultsStore.embedded(inputs["store"]).connect()
    assert len(store.query_candidates("cuau-2")) == 5
    store.close()


def test_a_campaign_killed_mid_way_resumes_without_losing_finished_work(inputs):
    command = [sys.executable, "-m", "pipeline", *campaign_args(inputs, "cuau-3")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    prerelax_uuid = stable_uuid("cuau-3", "prerelax")
    prerelax_done = False
    while time.monotonic() < deadline and process.poll() is None:
        store = ResultsStore.embedded(inputs["store"]).connect()
        # The pre-relaxation's final output (index 2, after its shards were merged) is stored.
        prerelax_done = store.jobs.query_one({"uuid": prerelax_uuid, "index": 2}) is not None
        store.close()
        if prerelax_done:
            break
        time.sleep(0.5)
    assert prerelax_done, "the campaign never finished its pre-relaxation"
    process.send_signal(signal.SIGKILL)
    process.wait()
    listed = runner.invoke(app, ["campaign", "list", "--store", str(inputs["store"])]).output
    assert re.search(r"cuau-3\s+Au-Cu\s+interrupted", listed)  # not 'running' forever

    resumed = runner.invoke(app, campaign_args(inputs, "cuau-3"))
    assert resumed.exit_code == 0, resumed.output
    assert "reused finished jobs: generate, prerelax" in resumed.output
    store = ResultsStore.embedded(inputs["store"]).connect()
    assert len(store.query_candidates("cuau-3")) == 5
    store.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["Li-Xx-O"], "Xx"),
        (["Li--O"], "Li--O"),
        (["Li"], "at least 2 elements"),
        (["Li-O", "--num-candidates", "0"], "num-candidates"),
        (["Li-O", "--num-candidates", "4", "--top-k", "8"], "--top-k 8 cannot exceed --num"),
        (["Li-O", "--num-candidates", "4"], "--top-k 8 cannot exceed --num-candidates 4"),
        (["Li-O", "--generator", "magic"], "--generator: must be one of"),
        (["Li-O", "--engine", "vasp-on-a-toaster"], "--engine: must be one of"),
        (["Og-Li"], "Og in Og-Li: no known elemental phase"),
        (["Li-O", "--generator", "file", "--input", "nope.cif"], "nope.cif: no such file"),
        (["Li-O", "--generator", "file"], "needs an input file (--input)"),
    ],
)
def test_bad_campaign_input_is_one_line_naming_the_option_and_writes_nothing(
    tmp_path, args, expected
):
    result = runner.invoke(app, ["campaign", "run", *args, "--store", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # failed validation never creates the store


def test_a_malformed_input_file_fails_before_any_work(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\n_cell_length_a 3\n")
    args = ["Li-O", "--generator", "file", "--input", str(bad), "--store", str(tmp_path / "s")]
    result = runner.invoke(app, ["campaign", "run", *args])
    assert result.exit_code == 2 and "no readable crystal" in result.output
    assert not (tmp_path / "s").exists()


def test_reusing_a_campaign_id_with_other_settings_is_refused_naming_them(inputs):
    assert runner.invoke(app, campaign_args(inputs, "cuau-5")).exit_code == 0
    changed = [*campaign_args(inputs, "cuau-5"), "--seed", "7"]
    result = runner.invoke(app, changed)
    assert result.exit_code == 2
    assert "campaign cuau-5 exists with other settings (seed: 0 -> 7)" in result.output


def test_status_list_show_and_export_read_the_store(inputs, tmp_path):
    assert runner.invoke(app, campaign_args(inputs, "cuau-4")).exit_code == 0
    store = ["--store", str(inputs["store"])]

    status = runner.invoke(app, ["campaign", "status", "cuau-4", *store])
    assert status.exit_code == 0 and "completed" in status.output
    assert "cuau-4" in runner.invoke(app, ["campaign", "list", *store]).output
    for command in (["campaign", "status", "nope"], ["results", "list", "--campaign", "nope"]):
        missing = runner.invoke(app, [*command, *store])
        assert missing.exit_code == 2 and "nope" in missing.output, command

    shown = runner.invoke(app, ["results", "show", "cuau-4/cu3au-L12", "--format", "json", *store])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["prerelax"]["status"] in ("ok", "not_converged")
    assert document["provenance"]["generator"] == "file"
    page = runner.invoke(app, ["results", "show", "cuau-4/cu3au-L12", *store]).stdout
    assert len(page.splitlines()) < 25  # a page, not the raw document
    assert "Pm-3m (221)" in page  # space group of the L1_2 structure
    assert re.search(r"prerelax\s+(ok|not_converged)\s+\d+", page)
    assert f"{document['e_above_hull']:.3f} eV/atom, {document['hull_label']}" in page

    table = runner.invoke(app, ["results", "list", *store]).stdout.splitlines()
    assert table[0].startswith("campaign") and "space group" in table[0]  # no --campaign given
    duplicate = next(line for line in table if "cu3au-again" in line)
    assert "chgnet" in duplicate  # the level of theory of the ranked E_hull
    balanced = runner.invoke(app, ["results", "list", "--max-elements", "1", *store])
    assert balanced.stdout.splitlines()[1].startswith("E_hull:")  # header, then only the legend

    exported = tmp_path / "cands.extxyz"
    result = runner.invoke(
        app,
        [
            "results",
            "export",
            "--campaign",
            "cuau-4",
            "--format",
            "extxyz",
            "--out",
            str(exported),
            *store,
        ],
    )
    assert result.exit_code == 0, result.output
    from evaluation.io.crystals import read_crystals

    records = read_crystals(exported).records
    assert {r.id for r in records} == {
        "cuau-L10",
        "cu3au-L12",
        "cuau3-L12",
        "cu3au-again",
        "broken",
    }

    cifs = tmp_path / "cands.zip"
    export = ["results", "export", "--campaign", "cuau-4", "--out", str(cifs), *store]
    assert runner.invoke(app, [*export, "--symprec", "0.1"]).exit_code == 0
    with zipfile.ZipFile(cifs) as archive:
        cif = archive.read("cu3au-L12.cif").decode()
    assert "_symmetry_space_group_name_H-M   Pm-3m" in cif  # symmetrised, not P1
    document = json.loads(
        runner.invoke(
            app, ["results", "show", "cuau-4/cu3au-L12", "--format", "json", *store]
        ).stdout
    )
    assert f"_crystalforge_e_above_hull   {document['e_above_hull']!r}" in cif
    assert f"_crystalforge_level_of_theory   '{document['level_of_theory']}'" in cif
    back = {r.id: r for r in read_crystals(cifs).records}
    stage = document.get("final") or document["prerelax"]
    relaxed = Structure.from_dict(stage["structure"])
    assert StructureMatcher().fit(back["cu3au-L12"].structure, relaxed)

    mismatch = runner.invoke(app, [*export[:-2], "--format", "extxyz", *store])
    assert mismatch.exit_code == 2 and "--format extxyz writes .extxyz or .xyz" in mismatch.output


def test_a_tiny_rss_campaign_on_a_binary_system_runs_end_to_end(tmp_path, inputs):
    store = ["--store", str(tmp_path / "rss-store")]
    result = runner.invoke(
        app,
        [
            "campaign", "run", "Cu-Au", "--generator", "rss", "--num-candidates", "4",
            "--top-k", "1", "--max-steps", "40", "--seed", "3", "--campaign-id", "rss-tiny",
            "--reference", str(inputs["reference"]),
            "--config", str(Path(__file__).parent / "campaign_test.yaml"), *store,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    listed = runner.invoke(
        app, ["results", "list", "--campaign", "rss-tiny", "--format", "json", *store]
    )
    rows = json.loads(listed.stdout)
    assert len(rows) == 4
    assert all(row["candidate_id"].startswith("rss-3-") for row in rows)
    scored = [row for row in rows if row["e_above_hull"] is not None]
    assert scored, "no RSS candidate got an energy above hull"
    for row in scored:
        assert row["sun"] == (row["stable"] and row["novel"] and row["unique"])


def test_a_yaml_store_spec_opens_the_same_collections(tmp_path):
    folder = tmp_path / "db"
    spec = tmp_path / "store.yaml"
    spec.write_text(
        f"""
JOB_STORE:
  docs_store: {{type: MontyStore, collection_name: jobs, database_path: "{folder}", key: uuid}}
  additional_stores:
    data: {{type: MontyStore, collection_name: data, database_path: "{folder}", key: blob_uuid}}
CAMPAIGNS_STORE: {{type: MontyStore, collection_name: campaigns, database_path: "{folder}",
                   key: campaign_id}}
CANDIDATES_STORE: {{type: MontyStore, collection_name: candidates, database_path: "{folder}",
                    key: candidate_key}}
"""
    )
    store = ResultsStore.open(spec).connect()
    store.save_candidates([{"campaign_id": "c", "candidate_id": "x", "sun": True}])
    assert [d["candidate_id"] for d in store.query_candidates("c", sun_only=True)] == ["x"]
    store.close()
    bad = tmp_path / "bad.yaml"
    bad.write_text("JOB_STORE: {}\n")
    result = runner.invoke(app, ["campaign", "list", "--store", str(bad)])
    assert result.exit_code == 2 and "CAMPAIGNS_STORE" in result.output


def test_a_tiny_substitution_campaign_scores_its_decorations(tmp_path):
    reference = tmp_path / "nacl-reference.zip"
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    write_cif_zip([CrystalRecord(rocksalt, "NaCl-rocksalt", "ref")], reference)
    store = ["--store", str(tmp_path / "sub-store")]
    result = runner.invoke(
        app,
        [
            "campaign", "run", "Na-Cl", "--generator", "substitution", "--num-candidates", "3",
            "--top-k", "1", "--max-steps", "40", "--campaign-id", "sub-tiny",
            "--reference", str(reference),
            "--config", str(Path(__file__).parent / "campaign_test.yaml"), *store,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(
        runner.invoke(
            app, ["results", "list", "--campaign", "sub-tiny", "--format", "json", *store]
        ).stdout
    )
    assert 1 <= len(rows) <= 3
    assert all(set(row["formula"]) <= set("NaCl0123456789") for row in rows)  # only Na and Cl
    scored = [row for row in rows if row["e_above_hull"] is not None]
    for row in scored:  # every relaxed candidate gets an E_hull; S.U.N. needs all three
        assert row["sun"] == (row["stable"] and row["novel"] and row["unique"])
    assert scored or all(row["failure"] for row in rows)


def test_a_second_campaign_in_the_same_system_reuses_the_stored_same_level_hull(inputs):
    same_level = ["--hull", "same-level"]
    assert runner.invoke(app, [*campaign_args(inputs, "cuau-first"), *same_level]).exit_code == 0
    second = runner.invoke(app, [*campaign_args(inputs, "cuau-second"), *same_level])
    assert second.exit_code == 0, second.output
    assert "hull reference Au-Cu chgnet" in second.output.split("reused finished jobs:")[1]
    assert "hull reference Au-Cu 7net-0" in second.output.split("reused finished jobs:")[1]


@pytest.mark.parametrize(
    "command",
    [
        ["campaign", "list"],
        ["campaign", "status", "x"],
        ["results", "list"],
        ["results", "show", "x/y"],
        ["results", "export", "--campaign", "x", "--out", "x.zip"],
    ],
)
def test_reading_commands_never_create_a_store(tmp_path, command):
    missing = tmp_path / "no-store"
    result = runner.invoke(app, [*command, "--store", str(missing)])
    assert result.exit_code == 2
    assert f"--store {missing}: no results store there" in result.output
    assert not missing.exists()


def test_a_failed_job_is_named_with_its_error_in_the_campaign(inputs, monkeypatch):
    import pipeline.campaign

    monkeypatch.setattr(pipeline.campaign, "check_input_file", lambda path, elements: 1)
    inputs["samples"].unlink()  # passes the (patched) check, fails in the generate job
    result = runner.invoke(app, campaign_args(inputs, "cuau-6"))
    assert result.exit_code == 1
    assert "failure: job 'generate' failed: CrystalInputError" in result.output
    status = runner.invoke(app, ["campaign", "status", "cuau-6", "--store", str(inputs["store"])])
    assert "(Au-Cu): failed" in status.output and "failure: job 'generate' failed" in status.output


def test_a_replaced_job_whose_new_flow_never_ran_is_not_finished(tmp_path):
    """Killed after the pre-relaxation stored its reference to the shards' merged output but
    before the merge ran: on resume the pre-relaxation runs again instead of being skipped."""
    from pipeline.campaign import job_finished

    store = ResultsStore.embedded(tmp_path / "store").connect()
    reference = {"@module": "jobflow.core.reference", "@class": "OutputReference",
                 "@version": None, "uuid": "merge", "attributes": []}  # fmt: skip
    store.jobs.docs_store.update(
        [
            {"uuid": "prerelax", "index": 1, "output": None},
            {"uuid": "prerelax", "index": 2, "output": reference},
        ],
        key=["uuid", "index"],
    )
    assert not job_finished(store, "prerelax")
    store.jobs.docs_store.update([{"uuid": "merge", "index": 1, "output": {"n": 3}}], key="uuid")
    assert job_finished(store, "prerelax") and job_finished(store, "merge")
    assert not job_finished(store, "never-ran")
    store.close()


def test_a_campaign_killed_inside_a_shard_resumes_after_its_last_finished_relaxation(
    tmp_path, monkeypatch
):
    import flows.relax

    rattled = []
    for i in range(12):  # one shard of 12 small relaxations: the kill lands inside it
        structure = l12(3.70 + 0.02 * i, "Au", "Cu")
        structure.perturb(0.05, min_distance=0.02)
        rattled.append(CrystalRecord(structure, f"l12-{i}", "t"))
    samples = tmp_path / "many.extxyz"
    write_extxyz(rattled, samples)
    args = [
        "campaign", "run", "Au-Cu", "--generator", "file", "--input", str(samples),
        "--num-candidates", "12", "--top-k", "1", "--max-steps", "60",
        "--store", str(tmp_path / "store"), "--campaign-id", "shard-kill",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], env=env, stderr=subprocess.DEVNULL
    )
    journal = Path(os.environ["CRYSTALFORGE_CACHE"]) / "shards"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        lines = sum(len(p.read_text().splitlines()) for p in journal.glob("*.jsonl"))
        if lines >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sum(len(p.read_text().splitlines()) for p in journal.glob("*.jsonl"))
    assert 2 <= finished < 12, "the kill did not land inside the shard"

    relaxed_again = []
    original = flows.relax.relax

    def counting(structures, **kwargs):
        relaxed_again.append(len(structures))
        return original(structures, **kwargs)

    monkeypatch.setattr(flows.relax, "relax", counting)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert relaxed_again[0] == 12 - finished  # the journaled relaxations were not redone
    assert not list(journal.glob("*.jsonl"))  # the finished shard's journal is gone
    store = ResultsStore.embedded(tmp_path / "store").connect()
    assert len(store.query_candidates("shard-kill")) == 12
    store.close()
