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
  is done once (and, for references, cached on disk); pairs are then compared with
  ``fit(..., skip_structure_reduction=True)``, which gives the same verdict bit for bit.
* With ``disorder=True`` the ordered–disordered matcher of :mod:`evaluation.disorder` is used and
  buckets are chemical systems (an ordered approximant has a different formula from its
  disordered parent, but the same elements).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
import weakref
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pymatgen.core
from pymatgen.core import Structure
from pymatgen.core.structure_matcher import ElementComparator, StructureMatcher
from tqdm.auto import tqdm

from evaluation.disorder import DisorderAwareMatcher
from evaluation.matching_store import (
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


@dataclass(frozen=True)
class MatcherSettings:
    """When two crystals count as the same (paper, Supplementary D.3.1 and D.4).

    Attributes
    ----------
    ltol, stol, angle_tol, primitive_cell, scale, attempt_supercell, allow_subset
        pymatgen ``StructureMatcher`` arguments; the defaults are the paper's. ``allow_subset``
        must stay ``False`` (a subset match crosses formulas, which bucketing forbids).
    disorder
        Use the ordered–disordered matcher (:class:`evaluation.disorder.DisorderAwareMatcher`).
    composition_atol, composition_rtol, radius_tolerance, electronegativity_tolerance
        Tolerances of the ordered–disordered matcher (used only with ``disorder``).
    """

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    primitive_cell: bool = True
    scale: bool = True
    attempt_supercell: bool = False
    allow_subset: bool = False
    disorder: bool = False
    composition_atol: float = 1e-2
    composition_rtol: float = 1e-1
    radius_tolerance: float = 0.3
    electronegativity_tolerance: float = 1.0

    def __post_init__(self) -> None:
        for name in ("ltol", "stol", "angle_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MatcherSettings.{name} must be > 0, got {getattr(self, name)}")
        if self.allow_subset:
            raise ValueError(
                "MatcherSettings.allow_subset must be False: subset matches cross formulas, "
                "which formula bucketing cannot see"
            )


def make_matcher(settings: MatcherSettings | None = None) -> StructureMatcher:
    """The plain ``StructureMatcher`` these settings describe (``ElementComparator``)."""
    s = settings or MatcherSettings()
    return StructureMatcher(
        ltol=s.ltol,
        stol=s.stol,
        angle_tol=s.angle_tol,
        primitive_cell=s.primitive_cell,
        scale=s.scale,
        attempt_supercell=s.attempt_supercell,
        allow_subset=s.allow_subset,
        comparator=ElementComparator(),
    )


def make_disorder_matcher(settings: MatcherSettings | None = None) -> DisorderAwareMatcher:
    """The ordered–disordered matcher these settings describe (whatever ``settings.disorder``)."""
    s = settings or MatcherSettings()
    return DisorderAwareMatcher(
        ltol=s.ltol,
        stol=s.stol,
        angle_tol=s.angle_tol,
        primitive_cell=s.primitive_cell,
        scale=s.scale,
        composition_atol=s.composition_atol,
        composition_rtol=s.composition_rtol,
        radius_tolerance=s.radius_tolerance,
        electronegativity_tolerance=s.electronegativity_tolerance,
    )


def _without_oxidation_states(structure: Structure) -> Structure:
    stripped = structure.copy()
    stripped.remove_oxidation_states()
    return stripped


def bucket_key(structure: Structure, disorder: bool = False) -> str:
    """The bucket a structure is compared within.

    Ordered structures: the reduced formula (``LiCoO2``). Partially occupied ones: ``~`` and the
    fractional composition to 6 decimals, because ``Fe0.5Co0.5`` and ``FeCo`` are different
    reduced formulas for the same fractional composition (an ordered structure can never match a
    disordered one under ``ElementComparator``, so the two families need no shared bucket).
    With ``disorder``: the chemical system (``Co-Fe``).
    """
    composition = structure.composition.element_composition
    if disorder:
        return composition.chemical_system
    if structure.is_ordered:
        with warnings.catch_warnings():
            # formulas sort by electronegativity; pymatgen warns for noble gases without one
            warnings.simplefilter("ignore", UserWarning)
            return composition.reduced_formula
    fractions = composition.fractional_composition
    return "~" + "".join(f"{e}{fractions[e]:.6f}" for e in sorted(fractions, key=str))


@dataclass
class _Prepared:
    """A structure as the matcher sees it: no oxidation states, Niggli + primitive reduced.

    Besides the reduced structure it caches what every comparison would otherwise recompute:
    the comparator hash, the volume, the sorted cell lengths and the successive minima of the
    lattice (for the exact lattice pre-check of :meth:`_PairFitter.fit`).
    """

    reduced: Structure
    _disorder_fn: Callable[[Structure], Structure] | None = field(default=None, repr=False)

    @cached_property
    def disordered(self) -> Structure:
        """Reduced disordered counterpart (disorder mode, computed once per query on demand)."""
        assert self._disorder_fn is not None
        return self._disorder_fn(self.reduced)

    @cached_property
    def composition_hash(self):
        # what ElementComparator.get_hash gives, compared first thing in fit()
        return self.reduced.composition.element_composition.fractional_composition

    @cached_property
    def volume(self) -> float:
        return self.reduced.volume

    @cached_property
    def sorted_lengths(self) -> np.ndarray:
        return np.sort(np.asarray(self.reduced.lattice.abc, dtype=float))

    @cached_property
    def lattice_minima(self) -> np.ndarray:
        """Successive minima λ1 ≤ λ2 ≤ λ3: lengths of the shortest independent lattice vectors.

        The three cell vectors lie within the search sphere, so the greedy pick of independent
        vectors by increasing length is exact.
        """
        lattice = self.reduced.lattice
        frac, lengths, _, _ = lattice.get_points_in_sphere(
            [[0.0, 0.0, 0.0]], [0.0, 0.0, 0.0], max(lattice.abc) * (1 + 1e-6), zip_results=False
        )
        cart = lattice.get_cartesian_coords(frac)
        chosen: list[np.ndarray] = []
        minima: list[float] = []
        for i in np.argsort(lengths, kind="stable"):
            if lengths[i] < 1e-8:
                continue
            candidate = np.array([*chosen, cart[i]])
            if np.linalg.matrix_rank(candidate, tol=1e-6 * lengths[i]) == len(candidate):
                chosen.append(cart[i])
                minima.append(float(lengths[i]))
                if len(minima) == 3:
                    break
        return np.array(minima)


class _PairFitter:
    """Prepares structures once and compares prepared pairs with the verdict ``fit`` gives."""

    def __init__(self, settings: MatcherSettings) -> None:
        self.settings = settings
        self.disorder_matcher = make_disorder_matcher(settings) if settings.disorder else None
        self.matcher = make_matcher(settings)
        # Without supercells or subsets, _strict_match rejects different site counts outright.
        self.same_size_only = not settings.attempt_supercell and not settings.allow_subset

    def prepare(self, structure: Structure) -> _Prepared:
        """``structure`` must already be without oxidation states."""
        reduced = StructureMatcher._get_reduced_structure(
            Structure.from_sites(structure), self.settings.primitive_cell, niggli=True
        )
        disorder_fn = self.disorder_matcher.disorder_reduced if self.disorder_matcher else None
        return _Prepared(reduced, disorder_fn)

    def fit(self, query: _Prepared, reference: _Prepared) -> bool:
        """``make_matcher(settings).fit(query, reference)``, or the disorder matcher's verdict."""
        if self.disorder_matcher is not None:
            return self.disorder_matcher.fit_reduced(
                query.reduced, reference.reduced, lambda: query.disordered
            )
        if self.same_size_only:
            if len(query.reduced) != len(reference.reduced):
                return False
            if self._lattices_cannot_map(query, reference):
                return False
        if query.composition_hash != reference.composition_hash:
            return False
        # = fit(query, reference, skip_structure_reduction=True) without its two defensive
        # Structure copies (_process_species), which cost as much as the comparison itself
        # for most pairs; no species are ignored, so the copies change nothing.
        matcher = self.matcher
        s1, s2, fu, s1_supercell = matcher._preprocess(
            query.reduced, reference.reduced, skip_structure_reduction=True
        )
        match = matcher._match(s1, s2, fu, s1_supercell, break_on_match=True)
        return match is not None and match[0] <= matcher.stol

    def _lattices_cannot_map(self, query: _Prepared, reference: _Prepared) -> bool:
        """An exact necessary condition of ``Lattice.find_all_mappings``, from cached numbers.

        With equal site counts (supercell size 1) the matcher looks for three independent
        vectors of the (volume-scaled) query lattice whose lengths are each below ``1 + ltol``
        times one of the (scaled) reference cell lengths. Independent vectors are no shorter
        than the successive minima, so if the k-th minimum of the query already reaches the k-th
        smallest reference length times ``1 + ltol`` no mapping exists and the pair cannot match.
        A relative margin of 1e-6 keeps floating-point ties on the side of comparing.
        """
        ratio = (reference.volume / query.volume) ** (1 / 6) if self.settings.scale else 1.0
        bound = reference.sorted_lengths / ratio * (1 + self.settings.ltol) * (1 + 1e-6)
        return bool(np.any(query.lattice_minima * ratio >= bound))


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
    fitter = _PairFitter(MatcherSettings(**settings_dict))
    results: list[tuple[int, int | None]] = []
    for members in buckets:
        representatives: list[tuple[int, _Prepared]] = []
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
    grouping of ``StructureMatcher.group_structures``, in input order.

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
    stripped = [_without_oxidation_states(s) for s in structures]
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
_WORKER_STORES: dict[tuple[int, str], tuple[ReferenceStore, _PairFitter]] = {}


def _match_in_store(
    store: ReferenceStore,
    fitter: _PairFitter,
    key: str,
    queries: list[tuple[int, dict]],
) -> list[tuple[int, str | None]]:
    prepared_references: list[tuple[str, _Prepared]] = store.bucket(key) if queries else []
    results: list[tuple[int, str | None]] = []
    for index, payload in queries:
        if not prepared_references:
            results.append((index, None))
            continue
        query = fitter.prepare(payload_to_structure(payload))
        match = next((label for label, ref in prepared_references if fitter.fit(query, ref)), None)
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
        _WORKER_STORES[state_key] = (
            ReferenceStore(Path(path), fingerprint, max_cached_references=50_000, wrap=_Prepared),
            _PairFitter(MatcherSettings(**settings_dict)),
        )
    store, fitter = _WORKER_STORES[state_key]
    results: list[tuple[int, str | None]] = []
    for key, queries in tasks:
        results.extend(_match_in_store(store, fitter, key, queries))
    return results


def _reference_rows(fitter: _PairFitter, chunk: list[tuple[str, dict]]) -> list[tuple]:
    """``(bucket, label, reduced payload)`` rows of the store for some references."""
    rows = []
    for label, payload in chunk:
        structure = payload_to_structure(payload)
        key = bucket_key(structure, fitter.settings.disorder)
        rows.append((key, label, structure_to_payload(fitter.prepare(structure).reduced)))
    return rows


def _reference_rows_worker(settings_dict: dict, chunk: list[tuple[str, dict]]) -> list[tuple]:
    return _reference_rows(_PairFitter(MatcherSettings(**settings_dict)), chunk)


class ReferenceIndex:
    """Novelty look-ups against a reference set, bucketed and cached on disk.

    Build it with :meth:`build`; ``match``/``matches``/``novel`` then compare each query only with
    the references of its bucket, in reference order, and report the first that fits.

    Attributes
    ----------
    settings
        The matcher settings it was built with.
    path
        The sqlite store (under ``cache_dir()/matching/`` by default).
    cache_status
        ``"built"`` (no usable file), ``"reused"`` (a valid file was found) or ``"rebuilt"`` (a
        file was there but corrupt, mismatched or failed while reading; it was replaced).
    """

    def __init__(
        self,
        records: Sequence[CrystalRecord],
        settings: MatcherSettings,
        path: Path,
        fingerprint: str,
        n_jobs: int | None,
    ) -> None:
        self.settings = settings
        self.path = path
        self.fingerprint = fingerprint
        self.cache_status: Literal["built", "reused", "rebuilt"] = "built"
        self._records = records  # kept (not copied) so a store that turns out corrupt is rebuilt
        self._n_jobs = n_jobs
        self._fitter = _PairFitter(settings)
        self._store = self._open_or_build()

    @classmethod
    def build(
        cls,
        records: Sequence[CrystalRecord],
        settings: MatcherSettings | None = None,
        cache: bool | Path = True,
        *,
        disorder: bool | None = None,
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
        n_jobs
            Worker processes for preprocessing the references (``None``/``-1``: all cores).
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
        index = cls(records, settings, path, fingerprint, n_jobs)
        if cache is False:
            weakref.finalize(index, _remove_folder, folder)
        return index

    def __len__(self) -> int:
        return self._store.n_references

    @property
    def bucket_loads(self) -> int:
        """Buckets read from disk in this process (LRU misses)."""
        return self._store.bucket_loads

    def _open_or_build(self) -> ReferenceStore:
        if self.path.exists():
            try:
                store = ReferenceStore(self.path, self.fingerprint, wrap=_Prepared)
                self.cache_status = "reused"
                return store
            except CorruptCacheError:
                self.cache_status = "rebuilt"
        self._write()
        return ReferenceStore(self.path, self.fingerprint, wrap=_Prepared)

    def _write(self) -> None:
        settings_dict = asdict(self.settings)
        payloads = (
            (r.label, structure_to_payload(_without_oxidation_states(r.structure)))
            for r in self._records
        )
        n_workers = _resolve_n_jobs(self._n_jobs)
        progress = tqdm(total=len(self._records), desc="indexing references", disable=None)

        def rows():
            if n_workers == 1:
                for label, payload in payloads:
                    yield from _reference_rows(self._fitter, [(label, payload)])
                    progress.update()
                return
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                # a bounded window of chunks in flight, so 10^6 references never sit in memory
                # as payloads at once, and rows still come back in reference order
                in_flight: deque = deque()
                for chunk in _chunked(payloads, 100):
                    in_flight.append(pool.submit(_reference_rows_worker, settings_dict, chunk))
                    if len(in_flight) >= 4 * n_workers:
                        chunk_rows = in_flight.popleft().result()
                        yield from chunk_rows
                        progress.update(len(chunk_rows))
                while in_flight:
                    chunk_rows = in_flight.popleft().result()
                    yield from chunk_rows
                    progress.update(len(chunk_rows))

        try:
            write_store(
                self.path,
                self.fingerprint,
                len(self._records),
                rows(),
                meta={"settings": asdict(self.settings)},
            )
        finally:
            progress.close()

    def _rebuild(self) -> None:
        self._store.close()
        self.path.unlink(missing_ok=True)
        self.cache_status = "rebuilt"
        self._write()
        self._store = ReferenceStore(self.path, self.fingerprint, wrap=_Prepared)

    def match(self, structure: Structure) -> str | None:
        """Label (``source:id``) of the first reference ``structure`` matches, else ``None``."""
        return self.matches([structure], n_jobs=1)[0]

    def novel(self, structures: Sequence[Structure], n_jobs: int | None = 1) -> list[bool]:
        """Whether each structure matches no reference."""
        return [m is None for m in self.matches(structures, n_jobs=n_jobs)]

    def matches(self, structures: Sequence[Structure], n_jobs: int | None = 1) -> list[str | None]:
        """The first matching reference label of each structure (``None``: novel).

        Queries are grouped by bucket so each bucket is read once; with ``n_jobs > 1`` groups of
        buckets go to worker processes, each opening the store itself.
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
            stripped = _without_oxidation_states(structure)
            key = bucket_key(stripped, self.settings.disorder)
            if key in sizes:  # a formula absent from the reference is novel without a look
                by_bucket[key].append((index, structure_to_payload(stripped)))
        n_workers = min(_resolve_n_jobs(n_jobs), max(1, len(by_bucket)))
        progress = tqdm(total=len(structures), desc="novelty", unit="structure", disable=None)
        progress.update(len(structures) - sum(len(q) for q in by_bucket.values()))
        if n_workers == 1:
            for key, queries in by_bucket.items():
                for index, label in _match_in_store(self._store, self._fitter, key, queries):
                    results[index] = label
                progress.update(len(queries))
        else:
            slices = _query_slices(by_bucket, sizes, n_chunks=4 * n_workers)
            weights = [(str(i), weight) for i, (_, _, weight) in enumerate(slices)]
            settings_dict = asdict(self.settings)
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                futures = {}
                for ids in chunk_by_weight(weights, 4 * n_workers):
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


#: Rough cost of preparing one query (its reduction), in units of one reference comparison.
_QUERY_PREPARATION_COST = 50


def _query_slices(
    by_bucket: dict[str, list[tuple[int, dict]]], sizes: dict[str, int], n_chunks: int
) -> list[tuple[str, list[tuple[int, dict]], float]]:
    """``(bucket, queries, estimated cost)`` work items for the worker pool.

    A bucket whose queries would cost more than one chunk's share (the 2,000 carbon polymorphs
    of a reference, say) is cut into several slices of its queries, so it does not leave the
    other workers idle; a worker that gets two slices of a bucket reads it once (LRU).
    """
    costs = {key: len(q) * (_QUERY_PREPARATION_COST + sizes[key]) for key, q in by_bucket.items()}
    share = max(1.0, sum(costs.values()) / max(1, n_chunks))
    slices = []
    for key, queries in by_bucket.items():
        n_slices = max(1, min(len(queries), math.ceil(costs[key] / share)))
        step = math.ceil(len(queries) / n_slices)
        for start in range(0, len(queries), step):
            part = queries[start : start + step]
            slices.append((key, part, costs[key] * len(part) / len(queries)))
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
