"""Campaigns on FireWorks: submit to an embedded LaunchPad, run workers, survive their faults.

Every FireWorks command runs in a subprocess, as users run it: the embedded LaunchPad needs
``MONGOMOCK_SERVERSTORE_FILE`` before fireworks is imported, which this test process (whose
other tests import fireworks) cannot promise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from evaluation.io.crystals import write_cif_zip, write_extxyz
from evaluation.records import CrystalRecord
from pipeline.cli import app
from pipeline.launchpad import LaunchPadError, LaunchPadLocation, launchpad_documents
from pipeline.progress import error_line
from tests.conftest import l10_cuau, l12

HELPERS = Path(__file__).parent / "fireworks_helpers"
CAMPAIGN_CONFIG = Path(__file__).parents[1] / "flows" / "campaign_test.yaml"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def crystalforge(
    *args: str, cwd: Path, cache: Path, entry: list[str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the command line in a fresh process (``entry`` replaces ``-m pipeline``)."""
    env = {
        **os.environ,
        "CRYSTALFORGE_CACHE": str(cache),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("MONGOMOCK_SERVERSTORE_FILE", None)
    command = [sys.executable, *(entry or ["-m", "pipeline"]), *args]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> dict:
    """Au-Cu inputs (as in the local campaign tests) and the results `campaign run` gives."""
    folder = tmp_path_factory.mktemp("fireworks")
    l10 = l10_cuau()
    candidates = [
        CrystalRecord(l10, "cuau-L10", "t"),
        CrystalRecord(l12(3.75, "Au", "Cu"), "cu3au-L12", "t"),
        CrystalRecord(l12(3.98, "Cu", "Au"), "cuau3-L12", "t"),
        CrystalRecord(l12(3.75, "Au", "Cu"), "cu3au-again", "t"),
        CrystalRecord(
            Structure(Lattice.cubic(4.0), ["Cu", "Au"], [[0, 0, 0], [0.05, 0, 0]]), "broken", "t"
        ),
    ]
    write_extxyz(candidates, folder / "candidates.extxyz")
    write_cif_zip([CrystalRecord(l10, "CuAu-L10", "ref")], folder / "reference.zip")
    options = [
        "Au-Cu", "--generator", "file", "--input", str(folder / "candidates.extxyz"),
        "--num-candidates", "5", "--top-k", "2", "--max-steps", "60",
        "--reference", str(folder / "reference.zip"), "--config", str(CAMPAIGN_CONFIG),
    ]  # fmt: skip
    cache = folder / "cache"
    os.environ["CRYSTALFORGE_CACHE"] = str(cache)  # the in-process run below shares it
    try:
        local = CliRunner().invoke(
            app,
            ["campaign", "run", *options, "--store", str(folder / "local-store"),
             "--campaign-id", "cuau"],
        )  # fmt: skip
    finally:
        os.environ.pop("CRYSTALFORGE_CACHE")
    assert local.exit_code == 0, local.output
    return {
        "options": options,
        "cache": cache,
        "expected": results(folder / "local-store", "cuau", folder, cache),
    }


def results(store: Path, campaign_id: str, cwd: Path, cache: Path) -> dict[str, tuple]:
    """What `results list` says about each candidate (E_hull to 1e-6 eV/atom)."""
    listed = ok(
        crystalforge(
            "results",
            "list",
            "--campaign",
            campaign_id,
            "--format",
            "json",
            "--store",
            str(store),
            cwd=cwd,
            cache=cache,
        )  # fmt: skip
    )
    rows = json.loads(listed)
    assert len(rows) == len({row["candidate_id"] for row in rows})  # no candidate twice
    return {
        row["candidate_id"]: (
            row["formula"],
            None if row["e_above_hull"] is None else round(row["e_above_hull"], 6),
            row["level_of_theory"],
            row["selected"],
            row["valid"],
            row["unique"],
            row["novel"],
            row["stable"],
            row["sun"],
        )  # fmt: skip
        for row in rows
    }


def fireworks_in(launchpad: Path) -> list[dict]:
    return launchpad_documents(LaunchPadLocation.parse(f"embedded:{launchpad}"), "fireworks", {})


def test_a_submitted_campaign_run_by_gpu_then_cpu_workers_gives_the_results_of_campaign_run(
    campaign, tmp_path
):
    lp, store = f"embedded:{tmp_path / 'lp.json'}", str(tmp_path / "store")
    submit = ["campaign", "submit", *campaign["options"], "--store", store, "--launchpad", lp]
    submit += ["--campaign-id", "cuau"]
    first = ok(crystalforge(*submit, cwd=tmp_path, cache=campaign["cache"]))
    assert "added 9 Fireworks" in first  # the known-phase hull needs no hull-reference job
    again = ok(crystalforge(*submit, cwd=tmp_path, cache=campaign["cache"]))
    assert "already on the LaunchPad" in again and len(fireworks_in(tmp_path / "lp.json")) == 9

    gpu = ok(crystalforge("worker", "rapidfire", "--launchpad", lp, "--category", "gpu",
                          cwd=tmp_path, cache=campaign["cache"]))  # fmt: skip
    assert [line.split()[2] for line in gpu.splitlines() if line.startswith("fw ")] == ["generate"]
    cpu = ok(crystalforge("worker", "rapidfire", "--launchpad", lp, "--category", "cpu",
                          "--threads", "2", cwd=tmp_path, cache=campaign["cache"]))  # fmt: skip
    assert "0 fizzled" in cpu
    assert not list(tmp_path.glob("launcher_*"))  # launch folders go to crystalforge-launches/

    assert results(Path(store), "cuau", tmp_path, campaign["cache"]) == campaign["expected"]
    fireworks = fireworks_in(tmp_path / "lp.json")
    assert {fw["state"] for fw in fireworks} == {"COMPLETED"}
    categories = {fw["name"]: fw["spec"].get("_category") for fw in fireworks}
    assert categories.pop("generate") == "gpu"
    assert "prerelax shard 0" in categories and "final shard 0" in categories  # made at run time
    assert set(categories.values()) == {"cpu"}
    status = ok(crystalforge("campaign", "status", "cuau", "--store", store,
                             cwd=tmp_path, cache=campaign["cache"]))  # fmt: skip
    assert "(Au-Cu): completed" in status
    assert re.search(r"prerelax\s+5 completed", status)
    assert re.search(r"record\s+1 completed", status)
    site = tmp_path / "site"  # the explorer's campaign page shows the same progress
    ok(crystalforge("explore", "--store", store, "--export", str(site),
                    cwd=tmp_path, cache=campaign["cache"]))  # fmt: skip
    page = (site / "campaign" / "cuau.html").read_text()
    assert "FireWorks progress" in page and re.search(r"prerelax\s+5 completed", page)
    assert re.search(r"prerelax\s+5 completed", (site / "index.html").read_text())
    # Submitting a finished campaign again adds nothing either.
    done = ok(crystalforge(*submit, cwd=tmp_path, cache=campaign["cache"]))
    assert "every job already finished" in done
    assert len(fireworks_in(tmp_path / "lp.json")) == len(fireworks)


def test_the_default_campaign_id_makes_a_second_identical_submission_a_no_op(campaign, tmp_path):
    lp, store = f"embedded:{tmp_path / 'lp.json'}", str(tmp_path / "store")
    submit = ["campaign", "submit", *campaign["options"], "--store", store, "--launchpad", lp]
    submit += ["--hull", "same-level"]  # with its two hull-reference jobs (CHGNet, SevenNet)
    first = ok(crystalforge(*submit, cwd=tmp_path, cache=campaign["cache"]))
    assert "added 11 Fireworks" in first
    second = ok(crystalforge(*submit, cwd=tmp_path, cache=campaign["cache"]))
    campaign_id = first.split()[1].rstrip(":")
    assert campaign_id.startswith("Au-Cu-file-") and second.split()[1].rstrip(":") == campaign_id
    assert "already on the LaunchPad" in second and len(fireworks_in(tmp_path / "lp.json")) == 11


def test_a_worker_killed_mid_job_is_found_lost_and_rerun_and_nothing_is_lost_or_doubled(
    campaign, tmp_path
):
    lp_file = tmp_path / "lp.json"
    lp, store, cache = f"embedded:{lp_file}", str(tmp_path / "store"), tmp_path / "cache"
    submit = ["campaign", "submit", *campaign["options"], "--store", store, "--launchpad", lp]
    ok(crystalforge(*submit, "--campaign-id", "cuau", cwd=tmp_path, cache=cache))
    env = {**os.environ, "CRYSTALFORGE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker", "rapidfire", "--launchpad", lp],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    running: list[dict] = []
    # The first job (a hull reference, its MLFF loaded and elements relaxed in a fresh cache)
    # takes seconds: kill the worker while the LaunchPad file says it is running.
    while not running and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.05)
        running = [fw for fw in fireworks_in(lp_file) if fw["state"] == "RUNNING"]
    assert running, "the worker never started a job"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    lost = running[0]["fw_id"]
    assert next(fw for fw in fireworks_in(lp_file) if fw["fw_id"] == lost)["state"] == "RUNNING"

    rerun = ok(crystalforge("worker", "rapidfire", "--launchpad", lp, cwd=tmp_path, cache=cache))
    assert f"Fireworks [{lost}] set to rerun" in rerun
    assert results(Path(store), "cuau", tmp_path, cache) == campaign["expected"]
    fireworks = {fw["fw_id"]: fw for fw in fireworks_in(lp_file)}
    assert {fw["state"] for fw in fireworks.values()} == {"COMPLETED"}
    assert len(fireworks[lost]["archived_launches"]) == 1  # the killed launch, kept as history
    status = ok(crystalforge("campaign", "status", "cuau", "--store", store, cwd=tmp_path,
                             cache=cache))  # fmt: skip
    assert f"Fireworks [{lost}]" in status


