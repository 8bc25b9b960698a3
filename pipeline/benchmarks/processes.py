"""Run a benchmark's systems in several local processes that share one results store.

On a laptop most of a campaign's wall time runs on one core: MatterGen sampling, RSS and
substitution enumeration, the batched hull-reference relaxations, each with
``OMP_NUM_THREADS=1``. ``benchmark chemsys --jobs N`` therefore starts N copies of the command,
each taking every N-th system, and scores the whole benchmark once they end. Their campaigns
never overlap (their systems do not), and the embedded store is sqlite, which serialises the
writes of several processes; a MongoDB store takes them as it takes several FireWorks workers.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The child runs the same console entry point, so it applies the same process defaults.
_ENTRY = "from pipeline.cli import main; main()"


def partition(names: Sequence[str], jobs: int) -> list[list[str]]:
    """Every ``jobs``-th system to one process, in order (round-robin).

    Table D3 lists its systems in groups and by arity, so round-robin gives each process a mix
    of quick ternaries and slower quinaries rather than one process all of the slow ones.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    return [list(names[k::jobs]) for k in range(min(jobs, len(names)))]


@dataclass(frozen=True)
class ProcessResult:
    """How one child process ended."""

    systems: list[str]
    returncode: int


def run_processes(
    argv_for: Callable[[list[str]], list[str]],
    parts: Sequence[list[str]],
    say: Callable[[str], None] = print,
) -> list[ProcessResult]:
    """Run ``crystalforge <argv_for(part)>`` for every part at once; each output line is
    passed to ``say`` prefixed with its process (``[2/3] ...``). Returns when all have ended.

    Progress bars redraw with carriage returns; only the last drawing of each line is kept,
    so the combined output stays one readable line per event.
    """
    lock = threading.Lock()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _ENTRY, *argv_for(part)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        for part in parts
    ]

    def relay(position: int, child: subprocess.Popen) -> None:
        prefix = f"[{position + 1}/{len(children)}] "
        assert child.stdout is not None
        for line in child.stdout:
            text = line.rstrip("\n").split("\r")[-1].rstrip()
            if text:
                with lock:
                    say(prefix + text)

    readers = [
        threading.Thread(target=relay, args=(k, child), daemon=True)
        for k, child in enumerate(children)
    ]
    for reader in readers:
        reader.start()
    results = []
    for part, child, reader in zip(parts, children, readers, strict=True):
        results.append(ProcessResult(systems=list(part), returncode=child.wait()))
        reader.join()
    return results
