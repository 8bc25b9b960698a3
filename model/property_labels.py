"""Property labels of a training set, for fine-tuning the model on properties (paper B.1).

For every crystal of a ``data build`` folder (``dataset.pt``, ``labels.csv.gz``,
``report.json``), :func:`label_properties` computes or looks up the requested properties of
:data:`PROPERTIES`, each recorded with its level of theory and source:

- from the structure: ``chemical_system``, ``space_group``; tabulated: ``hhi``;
- from the build itself: ``energy_above_hull`` (the build's MLFF E_hull, ``labels.csv.gz``);
- published DFT: ``band_gap`` (JARVIS-DFT OptB88vdW, only for crystals from JARVIS);
- MLFF: ``magnetic_density`` (CHGNet moments), ``bulk_modulus`` (MLFF equation of state).

Computed labels are cached per crystal and property in ``properties-cache.jsonl`` (keyed by id,
structure hash and settings), so an interrupted run resumes and a cached label, or a cached
failure, is never computed again; looked-up labels are read afresh every run. The result is
``properties.csv.gz`` (``id`` and one column per property, empty = unlabelled) and
``properties.json`` (what each column is), both written atomically and merged with the
columns an earlier run wrote.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from model.property_compute import (
    SYMPREC,
    EOSSettings,
    Outcome,
    build_e_hulls,
    jarvis_gaps_of,
    run_chunks,
)

logger = logging.getLogger(__name__)

CACHE_FILE = "properties-cache.jsonl"
CSV_FILE = "properties.csv.gz"
JSON_FILE = "properties.json"
#: The build's MLFF when its ``report.json`` does not name one (``data build``'s default).
DEFAULT_BUILD_LEVEL = "mlff:chgnet-0.3.0"
#: Crystals per cached chunk: structure-derived, and each MLFF property.
CHUNKS = {"structure": 512, "magnetic_density": 256, "bulk_modulus": 32}
#: The bulk-modulus settings every run uses.
EOS_SETTINGS = EOSSettings()

Kind = Literal["scalar", "categorical", "chemical_system", "space_group"]
#: ``progress(property, done, total)``.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PropertySpec:
    """A built-in property.

    ``origin`` is ``structure`` (computed from the structure, cached), ``lookup`` (read from a
    file each run, never cached) or ``mlff`` (computed with the MLFF, cached, and capped by
    ``limit``). ``level_of_theory`` may hold ``{mlff}`` (the labelling MLFF's tag) or
    ``{build}`` (the build's MLFF); ``settings`` are recorded in ``properties.json``.
    """

    name: str
    kind: Kind
    unit: str
    level_of_theory: str
    source: str
    origin: Literal["structure", "lookup", "mlff"]
    notes: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


_GEOMETRY = "the dataset.pt structure (the source's DFT-relaxed geometry, Niggli cell, float32)"
PROPERTIES: dict[str, PropertySpec] = {
    spec.name: spec
    for spec in (
        PropertySpec(
            "chemical_system", "chemical_system", "", "structure",
            "elements of the dataset.pt structure, sorted alphabetically and joined by '-'",
            "structure",
        ),
        PropertySpec(
            "space_group", "space_group", "", "structure",
            f"international number (1-230) by pymatgen SpacegroupAnalyzer (spglib) on {_GEOMETRY}",
            "structure",
            "symprec as evaluation.metrics.chemistry.SYMPREC; a failed analysis is unlabelled",
            {"symprec": SYMPREC, "angle_tolerance": 5.0},
        ),
        PropertySpec(
            "energy_above_hull", "scalar", "eV/atom", "{build}",
            "e_hull of the build's labels.csv.gz: the build's MLFF-relaxed energy against the "
            "build's own MLFF convex hull (not a DFT hull)",
            "lookup",
        ),
        PropertySpec(
            "hhi", "scalar", "", "tabulated (composition)",
            "production Herfindahl-Hirschman index, pymatgen.analysis.hhi.HHIModel (Gaultois "
            "et al., Chem. Mater. 25, 2911 (2013)), element values weighted by mass fraction "
            "as pymatgen's get_hhi does; 0-10000 scale",
            "structure",
            "crystals with an element missing from pymatgen's table (H, Ne, Ar, Kr, Xe, Tc, "
            "actinides, ...) are unlabelled",
            {"weights": "mass fractions", "table": "production"},
        ),
        PropertySpec(
            "magnetic_density", "scalar", "μB/Å³", "{mlff}",
            f"Σ_i |m_i| / V with CHGNet's site magnetic moments, single point on {_GEOMETRY}",
            "mlff",
            "CHGNet predicts moment magnitudes only (trained on |m| of MPtrj DFT), so an "
            "antiferromagnet counts like a ferromagnet and non-magnetic crystals keep residual "
            "moments of ~0.01 μB/site (~1e-3 μB/Å³); the paper's labels are DFT, ferromagnetic",
            {"batch_size": 64, "geometry": "dataset.pt structure, not re-relaxed"},
        ),
        PropertySpec(
            "bulk_modulus", "scalar", "GPa",
            "{mlff} (BM EOS, ±6 %, ions relaxed)",
            "MLFF equation of state: cell and ions relaxed, the relaxed cell scaled isotropically "
            "to 7 volumes within ±6 %, ions relaxed at each fixed cell (batched FIRE), energies "
            "fitted with pymatgen's Birch-Murnaghan EOS",
            "mlff",
            "with the cell shape fixed this is the relaxed-ion Voigt-type modulus: equal to the "
            "Voigt-Reuss-Hill average for cubic crystals, above it for anisotropic ones (the "
            "paper's labels are DFT elastic-tensor VRH). Unlabelled: a failed relaxation or "
            "fit, a non-positive modulus, a fitted V0 outside the sampled volumes. B' from a "
            "±6 % window is poorly determined (negative for ~8 % of crystals, whose B0 moved "
            "by <15 % between ±6 and ±12 % windows and BM/Vinet/Murnaghan fits in a check of "
            "four): it is kept in the cache's details, not used as a filter",
            {
                "eos": EOS_SETTINGS.eos,
                "volume_range": EOS_SETTINGS.volume_range,
                "n_volumes": EOS_SETTINGS.n_volumes,
                "fmax": EOS_SETTINGS.fmax,
                "cell_steps": EOS_SETTINGS.cell_steps,
                "ion_steps": EOS_SETTINGS.ion_steps,
            },
        ),
        PropertySpec(
            "band_gap", "scalar", "eV", "dft:optb88vdw (JARVIS-DFT)",
            "JARVIS-DFT OptB88vdW band gap (bandgap_optb88vdw) published for the very structure, "
            "matched by JARVIS id in data/reference/structures.jsonl.gz (LeMaterial sample)",
            "lookup",
            "only crystals from lemat/jarvis are labelled, no other functional or source is "
            "mixed in; a semi-local gap (underestimates experiment), 0 = metallic in JARVIS",
        ),
    )
}  # fmt: skip


def resolve_properties(names: str | Iterable[str]) -> list[str]:
    """Property names from a list or a comma-separated string, in order, without repeats.

    Raises
    ------
    ValueError
        An unknown name (naming it and the built-ins), or no name at all.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    wanted = list(dict.fromkeys(name.strip() for name in items if name.strip()))
    if not wanted:
        raise ValueError(f"no property given; built-ins: {', '.join(PROPERTIES)}")
    unknown = [name for name in wanted if name not in PROPERTIES]
    if unknown:
        raise ValueError(
            f"unknown propert{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(repr(u) for u in unknown)}; built-ins: {', '.join(PROPERTIES)}"
        )
    return wanted


@dataclass
class PropertySummary:
    """What one property of a :func:`label_properties` run came to."""

    name: str
    labelled: int
    unlabelled: int
    computed: int
    from_cache: int
    wall_s: float
    reasons: dict[str, int]
    origin: str = "structure"


@dataclass
class LabelRun:
    """The outcome of :func:`label_properties`."""

    n_crystals: int
    summaries: dict[str, PropertySummary]
    csv_path: Path
    json_path: Path
    values: dict[str, list[Any]]


@dataclass
class _Build:
    """A data build as the labelling needs it."""

    folder: Path
    ids: list[str]
    structures: list[Any]
    hashes: list[str]
    report: dict[str, Any]


def label_properties(
    build_dir: str | Path,
    properties: str | Iterable[str],
    *,
    model: str = "chgnet",
    n_jobs: int = 1,
    limit: int | None = None,
    progress: Progress | None = None,
) -> LabelRun:
    """Label every crystal of a data build with ``properties`` and write the label files.

    Parameters
    ----------
    build_dir
        A ``data build`` folder holding ``dataset.pt`` (and ``labels.csv.gz`` for
        ``energy_above_hull``).
    properties
        Names of :data:`PROPERTIES` (a list or a comma-separated string).
    model
        The MLFF of ``magnetic_density`` (CHGNet only) and ``bulk_modulus``.
    n_jobs
        Worker processes for the MLFF properties (1: this process).
    limit
        Compute at most this many new crystals per MLFF property in this run. Crystals are
        taken in a fixed pseudo-random order (CRC32 of the id), so a capped run is a sample
        unbiased by source and the next run extends it; 0 writes the files from the cache
        alone. The other properties are always complete.
    progress
        Called as ``progress(property, done, total)``.

    Returns
    -------
    LabelRun
        Per-property counts and timings, the files written, this run's columns.

    Raises
    ------
    ValueError
        Unknown property, bad ``n_jobs``/``limit``/``model``, a missing or unreadable
        ``dataset.pt`` (``DatasetError``), a missing ``labels.csv.gz`` or unreadable earlier
        label files: all checked before anything is computed or written.
    MLFFUnavailable
        The MLFF cannot be loaded (checked before any work).
    """
    names = resolve_properties(properties)
    folder = Path(build_dir)
    _check_arguments(folder, names, model, n_jobs, limit)
    existing = _read_existing(folder)
    tag = _mlff_tag(model) if any(PROPERTIES[n].origin == "mlff" for n in names) else ""
    build = _load_build(folder)
    cache = _read_cache(folder / CACHE_FILE)
    columns: dict[str, list[Outcome | None]] = {}
    summaries: dict[str, PropertySummary] = {}
    for name in names:
        started = time.perf_counter()
        spec = PROPERTIES[name]
        if spec.origin == "lookup":
            outcomes: list[Outcome | None] = list(_LOOKUPS[name](build))
            computed = cached = 0
            if progress:
                progress(name, len(outcomes), len(outcomes))
        else:
            outcomes, computed, cached = _computed(
                build, name, _settings_key(name, tag), cache, model, n_jobs, limit, progress
            )
        columns[name] = outcomes
        summaries[name] = _summary(name, outcomes, computed, cached, time.perf_counter() - started)
    csv_path, json_path = _write(build, names, columns, summaries, existing, model, tag)
    values = {n: [o.value if o else None for o in col] for n, col in columns.items()}
    return LabelRun(len(build.ids), summaries, csv_path, json_path, values)


# --- checks and inputs ------------------------------------------------------------------------
def _check_arguments(
    folder: Path, names: Sequence[str], model: str, n_jobs: int, limit: int | None
) -> None:
    from evaluation.relax.calculators import canonical_model_name

    if not folder.is_dir():
        raise ValueError(f"{folder}: no such build folder")
    if not (folder / "dataset.pt").is_file():
        raise ValueError(f"{folder}: no dataset.pt (run `crystalforge data build` first)")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a whole number of at least 1, got {n_jobs!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a whole number of at least 0, got {limit!r}")
    if any(PROPERTIES[n].origin == "mlff" for n in names):
        canonical = canonical_model_name(model)  # ValueError for an unknown MLFF
        if "magnetic_density" in names and canonical != "chgnet":
            raise ValueError(
                f"magnetic_density needs CHGNet's magnetic moments; --model {model} has none"
            )
    if "energy_above_hull" in names and not (folder / "labels.csv.gz").is_file():
        raise ValueError(f"{folder}: energy_above_hull needs labels.csv.gz, which is missing")


def _mlff_tag(model: str) -> str:
    """The MLFF's level-of-theory tag; loading it here fails at once if it is missing."""
    from evaluation.relax.calculators import load_calculator

    return load_calculator(model)[1]


def _load_build(folder: Path) -> _Build:
    from evaluation.hull.mlff_reference import structure_hash
    from model.data import CrystalTensors
    from model.structures import batch_to_structures

    tensors = CrystalTensors.load(folder / "dataset.pt")
    if len(set(tensors.ids)) != len(tensors.ids):
        raise ValueError(f"{folder / 'dataset.pt'} holds repeated ids")
    import torch

    structures = batch_to_structures(tensors.batch(torch.arange(len(tensors))))
    report: dict[str, Any] = {}
    if (folder / "report.json").is_file():
        try:
            report = json.loads((folder / "report.json").read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{folder / 'report.json'} is unreadable: {error}") from None
    hashes = [structure_hash(s) for s in structures]
    return _Build(folder, list(tensors.ids), structures, hashes, report)


def _read_existing(folder: Path) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """Columns (id -> cell) and metadata of earlier label files, to merge with."""
    columns: dict[str, dict[str, str]] = {}
    described: dict[str, Any] = {}
    try:
        if (folder / CSV_FILE).is_file():
            with gzip.open(folder / CSV_FILE, "rt", newline="") as handle:
                rows = list(csv.reader(handle))
            if not rows or rows[0][:1] != ["id"]:
                raise ValueError("no id column")
            for k, name in enumerate(rows[0][1:], start=1):
                columns[name] = {row[0]: row[k] for row in rows[1:]}
        if (folder / JSON_FILE).is_file():
            described = json.loads((folder / JSON_FILE).read_text()).get("properties", {})
    except (OSError, EOFError, ValueError, IndexError, csv.Error, AttributeError) as error:
        raise ValueError(
            f"cannot merge with the earlier labels in {folder}: {error}; move them away"
        ) from None
    return columns, described


# --- the cache --------------------------------------------------------------------------------
def _settings_key(name: str, tag: str) -> str:
    if name == "space_group":
        return f"symprec={SYMPREC}"
    if name == "hhi":
        return "pymatgen HHIModel production|mass fractions"
    if name == "magnetic_density":
        return f"{tag}|single point|sum |m| / V"
    if name == "bulk_modulus":
        return f"{tag}|{EOS_SETTINGS.key()}"
    return "v1"


def _read_cache(path: Path) -> dict[tuple[str, str, str, str], Outcome]:
    cache: dict[tuple[str, str, str, str], Outcome] = {}
    if not path.exists():
        return cache
    with path.open() as handle:
        for line in handle:
            try:
                row = json.loads(line)
                key = (row["property"], row["settings"], row["id"], row["hash"])
                cache[key] = Outcome(row["value"], row.get("reason", ""), row.get("details", {}))
            except (json.JSONDecodeError, KeyError, TypeError):  # a line torn by a kill
                continue
    return cache


def _computed(
    build: _Build,
    name: str,
    settings: str,
    cache: dict[tuple[str, str, str, str], Outcome],
    model: str,
    n_jobs: int,
    limit: int | None,
    progress: Progress | None,
) -> tuple[list[Outcome | None], int, int]:
    """Cached or freshly computed outcomes (None: not computed, over ``limit``)."""
    keys = [(name, settings, i, h) for i, h in zip(build.ids, build.hashes, strict=True)]
    outcomes: list[Outcome | None] = [cache.get(key) for key in keys]
    pending = [k for k, outcome in enumerate(outcomes) if outcome is None]
    n_cached = len(keys) - len(pending)
    mlff = PROPERTIES[name].origin == "mlff"
    if mlff:  # a fixed, source-blind order, so a capped run is an unbiased sample
        pending.sort(key=lambda k: (zlib.crc32(build.ids[k].encode()), build.ids[k]))
        if limit is not None:
            pending = pending[:limit]
    total = n_cached + len(pending)
    done = n_cached
    if progress:
        progress(name, done, total)
    if not pending:
        return outcomes, 0, n_cached
    size = CHUNKS.get(name, CHUNKS["structure"])
    chunks = [pending[start : start + size] for start in range(0, len(pending), size)]
    with (build.folder / CACHE_FILE).open("a") as handle:

        def deliver(c: int, results: list[Outcome]) -> None:
            nonlocal done
            for k, outcome in zip(chunks[c], results, strict=True):
                outcomes[k] = cache[keys[k]] = outcome
                row = {"id": keys[k][2], "hash": keys[k][3], "property": name}
                row.update(settings=settings, value=_plain(outcome.value))
                row.update(reason=outcome.reason, details=outcome.details)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            done += len(results)
            if progress:
                progress(name, done, total)

        structures = [[build.structures[k] for k in chunk] for chunk in chunks]
        run_chunks(name, structures, model, n_jobs if mlff else 1, deliver)
    return outcomes, len(pending), n_cached


def _plain(value: Any) -> Any:
    """A JSON-safe label (numpy scalars to Python; non-finite floats to None)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | bool) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


# --- lookups ----------------------------------------------------------------------------------
_LOOKUPS: dict[str, Callable[[_Build], list[Outcome]]] = {
    "energy_above_hull": lambda build: build_e_hulls(build.folder / "labels.csv.gz", build.ids),
    "band_gap": lambda build: jarvis_gaps_of(build.ids, build.structures),
}


# --- output -----------------------------------------------------------------------------------
def _summary(
    name: str, outcomes: list[Outcome | None], computed: int, cached: int, wall: float
) -> PropertySummary:
    reasons = Counter(
        "not computed yet (limit)" if o is None else o.reason
        for o in outcomes
        if o is None or not o.labelled
    )
    labelled = sum(o is not None and o.labelled for o in outcomes)
    return PropertySummary(
        name,
        labelled,
        len(outcomes) - labelled,
        computed,
        cached,
        wall,
        dict(reasons.most_common()),
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _statistics(kind: str, values: list[Any]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {}
    if kind == "scalar":
        import numpy as np

        array = np.asarray(present, dtype=float)
        return {
            "mean": float(array.mean()),
            "std": float(array.std()),
            "min": float(array.min()),
            "median": float(np.median(array)),
            "max": float(array.max()),
        }
    counts = Counter(present)
    return {"distinct": len(counts), "most_common": [[k, n] for k, n in counts.most_common(10)]}


def _describe(
    name: str, summary: PropertySummary, values: list[Any], tag: str, build: _Build
) -> dict[str, Any]:
    spec = PROPERTIES[name]
    build_level = build.report.get("level_of_theory") or DEFAULT_BUILD_LEVEL
    entry: dict[str, Any] = {
        "kind": spec.kind,
        "unit": spec.unit,
        "level_of_theory": spec.level_of_theory.format(mlff=tag, build=build_level),
        "source": spec.source,
        "labelled": summary.labelled,
        "unlabelled": summary.unlabelled,
        "unlabelled_reasons": dict(list(summary.reasons.items())[:20]),
        "notes": spec.notes,
        **spec.settings,
        "statistics": _statistics(spec.kind, values),
        "last_run": {
            "computed": summary.computed,
            "from_cache": summary.from_cache,
            "wall_s": round(summary.wall_s, 2),
        },
    }
    if name == "energy_above_hull":
        hull = build.report.get("hull", {})
        entry["notes"] = (
            f"hull: {hull.get('name', 'the build hull')}"
            + ("" if "level_of_theory" in build.report else "; report.json names no level")
            + "; every crystal of a build lies below its e_hull_max "
            + f"({build.report.get('settings', {}).get('e_hull_max', '?')} eV/atom)"
        )
    return entry


def _write(
    build: _Build,
    names: list[str],
    columns: dict[str, list[Outcome | None]],
    summaries: dict[str, PropertySummary],
    existing: tuple[dict[str, dict[str, str]], dict[str, Any]],
    model: str,
    tag: str,
) -> tuple[Path, Path]:
    from evaluation.io.crystals import atomic_output

    old_columns, old_described = existing
    cells = {n: [_cell(o.value if o else None) for o in columns[n]] for n in names}
    order = list(old_columns) + [n for n in names if n not in old_columns]
    for name in order:
        if name not in cells:  # an earlier run's column, matched by id
            cells[name] = [old_columns[name].get(i, "") for i in build.ids]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", *order])
    for row, identifier in enumerate(build.ids):
        writer.writerow([identifier, *(cells[name][row] for name in order)])
    csv_path, json_path = build.folder / CSV_FILE, build.folder / JSON_FILE
    with atomic_output(csv_path) as handle:
        handle.write(text.getvalue())
    described = {n: old_described[n] for n in order if n in old_described and n not in names}
    for name in names:
        values = [o.value if o and o.labelled else None for o in columns[name]]
        described[name] = _describe(name, summaries[name], values, tag, build)
        if PROPERTIES[name].origin == "mlff":
            described[name]["model"] = model
    payload = {
        "properties": {n: described[n] for n in order if n in described},
        "dataset": str(build.folder / "dataset.pt"),
        "n_crystals": len(build.ids),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {p: _version(p) for p in _PACKAGES},
    }
    with atomic_output(json_path) as handle:
        handle.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return csv_path, json_path


_PACKAGES = ("crystalforge", "pymatgen", "spglib", "chgnet", "torch", "torch-sim-atomistic", "ase")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"
