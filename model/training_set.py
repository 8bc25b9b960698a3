"""The generative model's training set, curated like Alex-MP-20 and labelled at one level.

The paper trains on structures with at most 20 atoms that lie within 0.1 eV/atom of the convex
hull. Our structures (LeMaterial samples of MP, Alexandria, JARVIS and LeMat-Bulk, perov_5,
carbon_24) carry no consistent energies, so they are labelled here, all at one level of theory:

1. **select**: ordered, at most ``max_atoms`` sites, every element with an elemental reference
   and within the model's range, duplicates (pymatgen StructureMatcher, the paper's tolerances)
   removed across sources in the order the sources are given;
2. **label**: relax each with the MLFF (cell and positions) and keep its energy;
3. **hull**: formation energies against the MLFF's own elemental ground states, and a hull per
   chemical system from the labelled set itself, plus MP formation energies only where they are
   consistent with the MLFF (see :func:`mp_consistency`);
4. **filter**: keep E_hull < ``e_hull_max``; the training tensors hold the input (DFT-relaxed)
   geometries of the kept crystals, split by a hash of their ids.

Labels are cached line by line in the output folder, so an interrupted build resumes where it
stopped and a rebuild with the same settings relabels nothing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element

from evaluation.hull.core import EntryHullReference
from evaluation.hull.mlff_reference import (
    append_energy_rows,
    energy_cache_path,
    energy_key,
    energy_row,
    mlff_elemental_energies,
    read_energy_cache,
    reference_elements,
    structure_hash,
)
from evaluation.hull.mp_entries import mp_formation_energy_reference
from evaluation.io.crystals import atomic_output, read_crystals
from evaluation.matching.index import find_duplicates
from evaluation.records import CrystalRecord
from evaluation.relax.calculators import load_calculator
from evaluation.relax.engine import RelaxResult
from evaluation.relax.parallel import relax_parallel

logger = logging.getLogger(__name__)

#: Elements whose compounds MP's correction schemes (legacy and MP2020) adjust: anion and gas
#: corrections, and through O/F the GGA+U metals. An MLFF trained on raw MPtrj energies cannot
#: agree with corrected formation energies there, so MP points in these systems never join.
CORRECTED_ELEMENTS = frozenset(["O", "S", "F", "Cl", "Br", "I", "N", "H", "Se", "Si", "Sb", "Te"])

#: The model's largest atomic number (``model.crystal.MAX_ATOMIC_NUMBER``; not imported, so
#: evaluation stays free of the model package).
MAX_ATOMIC_NUMBER = 100

LABELS_CACHE = "labels-cache.jsonl"


@dataclass(frozen=True)
class BuildSettings:
    """How the training set is built (every field is recorded in ``report.json``).

    Attributes
    ----------
    max_atoms
        Largest cell kept (the paper: 20).
    model, fmax, max_steps
        The labelling MLFF and its relaxation (eV/Å, optimizer steps).
    e_hull_max
        Keep crystals with E_hull strictly below this (eV/atom; the paper: 0.1).
    mp_tolerance
        Largest mean absolute difference (eV/atom) between MLFF and MP formation energies, on
        the uncorrected compositions both contain, for MP points to join the hulls.
    validation_fraction
        Share of ids in the validation split (the same hash the trainer uses).
    n_jobs
        Relaxation processes.
    """

    max_atoms: int = 20
    model: str = "chgnet"
    fmax: float = 0.1
    max_steps: int = 100
    e_hull_max: float = 0.1
    mp_tolerance: float = 0.05
    validation_fraction: float = 0.1
    n_jobs: int = 1

    def label_key(self) -> str:
        return f"{self.model}|fmax={self.fmax}|steps={self.max_steps}"


@dataclass
class Label:
    """The MLFF label of one crystal (energies in eV/atom)."""

    status: str
    energy_per_atom: float | None = None
    n_steps: int = 0
    max_force: float | None = None
    reason: str = ""
    e_form: float | None = None
    e_hull: float | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "not_converged") and self.energy_per_atom is not None


def source_name(path: Path) -> str:
    """``perov_5/val.csv`` -> ``perov_5/val``, ``lemat/mp`` -> ``lemat/mp``: unique per source."""
    path = Path(path).resolve()
    stem = path.name.split(".")[0]
    return f"{path.parent.name}/{stem}"


def supported_elements() -> frozenset[str]:
    """Elements with elemental polymorphs to reference, within the model's range."""
    return frozenset(el for el in reference_elements() if Element(el).Z <= MAX_ATOMIC_NUMBER)


