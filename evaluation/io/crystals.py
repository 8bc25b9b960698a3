"""Reading and writing crystals: one entry point for every input format, atomic writers.

>>> result = read_crystals("perov_5/val.csv")          # doctest: +SKIP
>>> print(result.summary_line())                        # doctest: +SKIP
read 3787 crystals, skipped 0
>>> write_jsonl(result.records, "perov.jsonl.gz")       # doctest: +SKIP

Readers never stop at a bad row, frame or file: it becomes a :class:`ReadProblem` and the
rest is read. Writers write to a temporary file beside the target and rename it into place,
so an interrupted write never leaves a half-written file (or spoils the previous one).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from pymatgen.io.cif import CifWriter

from evaluation.io.codecs import (
    read_extxyz,
    read_json,
    read_jsonl,
    record_to_atoms,
    record_to_compact,
)
from evaluation.io.formats import (
    PROPERTY_PREFIX,
    Collector,
    check_structure,
    json_default,
    read_cif_file,
    read_cif_folder,
    read_cif_zip,
    read_csv_table,
)
from evaluation.records import CrystalInputError, CrystalRecord, ReadResult

__all__ = [
    "SUPPORTED_FORMATS",
    "check_structure",
    "read_crystals",
    "write_cif_zip",
    "write_extxyz",
    "write_jsonl",
]

#: How the input formats are named in error messages.
SUPPORTED_FORMATS = (
    "a CSV with a 'cif' column (.csv, .csv.gz), a folder of .cif files (optional metadata.csv), "
    "a .cif file, a .zip of CIFs, extxyz (.extxyz, .xyz, optionally .gz) "
    "or JSON/JSONL of pymatgen Structure/ComputedStructureEntry dicts or CrystalForge records "
    "(.json, .jsonl, optionally .gz)"
)

_Reader = Callable[[Path, str, Collector], None]
_READERS_BY_SUFFIX: dict[str, _Reader] = {
    ".csv": read_csv_table,
    ".csv.gz": read_csv_table,
    ".cif": read_cif_file,
    ".zip": read_cif_zip,
    ".extxyz": read_extxyz,
    ".extxyz.gz": read_extxyz,
    ".xyz": read_extxyz,
    ".xyz.gz": read_extxyz,
    ".json": read_json,
    ".json.gz": read_json,
    ".jsonl": read_jsonl,
    ".jsonl.gz": read_jsonl,
}
#: File stems too generic to name a source alone; the parent folder is prefixed to them.
_SPLIT_NAMES = {"train", "val", "valid", "validation", "test", "all", "data", "structures"}
#: Problems quoted in the error for a file with nothing readable.
_PROBLEMS_QUOTED = 3


def _format_suffix(path: Path) -> str | None:
    name = path.name.lower()
    # Longest suffix first, so that ".csv.gz" wins over a bare ".gz".
    for suffix in sorted(_READERS_BY_SUFFIX, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _default_source(path: Path, suffix: str | None) -> str:
    stem = path.name[: -len(suffix)] if suffix else path.name
    if stem.lower() in _SPLIT_NAMES and path.parent.name:
        return f"{path.parent.name}/{stem}"  # "perov_5/val" rather than "val"
    return stem


def read_crystals(
    path: str | os.PathLike[str], *, source: str | None = None, limit: int | None = None
) -> ReadResult:
    """Read crystals from a file or folder, skipping (and reporting) the unusable ones.

    Parameters
    ----------
    path
        A CSV with a ``cif`` column (MP-20 style), a folder of CIFs with an optional
        ``metadata.csv``, a ``.cif``, a ``.zip`` of CIFs, an extxyz file or JSON/JSONL of
        pymatgen ``Structure``/``ComputedStructureEntry`` dicts or CrystalForge records.
    source
        Provenance for crystals whose input does not name one (compact JSONL, extxyz and
        zips written by CrystalForge do); defaults to the file stem or folder name.
    limit
        Stop after this many crystals.

    Returns
    -------
    ReadResult
        The crystals read and, for each skipped row/frame/file, where and why.

    Raises
    ------
    CrystalInputError
        The path does not exist, has an unsupported format, or holds no usable crystal.
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if not path.exists():
        raise CrystalInputError(f"{path}: no such file or folder")
    suffix = None if path.is_dir() else _format_suffix(path)
    if path.is_dir():
        reader: _Reader = read_cif_folder
    elif suffix is not None:
        reader = _READERS_BY_SUFFIX[suffix]
    else:
        raise CrystalInputError(f"{path}: unsupported format; expected {SUPPORTED_FORMATS}")

    collector = Collector(limit=limit)
    reader(path, source or _default_source(path, suffix), collector)
    if not collector.records:
        if not collector.problems:
            raise CrystalInputError(f"{path}: contains no crystals")
        first = "; ".join(str(p) for p in collector.problems[:_PROBLEMS_QUOTED])
        raise CrystalInputError(
            f"{path}: no readable crystal ({len(collector.problems)} skipped; first: {first})"
        )
    return ReadResult(collector.records, collector.problems)


