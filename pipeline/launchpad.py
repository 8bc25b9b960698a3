"""FireWorks LaunchPads: a MongoDB one from ``my_launchpad.yaml``, or an embedded one.

``embedded:PATH`` is a server-less LaunchPad on FireWorks' own mongomock persistence: the whole
LaunchPad database lives in memory and in the JSON file ``PATH``. Three things make it safe to
run campaigns on, which plain mongomock persistence is not:

* **one process at a time** — mongomock keeps the database in the memory of the process that
  opened it, so two processes would each work on a private copy and overwrite each other's
  file. An exclusive ``flock`` on ``PATH.lock`` (released by the kernel even on SIGKILL) turns
  a second opener away with the process id of the first;
* **every change is on disk** — mongomock persistence writes the file only when the process
  exits, so a killed worker would lose every state change it made (finished jobs would be
  READY again). :class:`EmbeddedLaunchPad` writes the file after each LaunchPad call that
  changes it, through a temporary file and an atomic rename, so the file is always whole;
* **atomic check-out between threads** — mongomock's ``find_one_and_update`` is not atomic, so
  two rocket threads could check out the same Firework. Every LaunchPad call holds one lock.

``MONGOMOCK_SERVERSTORE_FILE`` must be set before ``fireworks`` is imported (its ``fw_config``
reads it once); :func:`open_launchpad` does that, and refuses with a clear error when fireworks
was imported first. Reading progress (:func:`launchpad_documents`) needs no lock: it reads the
last complete file, so ``campaign status`` works while a worker runs.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.compat.mongomock import database_snapshot, take_over_persistence

EMBEDDED_PREFIX = "embedded:"
DATABASE_NAME = "fireworks"


class LaunchPadError(ValueError):
    """A LaunchPad that cannot be used as given (bad location, busy, misconfigured)."""


@dataclass(frozen=True)
class LaunchPadLocation:
    """Where a LaunchPad lives: ``embedded:PATH`` (a JSON file) or a ``my_launchpad.yaml``."""

    embedded: bool
    path: Path

    @classmethod
    def parse(cls, text: str) -> LaunchPadLocation:
        """``embedded:PATH`` or the path of a FireWorks LaunchPad YAML file.

        Raises
        ------
        LaunchPadError
            For an empty embedded path, a missing folder, or a missing/non-YAML LaunchPad file.
        """
        if text.startswith(EMBEDDED_PREFIX):
            raw = text[len(EMBEDDED_PREFIX) :].strip()
            if not raw:
                raise LaunchPadError("embedded LaunchPad needs a file: embedded:PATH")
            path = Path(raw).expanduser().resolve()
            if not path.parent.is_dir():
                raise LaunchPadError(f"embedded LaunchPad {path}: folder {path.parent} not found")
            return cls(embedded=True, path=path)
        path = Path(text).expanduser()
        if path.suffix not in (".yaml", ".yml"):
            raise LaunchPadError(
                f"--launchpad {text}: expected embedded:PATH or a my_launchpad.yaml file"
            )
        if not path.is_file():
            raise LaunchPadError(f"LaunchPad file {path} not found")
        return cls(embedded=False, path=path.resolve())

    def __str__(self) -> str:
        return f"{EMBEDDED_PREFIX}{self.path}" if self.embedded else str(self.path)


# --- the embedded LaunchPad -------------------------------------------------------------------


def _configure_mongomock(path: Path) -> None:
    """Point FireWorks' mongomock persistence at ``path``, before fireworks is imported."""
    if not path.exists():
        path.write_text("{}")
    wanted = str(path)
    if "fireworks.fw_config" in sys.modules:
        configured = sys.modules["fireworks.fw_config"].MONGOMOCK_SERVERSTORE_FILE
        if configured != wanted:
            raise LaunchPadError(
                f"fireworks was imported in this process before the embedded LaunchPad {path} "
                f"was opened (it is configured for {configured!r}); open the embedded LaunchPad "
                "in a fresh process (MONGOMOCK_SERVERSTORE_FILE must be set before fireworks "
                "is imported)"
            )
        return
    os.environ["MONGOMOCK_SERVERSTORE_FILE"] = wanted


def _lock_file(path: Path) -> int:
    """An exclusive lock on ``PATH.lock``, with this process's id written in it."""
    lock_path = path.with_name(path.name + ".lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise LaunchPadError(
            f"embedded LaunchPad {path} is open in process {holder}: it serves one process at a "
            "time (wait for that worker, or use a MongoDB LaunchPad for several processes)"
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, str(os.getpid()).encode(), 0)
    return descriptor


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def initialise_if_new(launchpad: Any) -> None:
    """``lpad reset`` a LaunchPad database that has never been used (no id counter, no
    Fireworks); one that holds anything is left alone."""
    if launchpad.fw_id_assigner.find_one({}) is None and launchpad.fireworks.find_one({}) is None:
        launchpad.reset("", require_password=False)