def select_crystals(
    paths: Sequence[Path], settings: BuildSettings, *, limit: int | None = None
) -> tuple[list[CrystalRecord], dict[str, Any]]:
    """Read every source and keep the usable, distinct crystals.

    Returns the kept records (``source`` set to :func:`source_name`) and the counts of what
    was read, and why the rest was dropped, per source.
    """
    elements = supported_elements()
    counts: dict[str, Any] = {"read": {}, "unreadable": {}, "dropped": Counter()}
    kept: list[CrystalRecord] = []
    for path in paths:
        name = source_name(path)
        result = read_crystals(path, source=name, limit=limit)
        counts["read"][name] = len(result.records)
        counts["unreadable"][name] = result.n_skipped
        for record in result.records:
            reason = _drop_reason(record, settings.max_atoms, elements)
            if reason:
                counts["dropped"][reason] += 1
            else:
                kept.append(record)
    duplicate_of = find_duplicates([r.structure for r in kept], n_jobs=settings.n_jobs)
    distinct = [r for r, dup in zip(kept, duplicate_of, strict=True) if dup is None]
    counts["dropped"]["duplicate of an earlier crystal"] = len(kept) - len(distinct)
    counts["dropped"] = dict(counts["dropped"])
    counts["selected"] = dict(Counter(r.source for r in distinct))
    return distinct, counts


def _drop_reason(record: CrystalRecord, max_atoms: int, elements: frozenset[str]) -> str | None:
    structure = record.structure
    if not structure.is_ordered:
        return "disordered"
    if len(structure) > max_atoms:
        return f"more than {max_atoms} atoms"
    if not {el.symbol for el in structure.composition.elements} <= elements:
        return "element without a reference or beyond the model's range"
    return None


def _read_cache(path: Path, label_key: str) -> dict[str, Label]:
    """Labels of an earlier (possibly interrupted) build with the same settings."""
    labels: dict[str, Label] = {}
    if not path.exists():
        return labels
    with path.open() as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill: relabel that crystal
                continue
            if row.get("settings") == label_key:
                labels[row["key"]] = Label(**row["label"])
    return labels


def _cache_key(record: CrystalRecord) -> str:
    return f"{record.label}|{structure_hash(record.structure)}"


def _label_of(result: RelaxResult) -> Label:
    usable = result.ok and result.energy_per_atom is not None
    finite = usable and math.isfinite(result.energy_per_atom)
    return Label(
        status=result.status if finite or not usable else "failed",
        energy_per_atom=result.energy_per_atom if finite else None,
        n_steps=result.n_steps,
        max_force=result.max_force,
        reason=result.reason if finite or not usable else "non-finite energy",
    )


def label_crystals(
    records: Sequence[CrystalRecord], settings: BuildSettings, cache_path: Path
) -> dict[str, Label]:
    """MLFF-relaxed energies of ``records``, by ``record.label``; cached in ``cache_path``."""
    key = settings.label_key()
    cached = _read_cache(cache_path, key)
    pending = [r for r in records if _cache_key(r) not in cached]
    logger.info("labels: %d cached, %d to relax", len(records) - len(pending), len(pending))
    if pending:
        with cache_path.open("a") as cache:

            def persist(indices: list[int], results: list[RelaxResult]) -> None:
                for index, result in zip(indices, results, strict=True):
                    label = _label_of(result)
                    cached[_cache_key(pending[index])] = label
                    row = {"key": _cache_key(pending[index]), "settings": key}
                    cache.write(json.dumps({**row, "label": asdict(label)}) + "\n")
                cache.flush()

            relax_parallel(
                [r.structure for r in pending],
                settings.model,
                settings.fmax,
                settings.max_steps,
                n_jobs=settings.n_jobs,
                on_chunk=persist,
                desc=f"label {settings.model}",
            )
    return {r.label: cached[_cache_key(r)] for r in records}


