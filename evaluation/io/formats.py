"""The readers of CIF-based inputs (CSV, folder, zip, .cif) and what every reader shares.

:func:`evaluation.io.crystals.read_crystals` picks one reader by what the path is. Every reader
feeds a :class:`Collector`, which checks each crystal with :func:`check_structure` and turns a
bad row, frame or file into a :class:`ReadProblem` instead of an exception. The extxyz and
JSON readers live in :mod:`evaluation.io.codecs`.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Composition, DummySpecies, Structure

from evaluation.io.cif import parse_cif_text
from evaluation.records import CrystalInputError, CrystalRecord, ReadProblem

#: Columns of a metadata.csv that name the CIF file a row belongs to.
FILENAME_COLUMNS = ("filename", "cif_filename", "file", "cif_file")
#: Columns of a metadata.csv or CSV that give a crystal's id, in order of preference.
ID_COLUMNS = ("material_id", "id", "jid", "entry_id")
#: Prefix that keeps a property apart from a metadata.csv column of the same reserved name.
PROPERTY_PREFIX = "property:"
#: metadata.csv columns that describe the record itself rather than a property.
_RECORD_COLUMNS = ("source", "formula", "energy", "energy_metadata")
_MISSING_MARKERS = {"nan", "na", "n/a", "none", "null"}
_INTEGER = re.compile(r"[+-]?\d+")


# --------------------------------------------------------------------------- checks and collection


def check_structure(structure: Structure) -> str | None:
    """Why a structure is unusable, or None when it is fine.

    Rejects empty structures (no sites, or only vacancies), non-finite lattice or coordinates,
    zero-volume cells and unknown elements (pymatgen ``DummySpecies`` such as ``Xx``).
    Partially occupied (disordered) sites are fine.

    Parameters
    ----------
    structure
        The crystal to check.

    Returns
    -------
    str | None
        A one-line reason, or None.
    """
    return check_crystal_arrays(
        structure.lattice.matrix, structure.frac_coords, [site.species for site in structure]
    )


def check_crystal_arrays(
    lattice_matrix: np.ndarray, frac_coords: np.ndarray, site_species: list[Composition]
) -> str | None:
    """:func:`check_structure` on the arrays a structure is made of (before building it)."""
    if len(site_species) == 0:
        return "empty structure (no sites)"
    # Plain floats: for one 3x3 matrix they are several times faster than numpy calls.
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = np.asarray(lattice_matrix, dtype=float).tolist()
    if not all(map(math.isfinite, (ax, ay, az, bx, by, bz, cx, cy, cz))):
        return "non-finite lattice vector (NaN or inf)"
    if not np.isfinite(frac_coords).all():
        return "non-finite atomic coordinate (NaN or inf)"
    volume = abs(ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx))
    lengths = math.hypot(ax, ay, az) * math.hypot(bx, by, bz) * math.hypot(cx, cy, cz)
    if volume < 1e-6 * max(lengths, 1.0):
        return f"zero-volume cell (volume {volume:.3g} A^3)"
    # Readers share Composition objects between sites: look at each distinct one once.
    distinct = {id(composition): composition for composition in site_species}.values()
    for composition in distinct:
        for species in composition:
            if isinstance(species, DummySpecies):
                return f"unknown element {species.symbol!r}"
    if all(composition.num_atoms < 1e-8 for composition in distinct):
        return "no atoms (every site is vacant)"
    return None


@dataclass
class Collector:
    """Gathers the records and problems of one read, and stops it at ``limit`` records."""

    limit: int | None = None
    records: list[CrystalRecord] = field(default_factory=list)
    problems: list[ReadProblem] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.records) >= self.limit

    def skip(self, location: str, reason: str) -> None:
        self.problems.append(ReadProblem(location=location, reason=reason))

    def add(self, location: str, record: CrystalRecord, *, checked: bool = False) -> None:
        """Keep ``record`` if its structure passes :func:`check_structure`, else report it.

        ``checked=True``: the reader already checked the arrays it built the structure from.
        """
        reason = None if checked else check_structure(record.structure)
        if reason is None:
            self.records.append(record)
        else:
            self.skip(location, reason)


# --------------------------------------------------------------------------- small helpers


def parse_table_value(text: str) -> Any:
    """A CSV cell as int, float, bool or str; None when it is empty, NaN/inf or a missing marker."""
    text = text.strip()
    if not text or text.lower() in _MISSING_MARKERS:
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text
    return number if math.isfinite(number) else None


def to_builtin(value: Any) -> Any:
    """numpy scalars and arrays as plain Python values (for JSON and properties)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)``: numpy values as Python values, anything else an error."""
    converted = to_builtin(value)
    if converted is value:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return converted


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def as_energy(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or is_missing(value):
        return None
    return float(value)


def read_text(path: Path) -> str:
    """A text file's content, transparently gunzipped for ``.gz`` names."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
                return handle.read()
        return path.read_text(encoding="utf-8", errors="replace")
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise CrystalInputError(f"{path}: cannot read file ({exc})") from exc


