"""maggma: ``MontyStore.connect`` serialised between threads (verified on maggma 0.77.1).

``MontyStore.connect`` rewrites the MontyDB storage config file that ``MontyClient`` then reads;
two threads connecting at once read it half-written ("Empty module name"). maggma has no lock
of its own, so :func:`serialise_monty_connect` wraps ``connect`` in :data:`MONTY_CONFIG_LOCK`;
anything else that opens a ``MontyClient`` on a store's files holds the same lock.
"""

from __future__ import annotations

import threading

from evaluation.compat import VerifiedRange
from pipeline.compat import require

VERIFIED = VerifiedRange("maggma", "0.77.1", "0.77.1")
#: Held while a MontyDB storage config file is written or read.
MONTY_CONFIG_LOCK = threading.RLock()


def serialise_monty_connect() -> None:
    """Make every ``MontyStore.connect`` in this process hold :data:`MONTY_CONFIG_LOCK` (once).

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
        with MONTY_CONFIG_LOCK:
            connect(self, force_reset=force_reset)

    connect_serialised.serialised = True  # type: ignore[attr-defined]
    MontyStore.connect = connect_serialised