def test_two_worker_threads_never_run_the_same_job_twice(tmp_path):
    tally_file = tmp_path / "tally.txt"
    ok(
        crystalforge(
            str(tally_file.parent / "lp.json"),
            str(tmp_path / "store"),
            str(tally_file),
            "40",
            cwd=tmp_path,
            cache=tmp_path / "cache",
            entry=[str(HELPERS / "submit_tally.py")],
        )  # fmt: skip
    )
    output = ok(
        crystalforge(
            "worker",
            "rapidfire",
            "--launchpad",
            f"embedded:{tmp_path / 'lp.json'}",
            "--threads",
            "2",
            cwd=tmp_path,
            cache=tmp_path / "cache",
        )  # fmt: skip
    )
    assert "40 jobs, 40 completed" in output
    runs = [line.split() for line in tally_file.read_text().splitlines()]
    assert sorted(int(number) for number, _ in runs) == list(range(40))  # each exactly once
    assert {thread for _, thread in runs} == {"rocket-0", "rocket-1"}  # both threads worked


def test_a_second_process_cannot_open_an_embedded_launchpad_in_use(tmp_path):
    lp = f"embedded:{tmp_path / 'lp.json'}"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pipeline.launchpad import LaunchPadLocation, open_launchpad\n"
         f"with open_launchpad(LaunchPadLocation.parse({lp!r})):\n"
         "    print('open', flush=True); time.sleep(60)\n"],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        refused = crystalforge("worker", "rapidfire", "--launchpad", lp, cwd=tmp_path,
                               cache=tmp_path / "cache")  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2
    assert f"is open in process {holder.pid}" in refused.stderr
    assert "one process at a time" in refused.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("embedded:", "needs a file"),
        ("embedded:/no/such/folder/lp.json", "not found"),
        ("launchpad.json", "expected embedded:PATH or a my_launchpad.yaml"),
        ("missing.yaml", "not found"),
    ],
)
def test_a_bad_launchpad_location_is_one_specific_error(text, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LaunchPadError, match=message):
        LaunchPadLocation.parse(text)