# --------------------------------------------------------------------------- writers


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a stream whose content replaces ``path`` only when the block finishes cleanly.

    The data go to a temporary file in the same folder (same file system, so the final
    ``os.replace`` is atomic); on any exception the temporary file is removed and ``path`` is
    left as it was. A ``.gz`` name is gzipped with a zero timestamp, so equal content gives
    equal bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    raw = os.fdopen(descriptor, "wb")
    stream: IO[bytes] = raw
    text: io.TextIOWrapper | None = None
    try:
        if path.name.lower().endswith(".gz"):
            # filename="" keeps the temporary name out of the gzip header.
            stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        if not binary:
            text = io.TextIOWrapper(stream, encoding="utf-8", newline="\n")
        yield text if text is not None else stream
        if text is not None:
            text.flush()
            text.detach()  # leave the byte stream open for the gzip trailer
        if stream is not raw:
            stream.close()
        raw.flush()
        os.fsync(raw.fileno())
        raw.close()
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        for stream_to_close in (text, stream if stream is not raw else None):
            with suppress(Exception):
                if stream_to_close is not None:
                    stream_to_close.close()
        raw.close()
        Path(temporary).unlink(missing_ok=True)
        raise


def write_jsonl(
    records: Iterable[CrystalRecord],
    path: str | os.PathLike[str],
    *,
    decimals: int | None = None,
) -> None:
    """Write records as compact JSON lines (gzipped when ``path`` ends in ``.gz``).

    Each line is ``{"id", "source", "lattice" (3x3 rows), "species", "frac_coords",
    "properties"}`` plus ``"energy"``/``"energy_metadata"`` when present; ``species`` holds
    an element symbol per site, or an ``{element: occupancy}`` dict for a disordered site.

    Parameters
    ----------
    records
        The crystals to write.
    path
        Target file (``.jsonl`` or ``.jsonl.gz``).
    decimals
        Round lattice and fractional coordinates to this many decimals (smaller, stable files).
    """
    # Serialise everything first: a record that is not JSON-able fails before the file opens.
    lines = []
    for record in records:
        compact = record_to_compact(record, decimals)
        try:
            lines.append(json.dumps(compact, separators=(",", ":"), default=json_default))
        except (TypeError, ValueError) as exc:
            raise CrystalInputError(f"{record.label}: cannot be written as JSON ({exc})") from exc
    with atomic_output(path) as handle:
        for line in lines:
            handle.write(line + "\n")


def write_extxyz(records: Iterable[CrystalRecord], path: str | os.PathLike[str]) -> None:
    """Write ordered crystals as extended XYZ, keeping id, source, properties and energy.

    ``id``, ``source`` and scalar properties become ``info`` keys; anything the key=value
    syntax cannot carry faithfully goes, as JSON, under the ``crystalforge`` key; the energy
    is written as the frame's ``energy``.

    Raises
    ------
    CrystalInputError
        A record is disordered (extxyz has one element per site).
    """
    from ase.io import write as ase_write

    records = list(records)
    for record in records:
        if not record.structure.is_ordered:
            raise CrystalInputError(
                f"{record.label}: disordered structure (partial occupancies) cannot be written "
                "as extxyz; use write_cif_zip or write_jsonl"
            )
    frames = [record_to_atoms(record) for record in records]
    with atomic_output(path) as handle:
        ase_write(handle, frames, format="extxyz")


#: Columns write_cif_zip puts before the properties.
_ZIP_COLUMNS = ("filename", "id", "source", "formula", "energy", "energy_metadata")


