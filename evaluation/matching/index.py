"""Uniqueness and novelty by structure matching, fast enough for 10^6 references.

The paper (Supplementary D.3.1) calls two crystals the same when pymatgen's ``StructureMatcher``
with ``ltol=0.2, stol=0.3, angle_tol=5`` fits them; a structure is *unique* when it matches no
earlier structure of the same set and *novel* when it matches no reference structure. Matching
only ever succeeds between structures of the same reduced formula (the matcher compares the
fractional compositions first), so everything here is bucketed by formula and only compared
within a bucket — the verdicts are exactly those of ``StructureMatcher.fit`` on every pair.

Conventions
-----------
* Oxidation states are removed before matching (elements are compared, ``ElementComparator``).
* ``fit(query, reference)`` in that order: for novelty the query is the new structure; for
  uniqueness the later structure is the query and each earlier representative the reference.
* Per structure, what ``fit`` would recompute for every pair — the Niggli + primitive reduction —
  is done once (and, for references, cached on disk); pairs are then compared with the verdict
  of ``fit(..., skip_structure_reduction=True)``, the same bit for bit
  (:class:`evaluation.matching.core.PairFitter`).
* With ``disorder=True`` the verdict is that of the ordered–disordered matcher of
  :mod:`evaluation.matching.disorder` (MatterGen's ``DisorderedStructureMatcher``: two ordered
  structures need the same reduced formula; an ordered approximant of a disordered parent has a
  different formula but the same elements), and buckets are chemical systems, which that matcher
  never crosses. Queries are prepared from the whole structure and keep it (their disordered
  counterpart is built from it); references, also those prepared and cached on disk, only need
  their reduced form.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import pymatgen.core
from pymatgen.core import Structure
from tqdm.auto import tqdm

from evaluation.matching.core import (
    MatcherSettings,
    PairFitter,
    PreparedStructure,
    bucket_key,
    make_disorder_matcher,
    make_matcher,
)
from evaluation.matching.disorder import without_oxidation_states
from evaluation.matching.store import (
    FORMAT_VERSION,
    CorruptCacheError,
    ReferenceStore,
    chunk_by_weight,
    content_fingerprint,
    payload_to_structure,
    structure_to_payload,
    write_store,
)
from evaluation.paths import cache_dir
from evaluation.records import CrystalRecord

__all__ = [
    "CorruptCacheError",
    "MatcherSettings",
    "ReferenceIndex",
    "bucket_key",
    "find_duplicates",
    "make_disorder_matcher",
    "make_matcher",
]


def _resolve_n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs < 1:
        return os.cpu_count() or 1
    return n_jobs


# ---------------------------------------------------------------------------------------------
# Uniqueness


def _duplicates_in_buckets(
    settings_dict: dict, buckets: list[list[tuple[int, dict]]]
) -> list[tuple[int, int | None]]:
    """Greedy first-of-its-kind grouping within each bucket (runs in workers too)."""
    fitter = PairFitter(MatcherSettings(**settings_dict))
    results: list[tuple[int, int | None]] = []
    for members in buckets:
        representatives: list[tuple[int, PreparedStructure]] = []
        for index, payload in members:
            candidate = fitter.prepare(payload_to_structure(payload))
            duplicate_of = next(
                (rep_index for rep_index, rep in representatives if fitter.fit(candidate, rep)),
                None,
            )
            if duplicate_of is None:
                representatives.append((index, candidate))
            results.append((index, duplicate_of))
    return results


def find_duplicates(
    structures: Sequence[Structure],
    settings: MatcherSettings | None = None,
    n_jobs: int | None = 1,
) -> list[int | None]:
    """For each structure, the index of the earlier structure it duplicates, or ``None``.

    Structures are taken in order; each is compared (as the ``fit`` query) with the
    *representatives* of its bucket — the structures so far that duplicated nothing — and points at
    the first one it matches. So a structure is unique (``None``) iff it is the first member of its
    match class, and every duplicate points at a unique structure with a lower index. This is the
    greedy grouping of ``StructureMatcher.group_structures`` in input order, except that ``fit``
    is called as ``fit(later, representative)`` — the direction novelty uses (``fit`` is
    asymmetric only in rare edge cases).

    Parameters
    ----------
    structures
        The set, e.g. generated samples in sampling order.
    settings
        Matcher settings; the paper's by default.
    n_jobs
        Worker processes (``None`` or ``-1``: all cores); buckets are split across workers.

    Returns
    -------
    list[int | None]
        Same length as ``structures``.
    """
    settings = settings or MatcherSettings()
    stripped = [without_oxidation_states(s) for s in structures]
    buckets: dict[str, list[int]] = defaultdict(list)
    for index, structure in enumerate(stripped):
        buckets[bucket_key(structure, settings.disorder)].append(index)
    duplicate_of: list[int | None] = [None] * len(structures)
    # singletons are unique without any comparison (or reduction)
    multi = [members for members in buckets.values() if len(members) > 1]
    tasks = [[(i, structure_to_payload(stripped[i])) for i in members] for members in multi]
    settings_dict = asdict(settings)
    n_workers = min(_resolve_n_jobs(n_jobs), max(1, len(tasks)))
    progress = tqdm(total=len(tasks), desc="uniqueness", unit="bucket", disable=None)
    if n_workers == 1:
        for task in tasks:
            for index, earlier in _duplicates_in_buckets(settings_dict, [task]):
                duplicate_of[index] = earlier
            progress.update()
    else:
        weights = [(str(k), len(t) ** 2) for k, t in enumerate(tasks)]
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            futures = {
                pool.submit(
                    _duplicates_in_buckets, settings_dict, [tasks[int(k)] for k in keys]
                ): len(keys)
                for keys in chunk_by_weight(weights, 4 * n_workers)
            }
            for future in as_completed(futures):
                for index, earlier in future.result():
                    duplicate_of[index] = earlier
                progress.update(futures[future])
    progress.close()
    return duplicate_of


# ---------------------------------------------------------------------------------------------
# Novelty

#: Per-process state of query workers: one opened store and fitter per cache file.
_WORKER_STORES: dict[tuple[int, str], tuple[ReferenceStore, PairFitter]] = {}


def _prepared_payloads(settings_dict: dict, rows: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Prepare raw reference rows (runs in workers): ``(position, prepared payload)``."""
    fitter = PairFitter(MatcherSettings(**settings_dict))
    return [
        (position, structure_to_payload(fitter.prepare(payload_to_structure(payload)).reduced))
        for position, payload in rows
    ]


