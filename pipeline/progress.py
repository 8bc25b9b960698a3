"""Per-stage progress of a campaign submitted to FireWorks (``crystalforge campaign status``).

Every Firework of a campaign carries ``campaign_id`` and ``stage`` in its spec (job metadata,
passed on to the jobs created at run time), and per-candidate DFT jobs ``candidate_id``; the
LaunchPad's Firework states are counted per stage from those. An embedded LaunchPad is read
from its last complete file, so status works while a worker runs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.launchpad import LaunchPadLocation, launchpad_documents

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b")
STAGES = (
    "generate",
    "prerelax",
    "filter",
    "hull reference",
    "hull",
    "select",
    "final",
    "final hull",
    "score",
    "record",
)
STATES = ("COMPLETED", "RUNNING", "RESERVED", "READY", "WAITING", "FIZZLED", "DEFUSED", "PAUSED")


@dataclass
class Failure:
    """A FIZZLED Firework: which job, for which candidate, and the last line of its error."""

    fw_id: int
    name: str
    stage: str
    candidate_id: str | None
    error: str


@dataclass
class Progress:
    """Firework states per stage, the failures, and the Fireworks rerun after a lost run."""

    stages: dict[str, Counter] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    rerun_after_lost: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A table a person reads: one row per stage, then the failures."""
        rows = []
        for stage, states in self.stages.items():
            counts = ", ".join(f"{states[s]} {s.lower()}" for s in STATES if states[s])
            rows.append(f"  {stage:<16} {counts}")
        for failure in self.failures:
            who = f" candidate {failure.candidate_id}" if failure.candidate_id else ""
            rows.append(
                f"  FIZZLED fw {failure.fw_id} {failure.name} [{failure.stage}]{who}: "
                f"{failure.error}"
            )
        if self.rerun_after_lost:
            rows.append(f"  rerun (earlier launches archived): Fireworks {self.rerun_after_lost}")
        return rows


def error_line(launch: dict[str, Any]) -> str:
    """The last line of a FIZZLED launch's traceback (the exception and its message)."""
    stored = (launch.get("action") or {}).get("stored_data") or {}
    trace = (stored.get("_exception") or {}).get("_stacktrace") or ""
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    # the exception's own line: messages may continue on further lines below it
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (raised or lines or [""])[-1]


def campaign_progress(location: LaunchPadLocation, campaign_id: str) -> Progress:
    """Count the states of ``campaign_id``'s Fireworks per stage (in campaign order)."""
    fireworks = launchpad_documents(location, "fireworks", {"spec.campaign_id": campaign_id})
    fizzled = [fw for fw in fireworks if fw.get("state") == "FIZZLED"]
    last_launches = [fw["launches"][-1] for fw in fizzled if fw.get("launches")]
    launches = (
        {  # one read for all failures (an embedded LaunchPad is one file)
            launch["launch_id"]: launch
            for launch in launchpad_documents(
                location, "launches", {"launch_id": {"$in": last_launches}}
            )
        }
        if last_launches
        else {}
    )
    counted: dict[str, Counter] = {}
    progress = Progress()
    for firework in fireworks:
        spec = firework.get("spec", {})
        stage = spec.get("stage") or "other"
        counted.setdefault(stage, Counter())[firework.get("state", "?")] += 1
        if firework.get("archived_launches"):
            progress.rerun_after_lost.append(firework["fw_id"])
    for firework in fizzled:
        spec = firework.get("spec", {})
        launch = launches.get((firework.get("launches") or [None])[-1], {})
        progress.failures.append(
            Failure(
                fw_id=firework["fw_id"],
                name=firework.get("name", ""),
                stage=spec.get("stage") or "other",
                candidate_id=spec.get("candidate_id"),
                error=error_line(launch),
            )
        )
    order = [s for s in STAGES if s in counted] + sorted(set(counted) - set(STAGES))
    progress.stages = {stage: counted[stage] for stage in order}
    progress.failures.sort(key=lambda f: f.fw_id)
    progress.rerun_after_lost.sort()
    return progress
