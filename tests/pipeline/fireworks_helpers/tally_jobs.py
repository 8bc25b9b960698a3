"""Tiny jobs for the FireWorks thread test: each appends who ran it to a tally file.

Imported by worker subprocesses (on their PYTHONPATH), so it must stay importable on its own.
"""

from __future__ import annotations

import os
import threading
import time

from jobflow import job


@job
def tally(number: int, tally_file: str) -> int:
    """Record that job ``number`` ran, in which thread; slow enough for threads to overlap."""
    time.sleep(0.05)
    with open(tally_file, "a", encoding="utf-8") as stream:
        stream.write(f"{number} {threading.current_thread().name}\n")
        stream.flush()
        os.fsync(stream.fileno())
    return number
