"""Resuming campaigns: fixed job ids, and the outputs finished jobs left in the store.

A rebuilt campaign graph has the same job ids (:func:`stable_uuid`), so a job of a resumed
campaign can find the output that an earlier, interrupted run of the *same* job (or of a job
it creates at run time) already stored, and skip that work. This module is the one place that
knows how: jobflow exposes the job store to a running job (``CURRENT_JOB.store``) only when the
job's ``config.expose_store`` is set (:func:`resumable`), and :func:`finished_output` reads
the latest output stored under an id. The science jobs call these in one line each.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, uuid5

from jobflow import Job
from monty.json import MontyDecoder


def stable_uuid(*parts: str) -> str:
    """A UUID fixed by its parts, so a rebuilt campaign graph has the same job ids."""
    return str(uuid5(NAMESPACE_URL, "crystalforge:" + "/".join(parts)))


def resumable(job: Job, uuid: str | None = None) -> Job:
    """``job``, given the fixed id ``uuid`` (if any) and access to the store at run time, so
    that it (or the jobs it creates) can call :func:`finished_output`; returns ``job``."""
    if uuid is not None:
        job.set_uuid(uuid)
    job.config.expose_store = True
    return job


def finished_output(uuid: str | None = None) -> Any | None:
    """The output a finished job with id ``uuid`` (default: the running job) left in the store,
    decoded as a reference to it would be (models and Structures rebuilt).

    ``None`` when there is no such output, or when the running job was not made
    :func:`resumable` (it cannot see the store).
    """
    from jobflow import CURRENT_JOB

    if CURRENT_JOB.store is None or CURRENT_JOB.job is None:
        return None
    query: dict[str, Any] = {"uuid": uuid or CURRENT_JOB.job.uuid}
    documents = list(CURRENT_JOB.store.query(query, properties=["index"]))
    if not documents:
        return None
    query["index"] = max(d["index"] for d in documents)
    document = CURRENT_JOB.store.query_one(query, load=True)
    if not document or document.get("output") is None:
        return None
    return MontyDecoder().process_decoded(document["output"])
