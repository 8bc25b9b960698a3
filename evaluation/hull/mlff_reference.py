"""Hull references at an MLFF level of theory: elemental and reference-structure energies.

Formation energies from an MLFF's total energies must use that MLFF's own elemental reference
energies, and the hull's other compounds must be relaxed with the same MLFF: otherwise two
levels of theory would share one hull. Both are computed here, once, and cached on disk under
``cache_dir()/mlff/<model>/`` (JSON/JSONL, no pickle), keyed by structure hash and settings.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Structure

from evaluation.hull.core import EntryHullReference, HullResult, chemsys_elements
from evaluation.io.crystals import atomic_output
from evaluation.paths import cache_dir, reference_dir
from evaluation.records import CrystalRecord
from evaluation.relax.calculators import MLFFUnavailable, load_calculator
from evaluation.relax.run import relax

logger = logging.getLogger(__name__)

#: Elemental polymorphs with MP PBE energies (Materials Project, CC-BY-4.0), a byte copy of
#: ``../shared/data/reference/MP-PBE-Element-Refs.json.gz`` in ``reference_dir()``.
ELEMENT_REFS_FILE = "MP-PBE-Element-Refs.json.gz"


def structure_hash(structure: Structure) -> str:
    """A short content hash (lattice, species, wrapped fractional coordinates to 1e-6)."""
    payload = {
        "lattice": np.round(structure.lattice.matrix, 6).tolist(),
        "species": [str(sp) for sp in structure.species],
        "frac": np.round(np.mod(structure.frac_coords, 1.0), 6).tolist(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _model_cache_dir(tag: str) -> Path:
    folder = cache_dir() / "mlff" / re.sub(r"[^A-Za-z0-9._-]+", "_", tag.removeprefix("mlff:"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@lru_cache(maxsize=2)
def element_polymorphs(path: str) -> dict[str, list[tuple[float, dict]]]:
    """element -> [(MP energy per atom, structure dict)], lowest MP energy first."""
    with gzip.open(path, "rt") as handle:
        raw = json.load(handle)
    return {
        el: sorted(zip(v["energy_per_atom"], v["structure"], strict=True), key=lambda t: t[0])
        for el, v in raw.items()
    }


def reference_elements() -> frozenset[str]:
    """Elements with MP polymorphs to compute an MLFF elemental reference from."""
    return frozenset(element_polymorphs(str(reference_dir() / ELEMENT_REFS_FILE)))


def mlff_elemental_energies(
    elements: Iterable[str],
    model: str = "chgnet",
    *,
    n_polymorphs: int = 3,
    max_sites: int = 64,
    fmax: float = 0.05,
    max_steps: int = 500,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Energy per atom of each element's ground state, computed with the MLFF itself.

    For each element, the ``n_polymorphs`` lowest-energy MP polymorphs of
    ``MP-PBE-Element-Refs.json.gz`` with at most ``max_sites`` sites (the MP ground state is
    always included, whatever its size) are relaxed, and the lowest MLFF energy per atom is
    taken: MLFFs reorder near-degenerate polymorphs (graphite/diamond are 3 meV/atom apart in
    MP), so the MP ground state alone could sit above the MLFF's own. Results are cached in
    ``cache_dir()/mlff/<model>/elements.json``, keyed by element, structure hash and settings.
    """
    _, tag = load_calculator(model, device)
    polymorphs = element_polymorphs(str(reference_dir() / ELEMENT_REFS_FILE))
    cache_path = _model_cache_dir(tag) / "elements.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    entries: dict[str, dict] = cache.get("polymorphs", {})
    settings = f"fmax={fmax},steps={max_steps}"
    wanted: dict[str, list[str]] = {}
    pending: list[tuple[str, str, Structure, float]] = []
    for el in sorted(set(elements)):
        if el not in polymorphs:
            raise MLFFUnavailable(f"no elemental polymorphs for {el} in {ELEMENT_REFS_FILE}")
        ranked = polymorphs[el]
        chosen = [ranked[0]] + [p for p in ranked[1:] if len(p[1]["sites"]) <= max_sites]
        wanted[el] = []
        for mp_energy, struct_dict in chosen[:n_polymorphs]:
            structure = Structure.from_dict(struct_dict)
            key = f"{el}|{structure_hash(structure)}|{settings}"
            wanted[el].append(key)
            if key not in entries:
                pending.append((el, key, structure, mp_energy))
    if pending:
        results = relax(
            [p[2] for p in pending], model, fmax, max_steps, True, device=device, progress=progress
        )
        for (el, key, structure, mp_energy), res in zip(pending, results, strict=True):
            entries[key] = {
                "element": el,
                "n_sites": len(structure),
                "mp_energy_per_atom": mp_energy,
                "energy_per_atom": res.energy_per_atom,
                "status": res.status,
                "reason": res.reason,
            }
        # Merge with what another process may have written meanwhile, then replace atomically.
        if cache_path.exists():
            entries = {**json.loads(cache_path.read_text()).get("polymorphs", {}), **entries}
        _write_json_atomic(cache_path, {"level_of_theory": tag, "polymorphs": entries})
    energies = {}
    for el, keys in wanted.items():
        usable = [entries[k] for k in keys if entries[k]["status"] in ("ok", "not_converged")]
        if not usable:
            raise MLFFUnavailable(f"every {el} polymorph failed to relax with {tag}")
        energies[el] = min(e["energy_per_atom"] for e in usable)
    return energies