def _read_table(source: Path | io.BytesIO, name: str) -> pd.DataFrame:
    """A CSV as strings (types are decided per cell by :func:`parse_table_value`)."""
    try:
        return pd.read_csv(source, dtype=str, keep_default_na=False, compression="infer")
    except pd.errors.EmptyDataError as exc:
        raise CrystalInputError(f"{name}: empty file") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise CrystalInputError(f"{name}: not a readable CSV file ({exc})") from exc


def first_present(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    present = set(columns)
    return next((name for name in candidates if name in present), None)


# --------------------------------------------------------------------------- CIF-based formats


def add_cif_text(
    collector: Collector,
    text: str,
    *,
    base_id: str,
    location: str,
    source: str,
    properties: dict[str, Any] | None = None,
    energy: float | None = None,
    energy_metadata: dict[str, Any] | None = None,
    listed_formula: str | None = None,
) -> None:
    """Add the crystals of one CIF (one per data block; ids get ``-<k>`` when there are several).

    ``listed_formula`` is the ``formula`` of a metadata row (see :func:`_with_listed_formula`).
    """
    blocks = parse_cif_text(text)
    if not blocks:
        collector.skip(location, "no CIF data block (not CIF text, or empty)")
        return
    for number, block in enumerate(blocks, start=1):
        if collector.full:
            return
        where = location if len(blocks) == 1 else f"{location} block {number} (data_{block.name})"
        if block.structure is None:
            collector.skip(where, block.error or "unparsable CIF")
            continue
        record_id = base_id if len(blocks) == 1 else f"{base_id}-{number}"
        props = _with_listed_formula(dict(properties or {}), listed_formula, block.structure)
        record = CrystalRecord(
            block.structure, record_id, source, props, energy, dict(energy_metadata or {})
        )
        collector.add(where, record)


def _with_listed_formula(
    properties: dict[str, Any], listed_formula: str | None, structure: Structure
) -> dict[str, Any]:
    """Keep a metadata ``formula`` only when it says more than the structure's composition.

    A formula that matches the composition is derived information (``CrystalRecord.formula``
    gives it, and ``write_cif_zip`` writes it for people to read), so it is not a property.
    """
    if listed_formula is None or "formula" in properties:
        return properties
    try:
        same = Composition(listed_formula).reduced_formula == structure.composition.reduced_formula
    except Exception:  # noqa: BLE001 - not a formula pymatgen can parse: keep the text
        same = False
    if not same:
        properties["formula"] = listed_formula
    return properties


def read_csv_table(path: Path, source: str, collector: Collector) -> None:
    """An MP-20 / Alex-MP-20 style CSV: a ``cif`` column plus property columns."""
    table = _read_table(path, str(path))
    if "cif" not in table.columns:
        columns = ", ".join(map(str, table.columns[:10]))
        raise CrystalInputError(
            f"{path}: no 'cif' column (found: {columns}); expected an MP-20-style CSV"
        )
    # pandas names a header-less leading column "Unnamed: 0": the index the CSV was saved with.
    unnamed = [c for c in table.columns if str(c).startswith("Unnamed:")]
    if "material_id" in table.columns:
        id_column = "material_id"
    elif unnamed and table.columns[0] == unnamed[0]:
        id_column = unnamed[0]
    else:
        id_column = None
    property_columns = [c for c in table.columns if c not in ("cif", id_column, *unnamed)]
    ids = table[id_column].tolist() if id_column else [""] * len(table)
    values = {column: table[column].tolist() for column in property_columns}
    for index, cif_text in enumerate(table["cif"].tolist()):
        if collector.full:
            return
        row = index + 1
        record_id = ids[index].strip() or f"row-{row}"
        location = f"{path.name} row {row}" + (f" (id {record_id})" if id_column else "")
        properties = {}
        for column in property_columns:
            value = parse_table_value(values[column][index])
            if value is not None:
                properties[column] = value
        blocks = parse_cif_text(cif_text)
        if len(blocks) != 1:
            reason = "empty or not CIF text" if not blocks else f"{len(blocks)} CIF data blocks"
            collector.skip(location, f"cif column: {reason}; expected one crystal")
        elif blocks[0].structure is None:
            collector.skip(location, blocks[0].error or "unparsable CIF")
        else:
            collector.add(
                location, CrystalRecord(blocks[0].structure, record_id, source, properties)
            )


@dataclass
class _MetadataRow:
    record_id: str | None
    source: str | None
    formula: str | None
    properties: dict[str, Any]
    energy: float | None
    energy_metadata: dict[str, Any]


class Metadata:
    """The rows of a ``metadata.csv``, joined to CIF files by file name or id.

    A row belongs to a CIF when its filename column names the file, or else when its id
    (``material_id``, ``id``, ``jid``, ``entry_id``) equals the file stem or is the part of the
    stem after or before an underscore (LeMaterial's ``mp_mp-1001835.cif`` for ``mp-1001835``,
    JARVIS' ``JVASP-64664_Ba4NaBi.cif`` for ``JVASP-64664``). Columns other than id, filename,
    ``source``, ``formula``, ``energy`` and ``energy_metadata`` become properties (``formula``
    only when it disagrees with the structure; ``property:<name>`` columns become ``<name>``).
    """

    def __init__(self, table: pd.DataFrame) -> None:
        columns = [str(c) for c in table.columns]
        self.id_column = first_present(columns, ID_COLUMNS)
        self.filename_column = first_present(columns, FILENAME_COLUMNS)
        self._by_filename: dict[str, _MetadataRow] = {}
        self._by_id: dict[str, _MetadataRow] = {}
        for raw in table.to_dict("records"):
            row = self._parse_row(raw)
            # Duplicate rows (LeMaterial's metadata repeats some ids): the first one wins.
            if self.filename_column and raw[self.filename_column].strip():
                self._by_filename.setdefault(raw[self.filename_column].strip(), row)
            if row.record_id:
                self._by_id.setdefault(row.record_id, row)

    def _parse_row(self, raw: dict[str, str]) -> _MetadataRow:
        record_id = raw[self.id_column].strip() if self.id_column else None
        source = raw.get("source", "").strip() or None
        energy = parse_table_value(raw.get("energy", ""))
        energy_metadata = {}
        if raw.get("energy_metadata", "").strip():
            energy_metadata = json.loads(raw["energy_metadata"])
        formula = raw.get("formula", "").strip() or None
        skip = {self.id_column, self.filename_column, *_RECORD_COLUMNS}
        properties = {}
        for column, text in raw.items():
            if column in skip:
                continue
            value = parse_table_value(text)
            if value is not None:
                properties[column.removeprefix(PROPERTY_PREFIX)] = value
        return _MetadataRow(
            record_id or None,
            source,
            formula,
            properties,
            as_energy(energy),
            energy_metadata,
        )

    def lookup(self, filename: str) -> _MetadataRow | None:
        """The row for a CIF file name, or None."""
        if filename in self._by_filename:
            return self._by_filename[filename]
        stem = filename.rsplit(".", 1)[0]
        if stem in self._by_id:
            return self._by_id[stem]
        cuts = [i for i, char in enumerate(stem) if char == "_"]
        for cut in cuts:  # "<prefix>_<id>", longest id first
            if stem[cut + 1 :] in self._by_id:
                return self._by_id[stem[cut + 1 :]]
        for cut in reversed(cuts):  # "<id>_<suffix>", longest id first
            if stem[:cut] in self._by_id:
                return self._by_id[stem[:cut]]
        return None


def _load_metadata(source: Path | io.BytesIO, name: str) -> Metadata:
    try:
        return Metadata(_read_table(source, name))
    except json.JSONDecodeError as exc:
        raise CrystalInputError(f"{name}: invalid energy_metadata JSON ({exc})") from exc


def _add_cif_with_metadata(
    collector: Collector,
    text: str,
    filename: str,
    location: str,
    source: str,
    metadata: Metadata | None,
) -> None:
    row = metadata.lookup(filename) if metadata else None
    stem = filename.rsplit(".", 1)[0]
    if row is None:
        add_cif_text(collector, text, base_id=stem, location=location, source=source)
        return
    add_cif_text(
        collector,
        text,
        base_id=row.record_id or stem,
        location=location,
        source=row.source or source,
        properties=row.properties,
        energy=row.energy,
        energy_metadata=row.energy_metadata,
        listed_formula=row.formula,
    )


def read_cif_folder(folder: Path, source: str, collector: Collector) -> None:
    """A folder of ``*.cif`` files, with an optional ``metadata.csv`` beside them."""
    cif_paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".cif")
    if not cif_paths:
        raise CrystalInputError(f"{folder}: folder has no .cif files")
    metadata_path = folder / "metadata.csv"
    metadata = (
        _load_metadata(metadata_path, str(metadata_path)) if metadata_path.is_file() else None
    )
    for path in cif_paths:
        if collector.full:
            return
        text = path.read_bytes().decode("utf-8", errors="replace")
        _add_cif_with_metadata(collector, text, path.name, path.name, source, metadata)


def read_cif_file(path: Path, source: str, collector: Collector) -> None:
    """One ``.cif`` file; each data block is a crystal."""
    text = read_text(path)
    add_cif_text(collector, text, base_id=path.stem, location=path.name, source=source)


def read_cif_zip(path: Path, source: str, collector: Collector) -> None:
    """A ``.zip`` of CIFs with an optional ``metadata.csv`` (as :func:`write_cif_zip` writes)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CrystalInputError(f"{path}: not a readable zip archive ({exc})") from exc
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        cif_names = sorted(n for n in names if n.lower().endswith(".cif"))
        if not cif_names:
            raise CrystalInputError(f"{path}: zip archive has no .cif files")
        metadata_names = [n for n in names if PurePosixPath(n).name == "metadata.csv"]
        metadata = None
        if metadata_names:
            content = io.BytesIO(archive.read(metadata_names[0]))
            metadata = _load_metadata(content, f"{path.name}:{metadata_names[0]}")
        for name in cif_names:
            if collector.full:
                return
            text = archive.read(name).decode("utf-8", errors="replace")
            filename = PurePosixPath(name).name
            _add_cif_with_metadata(
                collector, text, filename, f"{path.name}:{name}", source, metadata
            )
