"""jobflow: a per-thread ``CURRENT_JOB`` (verified on jobflow 0.4.0).

jobflow keeps the running job and its store in one process-wide object, ``CURRENT_JOB`` (a
singleton ``State``); in a worker with several rocket threads one job's end would reset the
other thread's. jobflow offers no per-thread state and the object is imported by name
everywhere (``from jobflow import CURRENT_JOB``), so it cannot be replaced: its class is swapped
for a subclass whose ``job`` and ``store`` live per thread.
"""

from __future__ import annotations

import threading

from evaluation.compat import VerifiedRange
from pipeline.compat import require

VERIFIED = VerifiedRange("jobflow", "0.4.0", "0.4.0")


def per_thread_current_job() -> None:
    """Give ``jobflow.CURRENT_JOB`` a ``job`` and ``store`` per thread (once per process).

    Raises
    ------
    pipeline.compat.UnverifiedLibrary
        jobflow is outside the verified range.
    """
    from jobflow.core import state

    current = state.CURRENT_JOB
    if getattr(type(current), "per_thread", False):
        return
    require(VERIFIED, "a per-thread jobflow CURRENT_JOB")
    local = threading.local()

    def slot(name: str) -> property:
        return property(
            lambda self: getattr(local, name, None),
            lambda self, value: setattr(local, name, value),
        )

    current.__class__ = type(
        "PerThreadState",
        (type(current),),
        {"per_thread": True, "job": slot("job"), "store": slot("store")},
    )
