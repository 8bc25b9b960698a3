"""Library patches of the pipeline (pipeline.compat): each does what stock API cannot, only on
the versions it was verified on."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import pipeline.compat.fireworks as fireworks_compat
import pipeline.compat.jobflow as jobflow_compat
import pipeline.compat.maggma as maggma_compat
import pipeline.compat.mongomock as mongomock_compat
from evaluation.compat import VerifiedRange
from pipeline.compat import UnverifiedLibrary, require


def test_the_installed_versions_are_the_verified_ones():
    ranges = [fireworks_compat.VERIFIED, jobflow_compat.VERIFIED, maggma_compat.VERIFIED]
    for verified in [*ranges, *mongomock_compat.VERIFIED]:
        assert verified.mismatch() is None, verified


def test_a_patch_refuses_a_library_outside_its_range():
    with pytest.raises(UnverifiedLibrary, match=r"my patch needs jobflow 0\.0\.1\.\.0\.0\.1"):
        require(VerifiedRange("jobflow", "0.0.1", "0.0.1"), "my patch")


def test_current_job_is_per_thread_and_the_same_object(monkeypatch):
    from jobflow import CURRENT_JOB

    jobflow_compat.per_thread_current_job()
    jobflow_compat.per_thread_current_job()  # once per process
    seen = {}

    def run(name: str, barrier: threading.Barrier) -> None:
        CURRENT_JOB.job = name
        barrier.wait()  # both threads have set theirs before either reads
        seen[name] = CURRENT_JOB.job
        CURRENT_JOB.reset()

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=run, args=(n, barrier)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"a": "a", "b": "b"}
    from jobflow.core import state

    assert state.CURRENT_JOB is CURRENT_JOB and CURRENT_JOB.job is None


def test_monty_connect_is_serialised_and_still_connects(tmp_path):
    from maggma.stores import MontyStore

    maggma_compat.serialise_monty_connect()
    maggma_compat.serialise_monty_connect()  # once per process
    assert MontyStore.connect.serialised
    stores = [
        MontyStore(f"c{i}", database_path=str(tmp_path), storage="sqlite", key="k")
        for i in range(4)
    ]
    threads = [threading.Thread(target=store.connect) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, store in enumerate(stores):
        store.update([{"k": i}])
        assert store.count() == 1


def test_monty_connect_is_serialised_between_processes(tmp_path):
    """Processes connecting to one embedded store at the same moment (the children of
    `benchmark chemsys --jobs`) never read its storage config half-written."""
    import subprocess
    import sys

    script = f"""
from pipeline.store import ResultsStore
for attempt in range(15):
    store = ResultsStore.embedded({str(tmp_path / "store")!r}).connect()
    store.close()
print("ok")
"""
    children = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         stderr=subprocess.STDOUT)
        for _ in range(3)
    ]  # fmt: skip
    outputs = [child.communicate(timeout=240)[0] for child in children]
    assert all(out.strip().endswith("ok") for out in outputs), outputs
    assert (tmp_path / "store" / maggma_compat.LOCK_FILE).is_file()


def test_fireworks_patches_in_a_fresh_process(tmp_path):
    # fireworks reads MONGOMOCK_SERVERSTORE_FILE at import: keep it out of this process
    script = f"""
from pathlib import Path
from pipeline.launchpad import LaunchPadLocation, open_launchpad
from pipeline.compat.fireworks import set_ping_interval
from pipeline.compat.mongomock import database_snapshot
import bson.json_util

with open_launchpad(LaunchPadLocation.parse("embedded:{tmp_path}/lp.json")) as launchpad:
    set_ping_interval(7)
    import fireworks.core.rocket as rocket
    assert rocket.PING_TIME_SECS == 7
    launchpad.add_wf(__import__("fireworks").Firework([], name="one"))
    on_disk = bson.json_util.loads(Path("{tmp_path}/lp.json").read_text())
    snapshot = bson.json_util.dumps(database_snapshot(launchpad.connection))
    assert on_disk == bson.json_util.loads(snapshot)
    assert [d["name"] for _, d in on_disk["fireworks"]["fireworks"]["documents"]] == ["one"]
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip().endswith("ok"), done.stderr[-2000:]