def share_labels(
    records: Sequence[CrystalRecord], labels: dict[str, Label], settings: BuildSettings, tag: str
) -> int:
    """Add the labels to the MLFF energy cache that hull references read, so an evaluation
    relaxing at the same settings never relaxes these crystals again; returns rows added."""
    path = energy_cache_path(tag)
    cached = read_energy_cache(path)
    rows = []
    for record in records:
        key = energy_key(record.structure, settings.fmax, settings.max_steps)
        label = labels[record.label]
        if key in cached or not label.ok:
            continue
        energy = label.energy_per_atom * len(record.structure)
        rows.append(energy_row(key, record, energy, label.status, label.reason))
        cached[key] = rows[-1]
    append_energy_rows(path, rows)
    return len(rows)


def _uncorrected(composition: Composition) -> bool:
    return not {el.symbol for el in composition.elements} & CORRECTED_ELEMENTS


def mp_consistency(
    records: Sequence[CrystalRecord], labels: dict[str, Label], mp_rows: dict[str, float]
) -> dict[str, Any]:
    """How MLFF formation energies compare with MP's on the formulas both contain.

    For each reduced formula in both, the lowest MLFF formation energy among our crystals is
    compared with MP's lowest; the comparison is split into compositions MP corrects and the
    rest. MP's value is the lowest over all its polymorphs, so a random sample of ours sits a
    little above it on average even when the two levels agree.
    """
    lowest: dict[str, float] = {}
    for record in records:
        label = labels[record.label]
        if label.e_form is not None:
            formula = record.formula
            lowest[formula] = min(lowest.get(formula, math.inf), label.e_form)
    figures: dict[str, Any] = {}
    for group, wanted in (("uncorrected", True), ("corrected", False)):
        diffs = [
            e - mp_rows[f]
            for f, e in lowest.items()
            if f in mp_rows and _uncorrected(Composition(f)) is wanted
        ]
        figures[group] = {
            "n_formulas": len(diffs),
            "mae": float(np.mean(np.abs(diffs))) if diffs else None,
            "mean_signed": float(np.mean(diffs)) if diffs else None,
            "median_abs": float(np.median(np.abs(diffs))) if diffs else None,
        }
    return figures


def _mp_rows(elements: frozenset[str]) -> dict[str, float]:
    """MP's lowest formation energy per reduced formula, over our elements."""
    rows: dict[str, float] = {}
    for formula, e_form in mp_formation_energy_reference().rows():
        comp = Composition(formula)
        if {el.symbol for el in comp.elements} <= elements and len(comp.elements) > 1:
            reduced = comp.reduced_formula
            rows[reduced] = min(rows.get(reduced, math.inf), e_form)
    return rows


def _hull_entries(
    records: Sequence[CrystalRecord],
    labels: dict[str, Label],
    mu: dict[str, float],
    mp_points: dict[str, float],
) -> list[tuple[Composition, float]]:
    entries = [
        (r.structure.composition, labels[r.label].energy_per_atom * len(r.structure))
        for r in records
        if labels[r.label].ok
    ]
    for formula, e_form in mp_points.items():  # formation scale -> the MLFF's total scale
        comp = Composition(formula)
        entries.append((comp, sum(n * (e_form + mu[el.symbol]) for el, n in comp.items())))
    return entries


@dataclass
class TrainingSetBuild:
    """The outcome of :func:`label_training_set`.

    ``records`` are the selected crystals, ``labels`` their labels by ``record.label``,
    ``kept`` those below the E_hull cut (input geometries), ``report`` the counts and figures,
    ``hull`` the training set's own hull (what ``crystalforge evaluate --hull-reference`` reads).
    """

    records: list[CrystalRecord]
    labels: dict[str, Label]
    kept: list[CrystalRecord]
    report: dict[str, Any]
    hull: EntryHullReference


