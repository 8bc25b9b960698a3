"""A FireWorks worker in this process (``crystalforge worker rapidfire``).

One or more rocket threads check Fireworks out of the LaunchPad and run them here, like
FireWorks' ``rlaunch rapidfire``, with what a campaign needs on top:

* **lost runs first.** On start (and on MongoDB while idle) Fireworks whose worker died are
  found with FireWorks' ``detect_lostruns`` and set to rerun. On an embedded LaunchPad a
  RUNNING Firework found on start is lost for certain (only one process can hold the
  LaunchPad), so it is rerun at once; on MongoDB, after ``lost_after`` seconds without a ping.
  A rerun job resumes from what its first run stored (relaxation shards, DFT rows).
* **threads.** Check-out is atomic (MongoDB's ``find_one_and_update``; the embedded LaunchPad
  serialises every call), so no Firework runs twice. Threads share the process's working
  directory; with one thread each launch gets its own ``launcher_*`` folder.
* **waiting for work.** A thread with nothing to run waits while another thread of this worker
  is busy (a running job may create new ones), or up to ``idle_timeout`` seconds for other
  workers (e.g. a CPU worker waiting for the GPU worker's generate job).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.compat.fireworks import set_ping_interval
from pipeline.compat.jobflow import per_thread_current_job
from pipeline.compat.maggma import serialise_monty_connect
from pipeline.launchpad import LaunchPadLocation, open_launchpad
from pipeline.progress import error_line


@dataclass
class WorkerSettings:
    """How a worker runs.

    Attributes
    ----------
    category
        Only Fireworks of this category (``gpu``, ``cpu``); empty: any.
    max_jobs
        Stop after this many launches (all threads together); ``None``: until no work is left.
    threads
        Rocket threads in this process.
    idle_timeout
        Seconds to keep polling for new work when nothing is ready and no thread is busy.
    poll_seconds
        Pause between polls while waiting.
    lost_after
        Seconds without a ping after which a RUNNING Firework counts as lost; ``None``: 0 on an
        embedded LaunchPad (see the module docstring), FireWorks' ``RUN_EXPIRATION_SECS`` on
        MongoDB.
    launch_root
        Where launch folders are made.
    """

    category: str = ""
    max_jobs: int | None = None
    threads: int = 1
    idle_timeout: float = 0.0
    poll_seconds: float = 2.0
    lost_after: float | None = None
    launch_root: Path = field(default_factory=Path.cwd)


@dataclass
class Launch:
    """One Firework this worker ran."""

    fw_id: int
    name: str
    stage: str
    candidate_id: str | None
    state: str
    seconds: float
    error: str = ""

    def line(self) -> str:
        where = self.stage + (f" {self.candidate_id}" if self.candidate_id else "")
        error = f": {self.error}" if self.error else ""
        return f"fw {self.fw_id} {self.name} [{where}] {self.state} in {self.seconds:.1f} s{error}"


@dataclass
class WorkerReport:
    """What a worker did: its launches and the lost Fireworks it set to rerun."""

    launches: list[Launch] = field(default_factory=list)
    lost_fw_ids: list[int] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(launch.state == state for launch in self.launches)


def make_threads_safe() -> None:
    """Two process-wide things in jobflow and maggma that rocket threads must not share.

    * jobflow keeps the running job and its store in one object (``CURRENT_JOB``); one job's
      end would reset the other thread's (:func:`pipeline.compat.jobflow.per_thread_current_job`).
    * maggma's ``MontyStore.connect`` rewrites the MontyDB storage config file that
      ``MontyClient`` then reads; two threads connecting at once read it half-written
      ("Empty module name"). Connecting is serialised
      (:func:`pipeline.compat.maggma.serialise_monty_connect`; reads and writes are not).
    """
    per_thread_current_job()
    serialise_monty_connect()


class _Worker:
    """The shared state of one worker's rocket threads."""

    def __init__(
        self,
        launchpad: Any,
        settings: WorkerSettings,
        log: Callable[[str], None],
        *,
        lost_after: float,
        shared_launchpad: bool,
    ):
        self.launchpad = launchpad
        self.settings = settings
        self.log = log
        self.lost_after = lost_after  # seconds without a ping that make a RUNNING Firework lost
        # Only a LaunchPad other processes use can lose runs while this worker lives (an
        # embedded one is checked once, on start, when every RUNNING Firework is lost).
        self.shared_launchpad = shared_launchpad
        self.lock = threading.Lock()
        self.started = 0  # launches begun or reserved
        self.busy = 0  # threads inside a launch attempt
        self.report = WorkerReport()
        self.name = f"crystalforge-{socket.gethostname()}-{os.getpid()}"

    def _reserve(self) -> bool:
        with self.lock:
            if self.settings.max_jobs is not None and self.started >= self.settings.max_jobs:
                return False
            self.started += 1
            self.busy += 1
            return True

    def _launch(self, fworker: Any) -> Launch | None:
        """Check out and run one Firework; ``None`` when none was ready."""
        from fireworks.core.rocket import Rocket

        single = self.settings.threads == 1
        here = Path.cwd()
        folder = self.settings.launch_root
        if single:  # its own folder, as rlaunch does; threads cannot chdir (process-wide)
            stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")
            folder = self.settings.launch_root / f"launcher_{stamp}"
            folder.mkdir(parents=True, exist_ok=True)
            os.chdir(folder)
        started = time.perf_counter()
        try:
            ran = Rocket(self.launchpad, fworker, None).run()
        finally:
            os.chdir(here)
            if single and not any(folder.iterdir()):
                folder.rmdir()
        if not ran:
            return None
        launch = self.launchpad.launches.find_one(
            {"fworker.name": fworker.name}, sort=[("launch_id", -1)]
        )
        firework = self.launchpad.fireworks.find_one({"fw_id": launch["fw_id"]})
        spec = firework.get("spec", {})
        return Launch(
            fw_id=launch["fw_id"],
            name=firework.get("name", ""),
            stage=spec.get("stage", ""),
            candidate_id=spec.get("candidate_id"),
            state=launch.get("state", "?"),
            seconds=time.perf_counter() - started,
            error=error_line(launch) if launch.get("state") == "FIZZLED" else "",
        )

    def detect_lost_runs(self, expiration: float) -> list[int]:
        _, lost, _ = self.launchpad.detect_lostruns(expiration_secs=expiration, rerun=True)
        if lost:
            self.log(f"lost runs (worker gone): Fireworks {sorted(lost)} set to rerun")
            with self.lock:
                self.report.lost_fw_ids.extend(lost)
        return lost

    def rocket_loop(self, index: int) -> None:
        from fireworks import FWorker

        fworker = FWorker(name=f"{self.name}-{index}", category=self.settings.category)
        idle_since: float | None = None
        while self._reserve():
            try:
                launch = self._launch(fworker)
            finally:
                with self.lock:
                    self.busy -= 1
            if launch is not None:
                with self.lock:
                    self.report.launches.append(launch)
                self.log(launch.line())
                idle_since = None
                continue
            with self.lock:
                self.started -= 1  # nothing ran: give the slot back
                others_busy = self.busy > 0
            idle_since = idle_since or time.monotonic()
            waited = time.monotonic() - idle_since
            if not others_busy and waited >= self.settings.idle_timeout:
                return
            time.sleep(self.settings.poll_seconds)
            if self.shared_launchpad and not others_busy:  # another worker may have died
                self.detect_lost_runs(self.lost_after)


