"""One line per campaign stage, for whoever watches the run.

Jobs report through the ``crystalforge.progress`` logger; ``crystalforge campaign run`` (and a
FireWorks worker) print those lines with the elapsed time, so a user sees each stage start and
end with its counts and seconds. Long loops inside a stage draw their own tqdm bar (N/M and an
ETA): relaxation shards, hull references.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

logger = logging.getLogger("crystalforge.progress")


def report(message: str) -> None:
    """One progress line (shown by :func:`show_progress`)."""
    logger.info(message)


class _Elapsed(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()

    def format(self, record: logging.LogRecord) -> str:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        return f"[{minutes:d}:{seconds:02d}] {record.getMessage()}"


@contextmanager
def show_progress(stream: TextIO | None = None) -> Iterator[None]:
    """Within the block, print progress lines to ``stream`` (stderr) prefixed with the
    elapsed ``[m:ss]``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Elapsed())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
