"""mongomock persistence: the in-memory server behind an embedded LaunchPad (verified on
mongomock 4.3.0 with mongomock-persistence 0.0.5, as FireWorks 2.1.4 uses them).

FireWorks' mongomock LaunchPad writes its database file only when the process exits, and not
atomically. :class:`pipeline.launchpad.EmbeddedLaunchPad` writes it itself after each change;
for that it needs the server store behind the client (``MongoClient._store``): its
``to_dict()`` (what persistence writes) and its exit-time writer, which it switches off.
"""

from __future__ import annotations

from typing import Any

from evaluation.compat import VerifiedRange
from pipeline.compat import require

VERIFIED = (
    VerifiedRange("mongomock", "4.3.0", "4.3.0"),
    VerifiedRange("mongomock-persistence", "0.0.5", "0.0.5"),
)


def take_over_persistence(client: Any) -> None:
    """Stop mongomock persistence writing ``client``'s database file at exit (we write it).

    Raises
    ------
    pipeline.compat.UnverifiedLibrary
        mongomock or mongomock-persistence is outside the verified range.
    """
    for verified in VERIFIED:
        require(verified, "writing the embedded LaunchPad file ourselves")
    client._store._finalizer.detach()


def database_snapshot(client: Any) -> dict[str, Any]:
    """Every database of ``client``, as mongomock persistence writes it to its file."""
    return client._store.to_dict()
