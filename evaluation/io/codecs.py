"""Crystal records to and from ASE ``Atoms`` (extxyz) and JSON, and the readers of both.

The compact JSON form (:func:`record_to_compact`) is what ``write_jsonl`` writes and the
shipped reference set uses: plain arrays, rebuilt into a ``Structure`` without any parsing.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from evaluation.io.formats import (
    ID_COLUMNS,
    Collector,
    as_energy,
    check_crystal_arrays,
    first_present,
    is_missing,
    json_default,
    read_text,
    to_builtin,
)
from evaluation.records import CrystalInputError, CrystalRecord

#: extxyz ``info`` key holding what the plain key=value pairs cannot carry (JSON).
EXTXYZ_EXTRA_KEY = "crystalforge"
_EXTXYZ_RESERVED = {"id", "source", "energy", "energy_metadata", EXTXYZ_EXTRA_KEY}


# --------------------------------------------------------------------------- extxyz


def _plain_extxyz_key(key: str) -> bool:
    return key not in _EXTXYZ_RESERVED and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is not None


def _plain_extxyz_value(value: Any) -> bool:
    """Whether ASE reads ``key=value`` back unchanged (if not, it goes in the JSON extra)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return math.isfinite(value)
    if isinstance(value, str):
        # ASE turns numbers, T/F/True/False and space-separated lists into other types.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.+\-/()]*", value):
            return False
        return value.lower() not in ("t", "f", "true", "false", "nan", "inf", "infinity")
    return False


#: Prefix of an extra-data value stored as base64 (see :func:`_encode_extra`).
_BASE64 = "base64:"


def _encode_extra(extra: dict[str, Any]) -> str:
    """The JSON of ``extra`` as an extxyz info value that reads back unchanged.

    ASE's extxyz writer escapes a value's quotes but not its backslashes, so any JSON escape
    (``\\"`` of a quote in a string, ``\\u00c5`` of an Å, ``\\t``) came back garbled or lost
    the whole entry. JSON without escapes goes as it is (readable); JSON that needs one (a quote,
    a backslash or a control character in some string) goes as base64.
    """
    text = json.dumps(extra, sort_keys=True, default=json_default, ensure_ascii=False)
    if "\\" not in text:
        return text
    # unpadded: an "=" would end the value for ASE's key=value parser
    return _BASE64 + base64.b64encode(text.encode()).decode().rstrip("=")


def _decode_extra(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_BASE64):
        encoded = value[len(_BASE64) :]
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode()
    return value