def test_bad_campaign_input_is_refused_before_the_launchpad_is_touched(tmp_path):
    result = crystalforge(
        "campaign", "submit", "Xx-Cu", "--launchpad", f"embedded:{tmp_path / 'lp.json'}",
        "--store", str(tmp_path / "store"), cwd=tmp_path, cache=tmp_path / "cache",
    )  # fmt: skip
    assert result.returncode == 2 and "Xx" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lp.json").exists()


def test_error_line_is_the_exception_of_a_fizzled_launch():
    trace = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "pydantic_core._pydantic_core.ValidationError: 2 validation errors for CandidateDoc\n"
        "structure\n  Input should be a valid dictionary\n"
        "    For further information visit https://errors.pydantic.dev\n"
    )
    launch = {"action": {"stored_data": {"_exception": {"_stacktrace": trace}}}}
    assert error_line(launch) == (
        "pydantic_core._pydantic_core.ValidationError: 2 validation errors for CandidateDoc"
    )
    assert error_line({"action": None}) == ""


def test_a_failing_dft_job_fizzles_for_its_candidate_only_and_status_shows_it(tmp_path):
    """Al-Si on GPAW (coarse settings), Al3Si's relaxation made to fail in the worker: that
    candidate's jobs fizzle, the campaign completes, and status names the candidate."""
    try:
        import gpaw  # noqa: F401
    except ImportError:
        if os.environ.get("CRYSTALFORGE_REQUIRE_GPAW") == "1":
            pytest.fail("GPAW is required here (CRYSTALFORGE_REQUIRE_GPAW=1) but not installed")
        pytest.skip("GPAW is not installed (make install-gpaw)")
    positions = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    candidates = [
        CrystalRecord(
            Structure(Lattice.cubic(2.95), ["Al", "Si"], [[0] * 3, [0.5] * 3]), "b2", "t"
        ),
        CrystalRecord(
            Structure(Lattice.cubic(4.0), ["Si", "Al", "Al", "Al"], positions), "l12", "t"
        ),
    ]
    write_extxyz(candidates, tmp_path / "candidates.extxyz")
    copper = Structure(Lattice.cubic(3.6), ["Cu"] * 4, positions)
    write_cif_zip([CrystalRecord(copper, "Cu-fcc", "ref")], tmp_path / "reference.zip")
    (tmp_path / "campaign.yaml").write_text(
        "dft_settings: {ecut: 350, kpoint_density: 2.0, relax_steps: 30}\n"
    )
    lp, store, cache = f"embedded:{tmp_path / 'lp.json'}", str(tmp_path / "store"), tmp_path / "c"
    ok(
        crystalforge(
            "campaign",
            "submit",
            "Al-Si",
            "--generator",
            "file",
            "--input",
            "candidates.extxyz",
            "--num-candidates",
            "2",
            "--top-k",
            "2",
            "--engine",
            "gpaw",
            "--properties",
            "band_gap",
            "--max-steps",
            "40",
            "--reference",
            "reference.zip",
            "--config",
            "campaign.yaml",
            "--store",
            store,
            "--launchpad",
            lp,
            "--campaign-id",
            "alsi",
            cwd=tmp_path,
            cache=cache,
        )  # fmt: skip
    )
    worker = ok(
        crystalforge(
            "worker",
            "rapidfire",
            "--launchpad",
            lp,
            cwd=tmp_path,
            cache=cache,
            entry=[str(HELPERS / "failing_gpaw_cli.py")],
        )  # fmt: skip
    )
    fizzled = [line for line in worker.splitlines() if line.startswith("fw ") and "FIZZLED" in line]
    assert fizzled and all("[final l12]" in line for line in fizzled)  # that candidate only
    assert any("GPAW relax exploded (test)" in line for line in fizzled)

    status = ok(crystalforge("campaign", "status", "alsi", "--store", store, cwd=tmp_path,
                             cache=cache))  # fmt: skip
    assert "(Al-Si): completed" in status
    assert re.search(r"FIZZLED fw \d+ .*\[final\] candidate l12: .*GPAW relax exploded", status)
    assert "candidate b2" not in status
    rows = {row["candidate_id"]: row for row in json.loads(ok(crystalforge(
        "results", "list", "--campaign", "alsi", "--format", "json", "--store", store,
        cwd=tmp_path, cache=cache,
    )))}  # fmt: skip
    assert rows["b2"]["level_of_theory"] == "dft:gpaw-pbe-pw350-k2"  # scored on the GPAW hull
    assert rows["l12"]["level_of_theory"] == "mlff:chgnet-0.3.0"  # keeps its pre-relaxation
    assert rows["l12"]["e_above_hull"] is not None
    # the jobs made at run time (per-candidate DFT, GPAW hull references) went to CPU workers
    fireworks = [fw for fw in fireworks_in(tmp_path / "lp.json") if fw["name"] != "generate"]
    assert len(fireworks) > 20 and {fw["spec"].get("_category") for fw in fireworks} == {"cpu"}


def test_an_in_memory_store_is_refused_for_fireworks(tmp_path):
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    from pipeline.campaign import CampaignConfig
    from pipeline.store import ResultsStore
    from pipeline.submit import submit_campaign

    memory = ResultsStore(JobStore(MemoryStore()), MemoryStore(), MemoryStore())
    location = LaunchPadLocation.parse(f"embedded:{tmp_path / 'lp.json'}")
    with pytest.raises(ValueError, match="job store is in memory.*persistent store"):
        submit_campaign("Li-O", CampaignConfig(), memory, location)
    assert not (tmp_path / "lp.json").exists()  # refused before the LaunchPad was touched