def _match_in_store(
    store: ReferenceStore,
    fitter: PairFitter,
    key: str,
    queries: list[tuple[int, dict]],
) -> list[tuple[int, str | None]]:
    """First matching reference label of each query of one bucket."""
    references: list[tuple[str, PreparedStructure]] = store.bucket(key) if queries else []
    results: list[tuple[int, str | None]] = []
    for index, payload in queries:
        query = fitter.prepare(payload_to_structure(payload))
        match = next((label for label, ref in references if fitter.fit(query, ref)), None)
        results.append((index, match))
    return results


def _match_chunk_worker(
    path: str,
    fingerprint: str,
    settings_dict: dict,
    tasks: list[tuple[str, list[tuple[int, dict]]]],
) -> list[tuple[int, str | None]]:
    state_key = (os.getpid(), path)
    if state_key not in _WORKER_STORES:
        fitter = PairFitter(MatcherSettings(**settings_dict))
        store = ReferenceStore(
            Path(path),
            fingerprint,
            prepare=lambda s: fitter.prepare(s).reduced,
            wrap=PreparedStructure,
            verify=False,
            max_cached_references=50_000,
        )
        _WORKER_STORES[state_key] = (store, fitter)
    store, fitter = _WORKER_STORES[state_key]
    results: list[tuple[int, str | None]] = []
    for key, queries in tasks:
        results.extend(_match_in_store(store, fitter, key, queries))
    return results