def label_training_set(
    paths: Sequence[Path],
    work_dir: Path,
    settings: BuildSettings | None = None,
    *,
    limit: int | None = None,
) -> TrainingSetBuild:
    """Select, label and hull-filter the crystals of ``paths`` (steps 1-4 of the module).

    ``work_dir`` holds the label cache; the caller writes the tensors (the model's format)
    and then :func:`write_build`.
    """
    settings = settings or BuildSettings()
    _, tag = load_calculator(settings.model)  # an unknown or missing MLFF fails before any work
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records, counts = select_crystals(paths, settings, limit=limit)
    timings = {"select_s": time.perf_counter() - started}

    labels = label_crystals(records, settings, work_dir / LABELS_CACHE)
    timings["label_s"] = time.perf_counter() - started - timings["select_s"]
    shared = share_labels(records, labels, settings, tag)
    elements = frozenset(el.symbol for r in records for el in r.structure.composition.elements)
    mu = mlff_elemental_energies(elements, settings.model)
    for record in records:
        label = labels[record.label]
        if label.ok:
            comp = record.structure.composition
            reference = sum(comp.get_atomic_fraction(el) * mu[el.symbol] for el in comp.elements)
            label.e_form = label.energy_per_atom - reference

    mp_rows = _mp_rows(elements)
    consistency = mp_consistency(records, labels, mp_rows)
    mae = consistency["uncorrected"]["mae"]
    use_mp = mae is not None and mae <= settings.mp_tolerance
    mp_points = {f: e for f, e in mp_rows.items() if _uncorrected(Composition(f))} if use_mp else {}
    hull = EntryHullReference(
        _hull_entries(records, labels, mu, mp_points),
        mu,
        level_of_theory=tag,
        name=f"training set ({tag})" + (" + MP uncorrected compositions" if use_mp else ""),
        cache_size=1024,
    )
    for record in sorted(records, key=lambda r: r.chemsys):  # sorted: the hull cache hits
        label = labels[record.label]
        if label.ok:
            result = hull.e_above_hull(
                record.structure.composition, label.e_form, level_of_theory=tag
            )
            label.e_hull = result.e_above_hull
    kept = [
        r
        for r in records
        if labels[r.label].e_hull is not None and labels[r.label].e_hull < settings.e_hull_max
    ]
    timings["hull_s"] = time.perf_counter() - started - sum(timings.values())

    status = Counter(labels[r.label].status for r in records)
    report = {
        "settings": asdict(settings),
        "level_of_theory": tag,
        "sources": [str(p) for p in paths],
        "counts": {
            **counts,
            "labelled": dict(status),
            "converged_fraction": status["ok"] / max(1, len(records)),
            "with_e_hull": sum(labels[r.label].e_hull is not None for r in records),
            f"e_hull_below_{settings.e_hull_max}": len(kept),
            "kept_by_source": dict(Counter(r.source for r in kept)),
        },
        "hull": {
            "name": hull.name,
            "entries": len(hull),
            "mp_points": len(mp_points),
            "mp_consistency": consistency,
            "mp_used": use_mp,
            "elemental_references": mu,
        },
        "timings": timings,
        "energy_cache_rows_added": shared,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "versions": {p: _version(p) for p in ("pymatgen", "chgnet", "torch", "ase")},
    }
    return TrainingSetBuild(records=records, labels=labels, kept=kept, report=report, hull=hull)


def write_build(build: TrainingSetBuild, out_dir: Path, split_of: dict[str, str]) -> None:
    """Write ``labels.csv.gz`` (one row per selected crystal), ``hull.json.gz`` (the hull, total
    energies at the labelling level) and ``report.json``.

    ``split_of`` maps the id of each crystal in the training tensors to ``train``/``val``.
    """
    columns = ["id", "source", "formula", "n_atoms", "status", "n_steps"]
    columns += ["energy_per_atom", "e_form", "e_hull", "split"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for record in build.records:
        label = build.labels[record.label]
        energies = (label.energy_per_atom, label.e_form, label.e_hull)
        writer.writerow(
            [record.label, record.source, record.formula, len(record.structure), label.status]
            + [label.n_steps, *("" if v is None else f"{v:.6f}" for v in energies)]
            + [split_of.get(record.label, "")]
        )
    with atomic_output(out_dir / "labels.csv.gz") as handle:  # gzipped, same bytes per build
        handle.write(text.getvalue())
    build.hull.save(out_dir / "hull.json.gz")
    with atomic_output(out_dir / "report.json") as handle:
        json.dump(build.report, handle, indent=2, sort_keys=True, default=str)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"