def run_worker(
    location: LaunchPadLocation, settings: WorkerSettings, log: Callable[[str], None] = print
) -> WorkerReport:
    """Run Fireworks from ``location`` in this process until there is no work (or ``max_jobs``).

    Raises
    ------
    LaunchPadError
        When the LaunchPad cannot be opened (an embedded one held by another process).
    """
    if settings.threads < 1:
        raise ValueError(f"threads must be at least 1, got {settings.threads}")
    with open_launchpad(location) as launchpad:
        # imported only now: an embedded LaunchPad configures fireworks before its import
        from fireworks.fw_config import RUN_EXPIRATION_SECS

        if settings.lost_after is not None:
            lost_after = settings.lost_after
            # ping often enough that a live run is never mistaken for a lost one
            set_ping_interval(max(1, min(3600, int(lost_after / 4))))
        else:  # embedded: nothing else can be running (see the module docstring)
            lost_after = 0.0 if location.embedded else RUN_EXPIRATION_SECS
        worker = _Worker(
            launchpad, settings, log, lost_after=lost_after, shared_launchpad=not location.embedded
        )
        worker.detect_lost_runs(lost_after)
        if settings.threads == 1:
            worker.rocket_loop(0)
        else:
            make_threads_safe()
            threads = [
                threading.Thread(target=worker.rocket_loop, args=(i,), name=f"rocket-{i}")
                for i in range(settings.threads)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    return worker.report