class ReferenceIndex:
    """Novelty look-ups against a reference set, bucketed and cached on disk.

    Build it with :meth:`build`; ``match``/``matches``/``novel`` then compare each query only with
    the references of its bucket, in reference order, and report the first that fits — the
    verdict of ``StructureMatcher.fit(query, reference)`` looped over every reference.

    References are prepared (reduced) lazily, a bucket at a time, when a query first needs the
    bucket; the prepared forms are saved in the cache file, so later runs reuse them.

    Attributes
    ----------
    settings
        The matcher settings it was built with.
    path
        The sqlite store (under ``cache_dir()/matching/`` by default).
    cache_status
        ``"built"`` (no usable file), ``"reused"`` (a valid file was found) or ``"rebuilt"`` (a
        file was there but corrupt or mismatched, or failed while reading; it was replaced).
    references_prepared
        References this object has reduced (and saved) so far; 0 while everything needed was
        already in the cache.
    """

    def __init__(
        self,
        records: Sequence[CrystalRecord],
        settings: MatcherSettings,
        path: Path,
        fingerprint: str,
    ) -> None:
        self.settings = settings
        self.path = path
        self.fingerprint = fingerprint
        self.cache_status: Literal["built", "reused", "rebuilt"] = "built"
        self.references_prepared = 0
        self._records = records  # kept (not copied) so a store that turns out corrupt is rebuilt
        self._fitter = PairFitter(settings)
        self._store = self._open_or_build()

    @classmethod
    def build(
        cls,
        records: Sequence[CrystalRecord],
        settings: MatcherSettings | None = None,
        cache: bool | Path = True,
        *,
        disorder: bool | None = None,
        precompute: bool = False,
        n_jobs: int | None = 1,
    ) -> ReferenceIndex:
        """Index ``records``, reusing the on-disk cache when it holds exactly this reference.

        Parameters
        ----------
        records
            The reference set; labels are ``record.label`` (``source:id``).
        settings
            Matcher settings (the paper's by default).
        cache
            ``True``: cache under ``cache_dir()/matching/``; a folder: cache there; ``False``: a
            temporary file removed with the index.
        disorder
            Overrides ``settings.disorder`` when given.
        precompute
            Prepare every reference now instead of bucket by bucket on demand (e.g. to warm a
            shared cache once).
        n_jobs
            Worker processes for ``precompute`` (``None``/``-1``: all cores).
        """
        settings = settings or MatcherSettings()
        if disorder is not None:
            settings = replace(settings, disorder=disorder)
        extra = {
            "format_version": FORMAT_VERSION,
            "pymatgen": pymatgen.core.__version__,  # reductions may change between versions
            "settings": asdict(settings),
        }
        fingerprint, _ = content_fingerprint(((r.label, r.structure) for r in records), extra)
        if cache is False:
            folder = Path(tempfile.mkdtemp(prefix="crystalforge-matching-"))
            path = folder / "references.sqlite"
        else:
            folder = cache_dir() / "matching" if cache is True else Path(cache)
            path = folder / f"references-{fingerprint[:32]}.sqlite"
        index = cls(records, settings, path, fingerprint)
        if cache is False:
            weakref.finalize(index, _remove_folder, folder)
        if precompute:
            index._prepare_buckets(list(index._bucket_sizes), n_jobs)
        return index

    def __len__(self) -> int:
        return self._store.n_references

    @property
    def bucket_loads(self) -> int:
        """Buckets read from disk in this process (LRU misses)."""
        return self._store.bucket_loads

    def _open_store(self) -> ReferenceStore:
        fitter = self._fitter  # not self: no reference cycle, so a temporary index dies promptly
        return ReferenceStore(
            self.path,
            self.fingerprint,
            prepare=lambda s: fitter.prepare(s).reduced,
            wrap=PreparedStructure,
            writable=True,
        )

    def _open_or_build(self) -> ReferenceStore:
        if self.path.exists():
            try:
                store = self._open_store()
                self.cache_status = "reused"
                return store
            except CorruptCacheError:
                self.cache_status = "rebuilt"
        self._write()
        return self._open_store()

    def _write(self) -> None:
        disorder = self.settings.disorder

        def rows():
            for record in tqdm(self._records, desc="indexing references", disable=None):
                stripped = without_oxidation_states(record.structure)
                yield bucket_key(stripped, disorder), record.label, structure_to_payload(stripped)

        write_store(
            self.path,
            self.fingerprint,
            len(self._records),
            rows(),
            meta={"settings": asdict(self.settings)},
        )

    def _rebuild(self) -> None:
        self._store.close()
        self.path.unlink(missing_ok=True)
        self.cache_status = "rebuilt"
        self._write()
        self._store = self._open_store()
        self.__dict__.pop("_bucket_sizes", None)

    def _prepare_buckets(self, keys: list[str], n_jobs: int | None) -> None:
        """Reduce the references of these buckets that are not prepared yet, and save them."""
        missing = self._store.unprepared(keys)
        if not missing:
            return
        settings_dict = asdict(self.settings)
        n_workers = min(_resolve_n_jobs(n_jobs), max(1, len(missing) // 50))
        progress = tqdm(total=len(missing), desc="preparing references", disable=None)
        chunks = list(_chunked(missing, 100))
        if n_workers == 1:
            done = (_prepared_payloads(settings_dict, chunk) for chunk in chunks)
            for prepared in done:
                self._store.save_prepared(prepared)
                progress.update(len(prepared))
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                futures = [pool.submit(_prepared_payloads, settings_dict, c) for c in chunks]
                for future in as_completed(futures):
                    prepared = future.result()
                    self._store.save_prepared(prepared)  # one writer: this process
                    progress.update(len(prepared))
        progress.close()
        self.references_prepared += len(missing)

    def match(self, structure: Structure) -> str | None:
        """Label (``source:id``) of the first reference ``structure`` matches, else ``None``."""
        return self.matches([structure], n_jobs=1)[0]

    def novel(self, structures: Sequence[Structure], n_jobs: int | None = 1) -> list[bool]:
        """Whether each structure matches no reference."""
        return [m is None for m in self.matches(structures, n_jobs=n_jobs)]

    def matches(self, structures: Sequence[Structure], n_jobs: int | None = 1) -> list[str | None]:
        """The first matching reference label of each structure (``None``: novel).

        Queries are grouped by bucket so each bucket is read once; with ``n_jobs > 1`` the
        buckets' references are prepared in parallel if needed, then groups of buckets go to
        worker processes, each opening the store read-only.
        """
        try:
            return self._matches(structures, n_jobs)
        except CorruptCacheError:
            # the file went bad under us (disk, another process): rebuild once, never trust it
            self._rebuild()
            return self._matches(structures, n_jobs)

    def _matches(self, structures: Sequence[Structure], n_jobs: int | None) -> list[str | None]:
        sizes = self._bucket_sizes
        by_bucket: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        results: list[str | None] = [None] * len(structures)
        for index, structure in enumerate(structures):
            stripped = without_oxidation_states(structure)
            key = bucket_key(stripped, self.settings.disorder)
            if key in sizes:  # a formula absent from the reference is novel without a look
                by_bucket[key].append((index, structure_to_payload(stripped)))
        self._prepare_buckets(list(by_bucket), n_jobs)
        n_workers = min(_resolve_n_jobs(n_jobs), max(1, len(by_bucket)))
        progress = tqdm(total=len(structures), desc="novelty", unit="structure", disable=None)
        progress.update(len(structures) - sum(len(q) for q in by_bucket.values()))
        if n_workers == 1:
            for key, queries in by_bucket.items():
                for index, label in _match_in_store(self._store, self._fitter, key, queries):
                    results[index] = label
                progress.update(len(queries))
        else:
            n_chunks = 4 * n_workers  # small enough for the pool to balance them dynamically
            slices = _query_slices(by_bucket, sizes, n_chunks)
            weights = [(str(i), weight) for i, (_, _, weight) in enumerate(slices)]
            settings_dict = asdict(self.settings)
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                futures = {}
                for ids in chunk_by_weight(weights, n_chunks):
                    tasks = [slices[int(i)][:2] for i in ids]
                    future = pool.submit(
                        _match_chunk_worker, str(self.path), self.fingerprint, settings_dict, tasks
                    )
                    futures[future] = sum(len(q) for _, q in tasks)
                for future in as_completed(futures):
                    for index, label in future.result():
                        results[index] = label
                    progress.update(futures[future])
        progress.close()
        return results

    @cached_property
    def _bucket_sizes(self) -> dict[str, int]:
        return self._store.bucket_sizes()


#: Rough cost of preparing a query of 20 sites (its reduction), in units of one reference of its
#: bucket (most references are dismissed by the size and lattice checks in microseconds). The
#: reduction grows about quadratically with the number of sites.
_QUERY_PREPARATION_COST = 300


def _query_cost(n_sites: int, bucket_size: int) -> float:
    return _QUERY_PREPARATION_COST * max(1.0, (n_sites / 20) ** 2) + bucket_size


def _query_slices(
    by_bucket: dict[str, list[tuple[int, dict]]], sizes: dict[str, int], n_chunks: int
) -> list[tuple[str, list[tuple[int, dict]], float]]:
    """``(bucket, queries, estimated cost)`` work items for the worker pool.

    A bucket whose queries would cost more than one chunk's share (the 2,000 carbon polymorphs
    of a reference, or a 200-atom query) is cut into several slices of its queries, so it does
    not leave the other workers idle; a worker that gets two slices of a bucket reads it once.
    """
    costs = {
        key: [_query_cost(len(payload["species"]), sizes[key]) for _, payload in queries]
        for key, queries in by_bucket.items()
    }
    share = sum(sum(c) for c in costs.values()) / max(1, n_chunks)
    slices = []
    for key, queries in by_bucket.items():
        part: list[tuple[int, dict]] = []
        part_cost = 0.0
        for query, cost in zip(queries, costs[key], strict=True):
            part.append(query)
            part_cost += cost
            if part_cost >= share:
                slices.append((key, part, part_cost))
                part, part_cost = [], 0.0
        if part:
            slices.append((key, part, part_cost))
    return slices


def _chunked(iterable, size: int):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _remove_folder(folder: Path) -> None:
    for child in folder.glob("*"):
        child.unlink(missing_ok=True)
    folder.rmdir()