#: Reference compounds larger than this are left out of MLFF hulls: relaxation time grows with
#: cell size, and the paper's generated structures have at most 20 atoms.
MLFF_HULL_MAX_SITES = 64


class HullCandidates:
    """The reference compounds usable in MLFF hulls, with their element sets computed once.

    Elements are left out: elemental energies come from the MLFF's own elemental references
    (the MP ground-state polymorphs), and the 2,000 carbon_24 polymorphs would otherwise be
    relaxed for every carbon-containing system. Disordered and very large cells are left out
    too (an MLFF cannot relax partial occupancies; see :data:`MLFF_HULL_MAX_SITES`).
    """

    def __init__(self, reference: Sequence[CrystalRecord]) -> None:
        self._candidates = [
            (frozenset(el.symbol for el in record.structure.composition.elements), record)
            for record in reference
            if record.structure.is_ordered
            and len(record.structure.composition.elements) > 1
            and len(record.structure) <= MLFF_HULL_MAX_SITES
        ]

    def within(self, chemsys: str) -> list[CrystalRecord]:
        """The compounds whose elements all lie in ``chemsys`` (``"Co-Li-O"``)."""
        elements = frozenset(chemsys.split("-"))
        return [record for symbols, record in self._candidates if symbols <= elements]


def energy_cache_path(tag: str) -> Path:
    """The JSONL cache of MLFF-relaxed energies of known structures for level ``tag``."""
    return _model_cache_dir(tag) / "reference_energies.jsonl"


def energy_key(structure: Structure, fmax: float, max_steps: int) -> str:
    """Cache key: the structure's content and the relaxation settings (not its name: the
    same crystal from two sources is relaxed once)."""
    return f"{structure_hash(structure)}|fmax={fmax},steps={max_steps}"


def energy_row(
    key: str, record: CrystalRecord, energy: float | None, status: str, reason: str
) -> dict:
    """One cache row (``energy`` is the total energy in eV)."""
    return {
        "key": key,
        "label": record.label,
        "formula": record.formula,
        "energy": energy,
        "status": status,
        "reason": reason,
    }


def read_energy_cache(path: Path) -> dict[str, dict]:
    """Rows of :func:`energy_cache_path` by key; a line torn by a crash is skipped."""
    cached: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                row = json.loads(line)
                cached[row["key"]] = row
    return cached


def append_energy_rows(path: Path, rows: Iterable[dict]) -> None:
    """Append rows; line-buffered, so each row is one ``write`` and concurrent appenders
    never interleave parts of lines."""
    with path.open("a", buffering=1) as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def prefetch_reference_energies(
    chemsystems: Iterable[str],
    candidates: HullCandidates,
    model: str,
    fmax: float,
    max_steps: int,
    n_jobs: int,
) -> int:
    """Relax, in ``n_jobs`` processes, every hull compound of ``chemsystems`` not yet in the
    energy cache (what :func:`mlff_hull_reference` would relax one system at a time); returns
    how many were relaxed."""
    _, tag = load_calculator(model)
    path = energy_cache_path(tag)
    cached = read_energy_cache(path)
    todo: dict[str, CrystalRecord] = {}
    for chemsys in set(chemsystems):
        for record in candidates.within(chemsys):
            key = energy_key(record.structure, fmax, max_steps)
            if key not in cached:
                todo.setdefault(key, record)
    _relax_into_cache(path, todo, model, fmax, max_steps, n_jobs=n_jobs)
    return len(todo)


def _relax_into_cache(
    path: Path,
    todo: dict[str, CrystalRecord],
    model: str,
    fmax: float,
    max_steps: int,
    *,
    n_jobs: int = 1,
    device: str = "cpu",
    progress: bool = False,
) -> list[dict]:
    """Relax the records of ``todo`` (cache key -> record) and append their rows to the
    energy cache at ``path`` as they finish; returns the rows."""
    from evaluation.relax.parallel import relax_parallel

    keys = list(todo)
    structures = [todo[k].structure for k in keys]
    rows: list[dict] = []

    def persist(indices: list[int], results: list) -> None:
        new = [
            energy_row(keys[i], todo[keys[i]], res.energy, res.status, res.reason)
            for i, res in zip(indices, results, strict=True)
        ]
        append_energy_rows(path, new)
        rows.extend(new)

    if not keys:
        return rows
    if n_jobs > 1:
        relax_parallel(
            structures,
            model,
            fmax,
            max_steps,
            n_jobs=n_jobs,
            on_chunk=persist,
            progress=progress,
            desc="hull compounds",
        )
    else:
        results = relax(structures, model, fmax, max_steps, True, device=device, progress=progress)
        persist(list(range(len(keys))), results)
    return rows