# LaunchPad methods that only read: no need to write the file after them.
_READ_ONLY = {
    "get_fw_by_id", "get_fw_dict_by_id", "get_wf_by_fw_id", "get_wf_by_fw_id_lzyfw",
    "get_fw_ids", "get_wf_ids", "get_launch_by_id", "get_logdir", "get_wf_summary_dict",
    "get_fw_ids_in_wfs", "get_tracker_data", "run_exists", "future_run_exists", "to_dict",
    "as_dict", "to_db_dict", "get_reservation_id_from_fw_id", "get_fw_ids_from_reservation_id",
    "get_new_launch_id", "get_new_fw_id",
}  # fmt: skip
# get_new_*_id change counters, but the calls that use the ids write the file right after.


@functools.cache
def _embedded_launchpad_class() -> type:
    """``EmbeddedLaunchPad``, built once, on first use: fireworks may only be imported after
    :func:`_configure_mongomock`."""
    from fireworks import LaunchPad

    class EmbeddedLaunchPad(LaunchPad):
        """A LaunchPad whose every call holds one lock and whose every change is on disk."""

        def __init__(self, path: Path) -> None:
            self._serialised = threading.RLock()
            self._depth = 0
            self._file = path
            super().__init__(host="localhost", name=DATABASE_NAME, strm_lvl="WARNING")
            # We write the file ourselves (atomically); mongomock's own write at exit would
            # not be atomic.
            take_over_persistence(self.connection)
            initialise_if_new(self)

        def save(self) -> None:
            """Write the whole LaunchPad database to its file (atomically)."""
            import bson.json_util

            with self._serialised:
                text = bson.json_util.dumps(database_snapshot(self.connection))
                _write_atomically(self._file, text)

    def serialised(name: str, method: Any) -> Any:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            with self._serialised:
                self._depth += 1
                try:
                    return method(self, *args, **kwargs)
                finally:
                    self._depth -= 1
                    if self._depth == 0 and name not in _READ_ONLY:
                        self.save()

        return call

    # Stock FireWorks can do neither of the two things each public method gets here: one lock
    # (mongomock is not atomic between threads, so a check-out could be given out twice) and a
    # file write after a change (mongomock persistence writes only at exit). Subclassing is
    # all it takes; nothing in FireWorks is patched.
    for name, member in vars(LaunchPad).items():
        if name.startswith("_") or not inspect.isfunction(member):
            continue  # static and class methods hold no LaunchPad state
        setattr(EmbeddedLaunchPad, name, serialised(name, member))
    return EmbeddedLaunchPad


_OPEN: dict[Path, list[Any]] = {}  # path -> [LaunchPad, lock descriptor, users]: one per process
_OPEN_LOCK = threading.Lock()


@contextmanager
def open_launchpad(location: LaunchPadLocation) -> Iterator[Any]:
    """The LaunchPad at ``location`` for the block; an embedded one is locked to this process
    until the last block using it ends (blocks in one process share one LaunchPad).

    Raises
    ------
    LaunchPadError
        When the embedded file is held by another process, fireworks was imported before the
        embedded LaunchPad could be configured, or the YAML file is not a LaunchPad.
    """
    if not location.embedded:
        from fireworks import LaunchPad

        try:
            launchpad = LaunchPad.from_file(str(location.path))
        except Exception as error:  # noqa: BLE001 - any parse error is the user's file
            raise LaunchPadError(f"cannot read LaunchPad {location.path}: {error}") from None
        from pymongo.errors import PyMongoError

        try:
            initialise_if_new(launchpad)
        except PyMongoError as error:
            raise LaunchPadError(f"cannot reach LaunchPad {location.path}: {error}") from None
        yield launchpad
        return
    with _OPEN_LOCK:
        if location.path not in _OPEN:
            _configure_mongomock(location.path)
            descriptor = _lock_file(location.path)
            try:
                launchpad = _embedded_launchpad_class()(location.path)
            except BaseException:
                os.close(descriptor)
                raise
            _OPEN[location.path] = [launchpad, descriptor, 0]
        held = _OPEN[location.path]
        held[2] += 1
    try:
        yield held[0]
    finally:
        with _OPEN_LOCK:
            held[2] -= 1
            held[0].save()
            if held[2] == 0:
                del _OPEN[location.path]
                os.close(held[1])  # releases the flock


# --- reading without opening --------------------------------------------------------------------


def launchpad_documents(location: LaunchPadLocation, collection: str, query: dict) -> list[dict]:
    """Documents of one LaunchPad collection matching ``query`` (read-only): dotted fields
    equal to a value, or ``{"$in": [...]}`` one of several.

    The embedded file is read as last written (no lock needed); MongoDB is queried directly.
    """
    if not location.embedded:
        from pymongo.errors import PyMongoError

        with open_launchpad(location) as launchpad:
            try:
                return list(launchpad.db[collection].find(query))
            except PyMongoError as error:
                raise LaunchPadError(f"cannot read LaunchPad {location.path}: {error}") from None
    import bson.json_util

    if not location.path.exists():
        return []
    database = bson.json_util.loads(location.path.read_text()).get(DATABASE_NAME, {})
    documents = [doc for _, doc in database.get(collection, {}).get("documents", [])]
    return [doc for doc in documents if all(_matches(_field(doc, k), v) for k, v in query.items())]


def _matches(value: Any, condition: Any) -> bool:
    if isinstance(condition, dict) and set(condition) == {"$in"}:
        return value in condition["$in"]
    return value == condition


def _field(document: dict, dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
