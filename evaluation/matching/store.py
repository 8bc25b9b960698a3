"""The on-disk reference store behind :class:`evaluation.matching.index.ReferenceIndex`.

One sqlite file per (reference content, matcher settings, format version). Each reference is one
row: its bucket key (reduced formula, or chemical system in disorder mode), its ``source:id``
label, the structure as given (oxidation states removed) and, once computed, its *prepared*
form — the Niggli + primitive reduced structure ``StructureMatcher`` would compute before every
comparison. Preparing is the expensive part (milliseconds per structure), so it is done lazily,
bucket by bucket, the first time a query needs the bucket, and written back: a first run over
10^6 references pays only for the formulas its queries actually have, and later runs pay nothing.

Structures are JSON; floats go through it as their shortest round-trip ``repr``, so a structure
read back is bit-for-bit the one written and verdicts never depend on the cache being warm. An
index on ``bucket`` makes reading a bucket O(log n + bucket size): queries never read the whole
file. No pickle anywhere. The file is validated (fingerprint, format version, row count,
``PRAGMA quick_check``) before it is trusted; anything unreadable raises
:class:`CorruptCacheError` so the caller rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure

#: Bump when the row layout or the preprocessing changes: old cache files are then rebuilt.
FORMAT_VERSION = 2


class CorruptCacheError(RuntimeError):
    """A reference cache file could not be read back (truncated, overwritten, foreign)."""


def structure_to_payload(structure: Structure) -> dict:
    """A JSON-able, exactly round-tripping form of a structure without oxidation states.

    ``{"lattice": 9 floats, "species": [site occupancies], "frac_coords": 3n floats}`` where an
    ordered site is its element symbol and a disordered one a list of ``[symbol, occupancy]``.
    """
    species: list[str | list[list]] = []
    for site in structure:
        occupancy = site.species
        if len(occupancy) == 1 and next(iter(occupancy.values())) == 1:
            species.append(str(next(iter(occupancy))))
        else:
            species.append([[str(sp), float(amount)] for sp, amount in occupancy.items()])
    return {
        "lattice": structure.lattice.matrix.ravel().tolist(),
        "species": species,
        "frac_coords": np.asarray(structure.frac_coords, dtype=float).ravel().tolist(),
    }


def payload_to_structure(payload: dict) -> Structure:
    """Inverse of :func:`structure_to_payload` (same lattice, sites, order and floats)."""
    species = [sp if isinstance(sp, str) else dict(sp) for sp in payload["species"]]
    frac_coords = np.asarray(payload["frac_coords"], dtype=float).reshape((-1, 3))
    if len(species) != len(frac_coords):
        raise ValueError("species and coordinates disagree in length")
    return Structure(Lattice(payload["lattice"]), species, frac_coords)


def content_fingerprint(
    labelled_structures: Iterable[tuple[str, Structure]], extra: dict
) -> tuple[str, int]:
    """sha256 over ``extra`` (settings, versions) and every label, lattice, site and occupancy.

    Returns
    -------
    tuple[str, int]
        The hex digest and the number of structures hashed.
    """
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    count = 0
    for label, structure in labelled_structures:
        digest.update(label.encode() + b"\0")
        digest.update(np.ascontiguousarray(structure.lattice.matrix, dtype=float).tobytes())
        digest.update(np.ascontiguousarray(structure.frac_coords, dtype=float).tobytes())
        for site in structure:
            digest.update(
                ";".join(f"{sp}:{amount!r}" for sp, amount in site.species.items()).encode() + b"|"
            )
        count += 1
    return digest.hexdigest(), count


_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE refs (
    position INTEGER PRIMARY KEY,
    bucket TEXT NOT NULL,
    label TEXT NOT NULL,
    payload TEXT NOT NULL,
    prepared TEXT
);
"""