def mlff_hull_reference(
    chemsys: str | Iterable[str],
    reference_records: Sequence[CrystalRecord],
    model: str = "chgnet",
    *,
    fmax: float = 0.05,
    max_steps: int = 500,
    elemental_polymorphs: int = 3,
    max_sites: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> EntryHullReference:
    """A hull reference for ``chemsys`` at level ``mlff:<model>``.

    The records whose elements lie within ``chemsys`` are relaxed with the MLFF (energies
    cached in :func:`energy_cache_path`, keyed by structure hash and settings, and shared
    with ``crystalforge data build``); failed relaxations are skipped and logged. Elemental energies
    come from :func:`mlff_elemental_energies` with the same model (``elemental_polymorphs``
    lowest MP polymorphs per element). Records with more than ``max_sites`` sites are left out
    (relaxation time grows with cell size).
    """
    elements = chemsys_elements(chemsys)
    _, tag = load_calculator(model, device)
    mu = mlff_elemental_energies(
        elements,
        model,
        n_polymorphs=elemental_polymorphs,
        fmax=fmax,
        max_steps=max_steps,
        device=device,
    )
    records = [
        r
        for r in reference_records
        if r.structure.is_ordered
        and chemsys_elements(r.structure.composition) <= elements
        and (max_sites is None or len(r.structure) <= max_sites)
    ]
    cache_path = energy_cache_path(tag)
    cached = read_energy_cache(cache_path)
    keys = [energy_key(r.structure, fmax, max_steps) for r in records]
    todo = {k: r for k, r in zip(keys, records, strict=True) if k not in cached}
    rows = _relax_into_cache(
        cache_path, todo, model, fmax, max_steps, device=device, progress=progress
    )
    cached.update((row["key"], row) for row in rows)
    entries = []
    for key, record in zip(keys, records, strict=True):
        row = cached[key]
        if row["status"] not in ("ok", "not_converged") or row["energy"] is None:
            logger.warning(
                "skipping reference %s: %s (%s)", record.label, row["status"], row["reason"]
            )
            continue
        entries.append(PDEntry(record.structure.composition, float(row["energy"]), record.label))
    system = "-".join(sorted(elements))
    return EntryHullReference(
        entries,
        mu,
        level_of_theory=tag,
        name=f"{len(entries)} reference structures in {system} relaxed with {tag}",
    )


def _write_json_atomic(path: Path, data: dict) -> None:
    with atomic_output(path) as stream:  # readers never see a half-written file
        stream.write(json.dumps(data, indent=1, sort_keys=True))


def mlff_e_above_hull(
    items: Sequence[tuple[Structure, float | None, str | None]],
    reference_records: Sequence[CrystalRecord],
    model: str,
    *,
    fmax: float = 0.05,
    max_steps: int = 500,
    n_jobs: int = 1,
) -> list[HullResult | str]:
    """E_hull of MLFF energies, each against the same MLFF's hull of its chemical system.

    Parameters
    ----------
    items
        ``(structure, energy_per_atom, level_of_theory)`` per structure; a missing or
        non-finite energy (a failed relaxation) gives a message instead of a result.
    reference_records
        Where the hull compounds come from (filtered by :class:`HullCandidates`).
    model
        The MLFF; must be the one that produced the energies (levels are checked).
    fmax, max_steps
        How the hull compounds are relaxed (best: as the structures themselves were).
    n_jobs
        Processes relaxing the hull compounds not cached yet, all systems at once.

    Returns
    -------
    list[HullResult | str]
        A result, or the reason there is none (no energy, no hull for the system).
    """
    candidates = HullCandidates(reference_records)
    if n_jobs > 1:
        systems = [s.composition.chemical_system for s, energy, _ in items if energy is not None]
        prefetch_reference_energies(systems, candidates, model, fmax, max_steps, n_jobs)
    hulls: dict[str, EntryHullReference | Exception] = {}
    results: list[HullResult | str] = []
    for structure, energy_per_atom, level in items:
        if energy_per_atom is None or not math.isfinite(energy_per_atom) or not level:
            results.append("no MLFF energy (relaxation failed)")
            continue
        chemsys = structure.composition.chemical_system
        if chemsys not in hulls:
            try:
                hulls[chemsys] = mlff_hull_reference(
                    chemsys,
                    candidates.within(chemsys),
                    model,
                    fmax=fmax,
                    max_steps=max_steps,
                    progress=False,
                )
            except (ValueError, KeyError, MLFFUnavailable) as error:
                # e.g. an element without an MP polymorph to relax: this system has no hull
                hulls[chemsys] = error
        hull = hulls[chemsys]
        if isinstance(hull, Exception):
            results.append(f"no hull for {chemsys}: {hull}")
            continue
        results.append(
            hull.e_above_hull(
                structure.composition, energy_per_atom, level_of_theory=level, kind="total"
            )
        )
    return results