def safe_filenames(ids: Iterable[str], suffix: str = ".cif") -> list[str]:
    """File names made from ids: only ``[A-Za-z0-9._-]``, unique even on case-blind disks."""
    names, taken = [], set()
    for record_id in ids:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", record_id).strip("._")[:120] or "crystal"
        candidate, number = stem, 1
        while candidate.lower() in taken:
            number += 1
            candidate = f"{stem}-{number}"
        taken.add(candidate.lower())
        names.append(candidate + suffix)
    return names


def write_cif_zip(
    records: Iterable[CrystalRecord],
    path: str | os.PathLike[str],
    *,
    symprec: float | None = None,
    data_items: bool = False,
) -> None:
    """Write a ``.zip`` with one ``<id>.cif`` per crystal and a ``metadata.csv``.

    ``symprec``: write each CIF in its space group found at this tolerance (pymatgen's
    ``CifWriter``), not in P1. ``data_items``: also write the id, source, energy and every
    scalar property into the CIF's own data block as ``_crystalforge_<name>`` items, so a
    CIF taken out of the archive still says what it is.

    ``metadata.csv`` has ``filename``, ``id``, ``source``, ``formula`` (and ``energy``,
    ``energy_metadata`` when any record has them), then one column per property; a property
    whose name is one of those columns is written as ``property:<name>``. Reading the zip
    back with :func:`read_crystals` restores ids, sources, properties and energies.
    """
    records = list(records)
    filenames = safe_filenames(record.id for record in records)
    has_energy = any(record.energy is not None for record in records)
    has_energy_metadata = any(record.energy_metadata for record in records)
    columns = list(_ZIP_COLUMNS[:4])
    columns += ["energy"] * has_energy + ["energy_metadata"] * has_energy_metadata
    property_columns: dict[str, str] = {}  # property name -> column name
    for record in records:
        for name in record.properties:
            if name not in property_columns:
                reserved = name in _ZIP_COLUMNS or name.startswith(PROPERTY_PREFIX)
                property_columns[name] = f"{PROPERTY_PREFIX}{name}" if reserved else name

    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(columns + list(property_columns.values()))
    for record, filename in zip(records, filenames, strict=True):
        row = [filename, record.id, record.source, record.formula]
        if has_energy:
            row.append("" if record.energy is None else repr(float(record.energy)))
        if has_energy_metadata:
            metadata = record.energy_metadata
            row.append(json.dumps(metadata, default=json_default) if metadata else "")
        for name in property_columns:
            row.append(_csv_cell(record.properties.get(name)))
        writer.writerow(row)

    cif_texts = [str(CifWriter(record.structure, symprec=symprec)) for record in records]
    if data_items:
        cif_texts = [_with_data_items(text, r) for text, r in zip(cif_texts, records, strict=True)]
    with (
        atomic_output(path, binary=True) as handle,
        zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for filename, text in zip(filenames, cif_texts, strict=True):
            archive.writestr(_zip_entry(filename), text)
        archive.writestr(_zip_entry("metadata.csv"), table.getvalue())


def _cif_value(value: Any) -> str:
    """A CIF value: numbers as they are, text quoted (a text field when it holds quotes)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if "'" not in text and "\n" not in text:
        return f"'{text}'"
    return f"\n;{text}\n;"


def _with_data_items(cif: str, record: CrystalRecord) -> str:
    """``cif`` with the record's id, source, energy and scalar properties after ``data_``."""
    items = {"id": record.id, "source": record.source, "energy": record.energy}
    items |= {k: v for k, v in record.properties.items() if not isinstance(v, dict | list)}
    lines = [
        f"_crystalforge_{re.sub(r'[^A-Za-z0-9_]', '_', name)}   {_cif_value(value)}"
        for name, value in items.items()
        if value is not None and value != ""
    ]
    text = cif.splitlines()
    block = next(i for i, line in enumerate(text) if line.startswith("data_"))
    return "\n".join([*text[: block + 1], *lines, *text[block + 1 :]]) + "\n"


def _zip_entry(name: str) -> zipfile.ZipInfo:
    # A fixed timestamp keeps archives of equal content byte-identical.
    entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.external_attr = 0o644 << 16
    return entry


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=json_default)
    return str(value)