def _dumps(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"))


def write_store(
    path: Path,
    fingerprint: str,
    n_references: int,
    rows: Iterable[tuple[str, str, dict]],
    meta: dict | None = None,
) -> None:
    """Write a store (nothing prepared yet) atomically: a temporary file, then ``os.replace``.

    Parameters
    ----------
    rows
        ``(bucket, label, payload)`` in reference order (the order decides which of several
        matching references :meth:`ReferenceStore.bucket` lists first).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per process and thread: two builders of the same store never share a temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    connection = sqlite3.connect(tmp)
    try:
        connection.executescript(_SCHEMA)
        count = 0
        batch: list[tuple[int, str, str, str]] = []
        for position, (bucket, label, payload) in enumerate(rows):
            batch.append((position, bucket, label, _dumps(payload)))
            count += 1
            if len(batch) >= 5000:
                connection.executemany("INSERT INTO refs VALUES (?, ?, ?, ?, NULL)", batch)
                batch.clear()
        connection.executemany("INSERT INTO refs VALUES (?, ?, ?, ?, NULL)", batch)
        if count != n_references:
            raise RuntimeError(f"wrote {count} references, expected {n_references}")
        # built after the bulk insert: faster than maintaining it row by row
        connection.execute("CREATE INDEX refs_by_bucket ON refs (bucket, position)")
        entries = {
            "format_version": str(FORMAT_VERSION),
            "fingerprint": fingerprint,
            "n_references": str(n_references),
            **{k: json.dumps(v) for k, v in (meta or {}).items()},
        }
        connection.executemany("INSERT INTO meta VALUES (?, ?)", entries.items())
        connection.commit()
    except BaseException:
        connection.close()
        tmp.unlink(missing_ok=True)
        raise
    connection.close()
    os.replace(tmp, path)


class ReferenceStore:
    """A store file, read one bucket at a time, with an in-memory LRU of decoded buckets.

    Parameters
    ----------
    path
        The sqlite file.
    fingerprint
        What its ``meta.fingerprint`` must be; anything else raises :class:`CorruptCacheError`.
    prepare
        Raw structure → prepared (reduced) structure; used for rows not prepared yet.
    wrap
        Applied to each prepared structure before it is cached (so per-structure data computed
        by the caller lives as long as the bucket stays in the LRU).
    writable
        Whether prepared rows may be written back (the owning process; workers only read).
    verify
        Run ``PRAGMA quick_check`` on opening (workers skip it: their parent just did).
    max_cached_references
        How many decoded references the LRU may hold across buckets (the most recent bucket is
        always kept, however large).
    """

    def __init__(
        self,
        path: Path,
        fingerprint: str,
        prepare: Callable[[Structure], Structure],
        wrap: Callable[[Structure], Any] | None = None,
        writable: bool = False,
        verify: bool = True,
        max_cached_references: int = 200_000,
    ) -> None:
        self.path = Path(path)
        self.max_cached_references = max_cached_references
        self._prepare = prepare
        self._wrap = wrap or (lambda structure: structure)
        self._buckets: OrderedDict[str, list[tuple[str, Any]]] = OrderedDict()
        self._cached_references = 0
        #: buckets decoded from disk so far, and references prepared in this process
        self.bucket_loads = 0
        self.prepared_here = 0
        self._connection: sqlite3.Connection | None = None
        try:
            uri = f"file:{self.path}?mode={'rw' if writable else 'ro'}"
            self._connection = sqlite3.connect(uri, uri=True, timeout=120)
            meta = dict(self._connection.execute("SELECT name, value FROM meta"))
            if meta.get("format_version") != str(FORMAT_VERSION):
                raise CorruptCacheError(f"{path}: format version {meta.get('format_version')}")
            if meta.get("fingerprint") != fingerprint:
                raise CorruptCacheError(f"{path}: fingerprint does not match the reference")
            self.n_references = int(meta["n_references"])
            (count,) = self._connection.execute("SELECT COUNT(*) FROM refs").fetchone()
            if count != self.n_references:
                raise CorruptCacheError(f"{path}: {count} rows, meta says {self.n_references}")
            if verify:
                (check,) = self._connection.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise CorruptCacheError(f"{path}: sqlite quick_check says {check}")
        except (sqlite3.Error, KeyError, ValueError) as error:
            self.close()
            raise CorruptCacheError(f"{path}: {error}") from error
        except CorruptCacheError:
            self.close()
            raise

    def close(self) -> None:
        """Close the sqlite connection (idempotent)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _query(self, sql: str, parameters: Sequence = ()) -> list[tuple]:
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise CorruptCacheError(f"{self.path}: {error}") from error

    def bucket_sizes(self) -> dict[str, int]:
        """Number of references per bucket key."""
        return dict(self._query("SELECT bucket, COUNT(*) FROM refs GROUP BY bucket"))

    def unprepared(self, keys: Iterable[str]) -> list[tuple[int, dict]]:
        """``(position, raw payload)`` of the rows of these buckets not prepared yet."""
        keys = list(keys)
        rows: list[tuple[int, dict]] = []
        for start in range(0, len(keys), 500):  # sqlite limits the number of parameters
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            found = self._query(
                "SELECT position, payload FROM refs "
                f"WHERE prepared IS NULL AND bucket IN ({marks}) ORDER BY position",
                part,
            )
            rows += [(position, self._decode(payload)) for position, payload in found]
        return rows

    def save_prepared(self, rows: Sequence[tuple[int, dict]]) -> bool:
        """Write prepared payloads back; ``False`` (and nothing written) if the file refuses."""
        try:
            with self._connection:
                self._connection.executemany(
                    "UPDATE refs SET prepared = ? WHERE position = ?",
                    [(_dumps(payload), position) for position, payload in rows],
                )
        except sqlite3.OperationalError as error:  # read-only folder, lock held for minutes
            warnings.warn(f"{self.path}: prepared references not saved ({error})", stacklevel=2)
            return False
        return True

    def _decode(self, text: str) -> dict:
        try:
            payload = json.loads(text)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
            return payload
        except ValueError as error:
            raise CorruptCacheError(f"{self.path}: unreadable row: {error}") from error

    def bucket(self, key: str) -> list[tuple[str, Any]]:
        """``(label, wrap(prepared structure))`` of every reference in a bucket, in order.

        Rows not prepared yet (another process is filling them, or the file is read-only) are
        prepared here and not saved.
        """
        cached = self._buckets.get(key)
        if cached is not None:
            self._buckets.move_to_end(key)
            return cached
        rows = self._query(
            "SELECT label, payload, prepared FROM refs WHERE bucket = ? ORDER BY position", (key,)
        )
        entries = []
        try:
            for label, payload, prepared in rows:
                if prepared is None:
                    structure = self._prepare(payload_to_structure(self._decode(payload)))
                    self.prepared_here += 1
                else:
                    structure = payload_to_structure(self._decode(prepared))
                entries.append((label, self._wrap(structure)))
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptCacheError(f"{self.path}: bucket {key!r} unreadable: {error}") from error
        self.bucket_loads += 1
        self._buckets[key] = entries
        self._cached_references += len(entries)
        while self._cached_references > self.max_cached_references and len(self._buckets) > 1:
            _, evicted = self._buckets.popitem(last=False)
            self._cached_references -= len(evicted)
        return entries


def chunk_by_weight(items: Sequence[tuple[str, int]], n_chunks: int) -> Iterator[list[str]]:
    """Split ``(key, weight)`` items into about ``n_chunks`` lists of similar total weight.

    Largest first into the lightest chunk (the LPT heuristic), so one huge bucket does not
    leave the other workers idle behind it.
    """
    chunks: list[tuple[int, list[str]]] = [(0, []) for _ in range(max(1, n_chunks))]
    for key, weight in sorted(items, key=lambda kw: -kw[1]):
        lightest = min(range(len(chunks)), key=lambda i: chunks[i][0])
        total, keys = chunks[lightest]
        keys.append(key)
        chunks[lightest] = (total + weight, keys)
    # heaviest first: the pool starts them first, and the light ones fill the gaps at the end
    yield from (keys for _, keys in sorted(chunks, key=lambda c: -c[0]) if keys)