def record_to_atoms(record: CrystalRecord) -> Any:
    """An ASE ``Atoms`` carrying id, source, properties and energy (ordered structures only).

    Sites become their element (oxidation states are not kept); ``id``, ``source`` and
    plain properties become ``info`` keys, the rest goes as JSON under ``crystalforge``.
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    structure = record.structure
    atoms = Atoms(
        symbols=[site.specie.symbol for site in structure],
        positions=structure.cart_coords,
        cell=structure.lattice.matrix,
        pbc=True,
    )
    extra: dict[str, Any] = {}
    for key, value in (("id", record.id), ("source", record.source)):
        if _plain_extxyz_value(value):
            atoms.info[key] = value
        else:
            extra[key] = value
    odd_properties = {}
    for key, value in record.properties.items():
        if _plain_extxyz_key(key) and _plain_extxyz_value(value):
            atoms.info[key] = value
        else:
            odd_properties[key] = value
    if odd_properties:
        extra["properties"] = odd_properties
    if record.energy_metadata:
        extra["energy_metadata"] = record.energy_metadata
    if extra:
        atoms.info[EXTXYZ_EXTRA_KEY] = _encode_extra(extra)
    if record.energy is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=record.energy)
    return atoms


def _split_xyz_frames(text: str) -> Iterator[tuple[int, str | None, str]]:
    """Yield ``(frame number, frame text or None, problem)``; stops at the first broken frame."""
    lines = text.splitlines()
    start, number = 0, 0
    while start < len(lines):
        if not lines[start].strip():
            start += 1
            continue
        number += 1
        try:
            n_atoms = int(lines[start].strip())
        except ValueError:
            found = lines[start].strip()[:40]
            yield number, None, f"expected an atom count, found {found!r}; rest of file not read"
            return
        chunk = lines[start : start + n_atoms + 2]
        if len(chunk) < n_atoms + 2:
            yield number, None, "file ends inside this frame"
            return
        yield number, "\n".join(chunk) + "\n", ""
        start += n_atoms + 2


def read_extxyz(path: Path, source: str, collector: Collector) -> None:
    """An (extended) XYZ file via ASE; each frame is a crystal, read on its own."""
    from ase.io import read as ase_read

    for number, frame_text, problem in _split_xyz_frames(read_text(path)):
        if collector.full:
            return
        location = f"{path.name} frame {number}"
        if frame_text is None:
            collector.skip(location, problem)
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                atoms = ase_read(io.StringIO(frame_text), format="extxyz", index=0)
        except KeyError as exc:  # ASE looks chemical symbols up in a table
            collector.skip(location, f"unknown element {exc.args[0]!r}")
            continue
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for bad frames
            message = str(exc).splitlines()[0][:200] if str(exc) else ""
            collector.skip(location, f"unreadable frame ({type(exc).__name__}: {message})")
            continue
        _add_atoms(collector, atoms, location, f"frame-{number}", source)


def _add_atoms(
    collector: Collector, atoms: Any, location: str, default_id: str, source: str
) -> None:
    if not all(atoms.pbc):
        collector.skip(location, f"not a periodic crystal (pbc={list(map(bool, atoms.pbc))})")
        return
    cell = np.asarray(atoms.cell.array, dtype=float)
    if abs(np.linalg.det(cell)) < 1e-6 * max(float(np.prod(np.linalg.norm(cell, axis=1))), 1.0):
        # Checked before building: pymatgen must invert the cell to use Cartesian positions.
        collector.skip(location, "zero-volume cell (lattice vectors missing or coplanar)")
        return
    info = {key: to_builtin(value) for key, value in atoms.info.items()}
    extra: dict[str, Any] = {}
    try:
        extra = json.loads(_decode_extra(info.get(EXTXYZ_EXTRA_KEY, "{}")))
    except (TypeError, ValueError):  # JSONDecodeError and a bad base64 are ValueErrors
        extra = {}  # not written by us; ignore it
    if not isinstance(extra, dict):
        extra = {}
    energy = None
    if atoms.calc is not None and "energy" in atoms.calc.results:
        energy = float(atoms.calc.results["energy"])
    else:
        energy = as_energy(info.get("energy"))
    record_id = str(extra.get("id", info.get("id", default_id)))
    record_source = str(extra.get("source", info.get("source", source)))
    properties = {
        key: value
        for key, value in info.items()
        if key not in _EXTXYZ_RESERVED and not is_missing(value)
    }
    properties.update(extra.get("properties", {}))
    structure = Structure(
        Lattice(cell),
        atoms.get_chemical_symbols(),
        atoms.positions,
        coords_are_cartesian=True,
    )
    record = CrystalRecord(
        structure, record_id, record_source, properties, energy, extra.get("energy_metadata", {})
    )
    collector.add(location, record)


# --------------------------------------------------------------------------- JSON / JSONL


_COMPOSITIONS: dict[str, Composition] = {}


def _site_composition(species: str | dict[str, float]) -> Composition:
    # Sites built from a cached Composition skip pymatgen's per-site parsing (3x faster reads).
    try:
        if isinstance(species, dict):
            return Composition(species)
        if species not in _COMPOSITIONS:
            _COMPOSITIONS[species] = Composition({species: 1})
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unknown species {species!r}") from exc
    return _COMPOSITIONS[species]


def record_to_compact(record: CrystalRecord, decimals: int | None = None) -> dict[str, Any]:
    """The compact JSON form of a record (what ``write_jsonl`` writes, one per line)."""
    structure = record.structure
    lattice, frac_coords = structure.lattice.matrix, structure.frac_coords
    if decimals is not None:
        # "+ 0.0" turns -0.0 into 0.0 so that equal inputs give equal bytes.
        lattice = np.round(lattice, decimals) + 0.0
        frac_coords = np.round(frac_coords, decimals) + 0.0
    species: list[str | dict[str, float]] = [
        str(site.specie)
        if site.is_ordered
        else {str(sp): occu for sp, occu in site.species.items()}
        for site in structure
    ]
    compact: dict[str, Any] = {
        "id": record.id,
        "source": record.source,
        "lattice": lattice.tolist(),
        "species": species,
        "frac_coords": frac_coords.tolist(),
        "properties": record.properties,
    }
    if record.energy is not None:
        compact["energy"] = record.energy
    if record.energy_metadata:
        compact["energy_metadata"] = record.energy_metadata
    return compact


def record_from_compact(item: dict[str, Any], default_id: str, source: str) -> CrystalRecord:
    """Inverse of :func:`record_to_compact` (``id``/``source`` fall back to the defaults).

    The arrays are checked (:func:`check_crystal_arrays`) before the structure is built;
    a ValueError gives the reason for an unusable crystal.
    """
    lattice = np.asarray(item["lattice"], dtype=float)
    frac_coords = np.asarray(item["frac_coords"], dtype=float)
    site_species = [_site_composition(species) for species in item["species"]]
    wrong_shape = lattice.shape != (3, 3) or frac_coords.shape != (len(site_species), 3)
    if wrong_shape and (site_species or frac_coords.size):
        raise ValueError(
            f"lattice must be 3x3 and frac_coords one row of 3 per species; got "
            f"{lattice.shape}, {frac_coords.shape} for {len(site_species)} species"
        )
    reason = check_crystal_arrays(lattice, frac_coords, site_species)
    if reason:
        raise ValueError(reason)
    energy = item.get("energy")
    return CrystalRecord(
        Structure(Lattice(lattice), site_species, frac_coords),
        str(item.get("id") or default_id),
        str(item.get("source") or source),
        dict(item.get("properties") or {}),
        float(energy) if energy is not None else None,
        dict(item.get("energy_metadata") or {}),
    )


def _record_from_entry(item: dict[str, Any], default_id: str, source: str) -> CrystalRecord:
    """A ``ComputedStructureEntry`` dict: its corrected energy and how it was computed."""
    entry = ComputedStructureEntry.from_dict(item)
    metadata: dict[str, Any] = {
        "uncorrected_energy": entry.uncorrected_energy,
        "correction": entry.correction,
        # which scheme made ``correction`` (e.g. "MP2020 anion correction (oxide)")
        "energy_adjustments": sorted({adjustment.name for adjustment in entry.energy_adjustments}),
    }
    for key in ("entry_id", "parameters", "data"):
        if item.get(key):
            metadata[key] = item[key]
    run_type = (item.get("parameters") or {}).get("run_type")
    if run_type:
        metadata["level_of_theory"] = run_type
    record_id = str(entry.entry_id) if entry.entry_id else default_id
    return CrystalRecord(entry.structure, record_id, source, {}, entry.energy, metadata)


def _record_from_document(item: dict[str, Any], default_id: str, source: str) -> CrystalRecord:
    """Any other ``{"structure": {...}, ...}`` document: scalar fields become properties."""
    structure = Structure.from_dict(item["structure"])
    id_key = first_present(item, ID_COLUMNS + ("task_id",))
    energy = item.get("energy")
    properties = {
        key: value
        for key, value in item.items()
        if key not in ("structure", id_key, "energy")
        and isinstance(value, str | int | float | bool)
        and not is_missing(value)
    }
    return CrystalRecord(
        structure,
        str(item[id_key]) if id_key else default_id,
        source,
        properties,
        as_energy(energy),
    )


def _record_from_json(item: Any, default_id: str, source: str) -> CrystalRecord:
    if not isinstance(item, dict):
        raise ValueError(f"expected a JSON object, found {type(item).__name__}")
    kind = item.get("@class")
    if _is_compact(item):
        return record_from_compact(item, default_id, source)
    if kind == "ComputedStructureEntry":
        return _record_from_entry(item, default_id, source)
    if isinstance(item.get("structure"), dict):
        return _record_from_document(item, default_id, source)
    if kind in ("Structure", "IStructure") or ("lattice" in item and "sites" in item):
        structure = Structure.from_dict(item)
        record_id = structure.properties.get("material_id") or structure.properties.get("id")
        return CrystalRecord(structure, str(record_id or default_id), source)
    if kind == "ComputedEntry":
        raise ValueError("a ComputedEntry has no structure")
    raise ValueError(
        "not a crystal: expected a pymatgen Structure or ComputedStructureEntry dict "
        "or a CrystalForge record"
    )


def read_json(path: Path, source: str, collector: Collector) -> None:
    """``.json``: a list of crystals, one crystal, or an ``{id: crystal}`` mapping."""
    try:
        content = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise CrystalInputError(f"{path}: invalid JSON ({exc})") from exc
    if isinstance(content, dict) and not _looks_like_crystal(content):
        items = [(f"{path.name} key {key!r}", str(key), value) for key, value in content.items()]
    else:
        content = content if isinstance(content, list) else [content]
        items = [(f"{path.name} item {n}", f"item-{n}", v) for n, v in enumerate(content, 1)]
    for location, default_id, item in items:
        if collector.full:
            return
        _add_json_item(collector, item, location, default_id, source)


def read_jsonl(path: Path, source: str, collector: Collector) -> None:
    """``.jsonl``: one crystal per line (blank lines ignored)."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if collector.full:
            return
        if not line.strip():
            continue
        location = f"{path.name} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            collector.skip(location, f"invalid JSON ({exc.msg})")
            continue
        _add_json_item(collector, item, location, f"item-{number}", source)


def _is_compact(item: Any) -> bool:
    return isinstance(item, dict) and {"lattice", "species", "frac_coords"} <= item.keys()


def _looks_like_crystal(item: dict[str, Any]) -> bool:
    return "@class" in item or "structure" in item or "lattice" in item


def _add_json_item(
    collector: Collector, item: Any, location: str, default_id: str, source: str
) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = _record_from_json(item, default_id, source)
    except Exception as exc:  # noqa: BLE001 - from_dict raises many types for bad input
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        collector.skip(location, message)
        return
    collector.add(location, record, checked=_is_compact(item))
