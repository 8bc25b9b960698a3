"""maggma: ``MontyStore.connect`` serialised between threads and processes (verified on maggma
0.77.1).

``MontyStore.connect`` rewrites the MontyDB storage config file that ``MontyClient`` then reads;
two threads or processes connecting at once read it half-written ("Empty module name"; seen
with ``benchmark chemsys --jobs 2``, whose children connect at the same moment). maggma has no
lock of its own, so :func:`serialise_monty_connect` wraps ``connect`` in
:func:`monty_config_locked`; anything else that opens a ``MontyClient`` on a store's files
holds the same lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: threads are still serialised, processes are not
    fcntl = None  # type: ignore[assignment]

from evaluation.compat import VerifiedRange
from pipeline.compat import require

VERIFIED = VerifiedRange("maggma", "0.77.1", "0.77.1")
#: Held while a MontyDB storage config file is written or read.
MONTY_CONFIG_LOCK = threading.RLock()
#: The lock file beside a store's MontyDB files that serialises processes.
LOCK_FILE = ".monty-config.lock"
_depth = 0  # nesting of monty_config_locked in the thread holding MONTY_CONFIG_LOCK


@contextmanager
def monty_config_locked(database_path: str) -> Iterator[None]:
    """Hold the MontyDB storage config at ``database_path`` against other threads (an RLock)
    and other processes (``flock`` on :data:`LOCK_FILE` there), reentrantly."""
    global _depth
    with MONTY_CONFIG_LOCK, ExitStack() as held:
        if not (_depth or database_path == ":memory:" or fcntl is None):
            folder = Path(database_path)
            folder.mkdir(parents=True, exist_ok=True)  # as connect's set_storage would
            handle = held.enter_context(open(folder / LOCK_FILE, "a"))
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1


def serialise_monty_connect() -> None:
    """Make every ``MontyStore.connect`` in this process hold :func:`monty_config_locked` (once).

    Raises
    ------
    pipeline.compat.UnverifiedLibrary
        maggma is outside the verified range.
    """
    from maggma.stores import MontyStore

    if getattr(MontyStore.connect, "serialised", False):
        return
    require(VERIFIED, "serialising MontyStore.connect between threads")
    connect = MontyStore.connect

    def connect_serialised(self: MontyStore, force_reset: bool = False) -> None:
        with monty_config_locked(self.database_path):
            connect(self, force_reset=force_reset)

    connect_serialised.serialised = True  # type: ignore[attr-defined]
    MontyStore.connect = connect_serialised
