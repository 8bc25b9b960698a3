"""The shipped reference set: every shared crystal, with provenance, in one compact file.

``data/reference/structures.jsonl.gz`` is the default novelty reference (and the pool of hull
reference structures). :func:`build_reference_set` makes it from the shared data folder,
byte-for-byte reproducibly; :func:`load_reference` reads it, or any user reference in a
format :func:`evaluation.io.crystals.read_crystals` understands.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from evaluation.hull.known_phases import KNOWN_PHASES_FILE, MP20_NEAR_HULL_FILE, build_known_phases
from evaluation.hull.mp_entries import MP_E_FORM_FILE, convert_mp_e_form_csv
from evaluation.io.crystals import atomic_output, read_crystals, write_jsonl
from evaluation.io.formats import check_structure
from evaluation.paths import reference_dir
from evaluation.records import CrystalInputError, CrystalRecord, ReadProblem, ReadResult

#: File name of the reference structures inside the reference folder.
REFERENCE_FILE = "structures.jsonl.gz"
#: The shipped reference set (``CRYSTALFORGE_DATA`` moves it; see :func:`load_reference`).
DEFAULT_REFERENCE = reference_dir() / REFERENCE_FILE
#: Decimals kept for lattice vectors (Å) and fractional coordinates.
COORDINATE_DECIMALS = 6
#: Elemental-reference energy files copied unchanged from ``<shared>/reference``.
ELEMENT_REFERENCE_FILES = (
    "2023-02-07-mp-elemental-reference-entries.json.gz",
    "MP-PBE-Element-Refs.json.gz",
    "MatPES-PBE-Element-Refs.json.gz",
    "MatPES-r2SCAN-Element-Refs.json.gz",
)
#: Source name of the elemental polymorphs taken from MP-PBE-Element-Refs.json.gz.
ELEMENT_REFS_SOURCE = "mp-pbe-element-refs"


@dataclass(frozen=True)
class ReferenceSource:
    """One data set in the reference set: where it lies in the shared folder and its credit."""

    source: str
    patterns: tuple[str, ...]  # globs relative to <shared>/structures
    origin: str
    licence: str
    #: Random samples that overlap (the same crystal under two file names): keep one copy.
    #: Elsewhere two ids are two database entries and both are kept, even if identical.
    overlapping_samples: bool = False


STRUCTURE_SOURCES = (
    ReferenceSource(
        "perov_5",
        ("perov_5/val.csv",),
        "CDVAE perov_5 validation split (T. Xie et al., ICLR 2022) of the Castelli et al. "
        "cubic perovskites, Energy Environ. Sci. 5, 9034 (2012); properties heat_all, heat_ref "
        "(eV/atom), dir_gap, ind_gap (eV)",
        "CDVAE data splits, MIT; cite Castelli et al. 2012",
    ),
    ReferenceSource(
        "carbon_24",
        ("carbon_24/val.csv",),
        "CDVAE carbon_24 validation split of AIRSS carbon structures, C. J. Pickard (2020), "
        "doi:10.24435/materialscloud:2020.0026/v1; property energy_per_atom (AIRSS DFT, eV/atom)",
        "CC-BY-4.0 (Materials Cloud); CDVAE splits MIT",
    ),
    ReferenceSource(
        "lemat/mp",
        ("lemat/mp",),
        "Materials Project, random sample via LeMaterial; A. Jain et al., APL Materials 1, "
        "011002 (2013); properties from LeMaterial metadata (spacegroup, density, ...)",
        "CC-BY-4.0",
    ),
    ReferenceSource(
        "lemat/alexandria",
        ("lemat/alexandria",),
        "Alexandria, random sample via LeMaterial; J. Schmidt et al., Sci. Data 9, 64 (2022)",
        "CC-BY-4.0",
    ),
    ReferenceSource(
        "lemat/jarvis",
        ("lemat/jarvis",),
        "JARVIS-DFT, random sample via LeMaterial; K. Choudhary et al., npj Comput. Mater. 6, "
        "173 (2020); properties include formation_energy_per_atom and bandgap (OptB88vdW)",
        "CC-BY-4.0",
    ),
    ReferenceSource(
        "lemat_bulk",
        ("lemat_bulk/seed_*",),
        "LeMat-Bulk random samples (MP + Alexandria + OQMD, PBE), LeMaterial (Entalpic & "
        "Hugging Face, 2024); OQMD: S. Kirklin et al., npj Comput. Mater. 1, 15010 (2015)",
        "CC-BY-4.0",
        overlapping_samples=True,
    ),
)
_ELEMENT_REFS_ORIGIN = (
    "Materials Project elemental polymorphs with PBE energies (MP-PBE-Element-Refs.json.gz, "
    "as distributed with MatPES); property energy_per_atom (eV/atom, as published)"
)


def load_reference(path: str | os.PathLike[str] | None = None) -> ReadResult:
    """Read the novelty/hull reference crystals.

    Parameters
    ----------
    path
        None for the shipped set (``reference_dir() / "structures.jsonl.gz"``), or any file or
        folder :func:`~evaluation.io.crystals.read_crystals` reads (a folder of CIFs, an
        Alex-MP-ICSD JSONL of ``ComputedStructureEntry`` dicts, ...).

    Returns
    -------
    ReadResult
        The reference crystals, each with its ``source`` and ``id``.
    """
    if path is None:
        path = reference_dir() / REFERENCE_FILE
        if not path.exists():
            raise CrystalInputError(
                f"{path}: the shipped reference set is missing; "
                "build it with `python scripts/build_reference.py`"
            )
    return read_crystals(path)


def _element_polymorph_records(path: Path) -> tuple[list[CrystalRecord], list[ReadProblem]]:
    """The polymorphs of ``MP-PBE-Element-Refs.json.gz``: ``{element: {structure: [...],
    energy_per_atom: [...]}}``; ids are ``<element>-<index in the file>``."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        content = json.load(handle)
    records, problems = [], []
    for element in sorted(content):
        structures, energies = content[element]["structure"], content[element]["energy_per_atom"]
        for index, (structure_dict, energy_per_atom) in enumerate(
            zip(structures, energies, strict=True)
        ):
            record_id = f"{element}-{index}"
            structure = Structure.from_dict(structure_dict)
            reason = check_structure(structure)
            if reason:
                problems.append(ReadProblem(f"{path.name} {record_id}", reason))
                continue
            properties = {"energy_per_atom": float(energy_per_atom)}
            records.append(CrystalRecord(structure, record_id, ELEMENT_REFS_SOURCE, properties))
    return records, problems


def _fingerprint(record: CrystalRecord) -> bytes:
    """Identity of a crystal as stored (rounded), to find exact duplicates within a source."""
    structure = record.structure
    payload = [
        np.round(structure.lattice.matrix, COORDINATE_DECIMALS).tolist(),
        [str(site.species) for site in structure],
        np.round(structure.frac_coords, COORDINATE_DECIMALS).tolist(),
    ]
    return hashlib.sha256(json.dumps(payload).encode()).digest()


def _drop_exact_duplicates(
    records: list[CrystalRecord], sources: set[str]
) -> tuple[list[CrystalRecord], list[dict[str, str]]]:
    """Keep the first of identical crystals of the same source, for the given sources only."""
    kept, dropped, first_seen = [], [], {}
    for record in records:
        if record.source not in sources:
            kept.append(record)
            continue
        key = (record.source, _fingerprint(record))
        if key in first_seen:
            dropped.append(
                {"source": record.source, "id": record.id, "duplicate_of": first_seen[key]}
            )
        else:
            first_seen[key] = record.id
            kept.append(record)
    return kept, dropped


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_reference_set(
    shared_data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> dict:
    """Build the reference set from the shared data folder.

    Writes ``structures.jsonl.gz`` (every crystal of ``<shared>/structures`` plus the MP
    elemental polymorphs, sorted by source and id, coordinates rounded to
    :data:`COORDINATE_DECIMALS` decimals, gzip timestamp zero: the same input gives the same
    bytes), copies the elemental-reference energy files unchanged, and writes ``SOURCES.md``
    (origin, licence and count of each source) and ``manifest.json``. Other files in
    ``out_dir`` are left alone.

    Parameters
    ----------
    shared_data_dir
        The shared data folder (with ``structures/`` and ``reference/``).
    out_dir
        Where to write; created if missing.

    Returns
    -------
    dict
        The manifest: counts per source, skipped rows with reasons, duplicates dropped,
        sha256 of every file written or copied, build date.
    """
    shared, out = Path(shared_data_dir), Path(out_dir)
    structures_dir, energies_dir = shared / "structures", shared / "reference"
    for needed in (structures_dir, energies_dir):
        if not needed.is_dir():
            raise CrystalInputError(f"{needed}: folder not found (expected the shared data layout)")

    records: list[CrystalRecord] = []
    skipped: list[dict[str, str]] = []
    for spec in STRUCTURE_SOURCES:
        paths = sorted(p for pattern in spec.patterns for p in structures_dir.glob(pattern))
        if not paths:
            raise CrystalInputError(f"{structures_dir}: nothing matches {spec.patterns}")
        for path in paths:
            result = read_crystals(path, source=spec.source)
            records += result.records
            relative = path.relative_to(structures_dir).as_posix()
            skipped += [
                {"source": spec.source, "location": f"{relative}: {p.location}", "reason": p.reason}
                for p in result.problems
            ]
    element_records, element_problems = _element_polymorph_records(
        energies_dir / "MP-PBE-Element-Refs.json.gz"
    )
    records += element_records
    skipped += [
        {"source": ELEMENT_REFS_SOURCE, "location": p.location, "reason": p.reason}
        for p in element_problems
    ]
    records.sort(key=lambda record: (record.source, record.id))
    overlapping = {spec.source for spec in STRUCTURE_SOURCES if spec.overlapping_samples}
    records, duplicates = _drop_exact_duplicates(records, overlapping)

    out.mkdir(parents=True, exist_ok=True)
    structures_path = out / REFERENCE_FILE
    write_jsonl(records, structures_path, decimals=COORDINATE_DECIMALS)
    copied = {}
    for name in ELEMENT_REFERENCE_FILES:
        shutil.copyfile(energies_dir / name, out / name)
        copied[name] = _sha256(out / name)
    # The composition-level DFT hull reference (MP formation energies) ships beside them, with
    # the known MP compositions and hull phases and MP-20's near-hull energies.
    convert_mp_e_form_csv(energies_dir / "mp_e_form.csv", out / MP_E_FORM_FILE)
    copied[MP_E_FORM_FILE] = _sha256(out / MP_E_FORM_FILE)
    known_counts = build_known_phases(energies_dir, out)
    for name in (KNOWN_PHASES_FILE, MP20_NEAR_HULL_FILE):
        copied[name] = _sha256(out / name)

    counts: dict[str, int] = {}
    for record in records:
        counts[record.source] = counts.get(record.source, 0) + 1
    manifest: dict[str, Any] = {
        "file": REFERENCE_FILE,
        "sha256": _sha256(structures_path),
        "size_bytes": structures_path.stat().st_size,
        "n_structures": len(records),
        "counts": counts,
        "coordinate_decimals": COORDINATE_DECIMALS,
        "skipped": skipped,
        "duplicates_dropped": duplicates,
        "copied_files": copied,
        "known_phases": known_counts,
        "build_date": datetime.now(UTC).isoformat(timespec="seconds"),
        "built_with": {name: _package_version(name) for name in ("crystalforge", "pymatgen")},
    }
    with atomic_output(out / "manifest.json") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
    with atomic_output(out / "SOURCES.md") as handle:
        handle.write(_sources_markdown(counts, len(skipped), len(duplicates)))
    return manifest


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _sources_markdown(counts: dict[str, int], n_skipped: int, n_duplicates: int) -> str:
    rows = [(spec.source, spec.origin, spec.licence) for spec in STRUCTURE_SOURCES]
    rows.append((ELEMENT_REFS_SOURCE, _ELEMENT_REFS_ORIGIN, "CC-BY-4.0 (Materials Project)"))
    table = [
        "| source | crystals | origin | licence |",
        "|---|---:|---|---|",
        *(
            f"| `{name}` | {counts.get(name, 0):,} | {origin} | {licence} |"
            for name, origin, licence in rows
        ),
        f"| **total** | **{sum(counts.values()):,}** | | |",
    ]
    return "\n".join(
        [
            "# Reference set: sources and licences",
            "",
            f"`{REFERENCE_FILE}` holds {sum(counts.values()):,} crystals, one compact JSON record "
            "per line: `id`, `source`, `lattice` (3x3, Å), `species`, `frac_coords`, `properties`. "
            "Every record keeps the `source` and `id` it had in the data it came from (LeMaterial "
            "`material_id`/`jid`, CDVAE `material_id`, LeMat-Bulk file name, `<element>-<index>` "
            "for elemental polymorphs). Lattices and fractional coordinates are rounded to "
            f"{COORDINATE_DECIMALS} decimals. Built by `scripts/build_reference.py` from the "
            f"shared data folder; {n_skipped} unreadable rows skipped and {n_duplicates} crystals "
            "that overlapping LeMat-Bulk samples hold twice dropped (both listed in "
            "`manifest.json`).",
            "",
            *table,
            "",
            "## Elemental reference energies (copied unchanged)",
            "",
            "- `2023-02-07-mp-elemental-reference-entries.json.gz`: Materials Project GGA "
            "elemental ground states, uncorrected total energies (pymatgen `ComputedEntry` dicts, "
            "as shipped with matbench-discovery, MIT); data Materials Project, CC-BY-4.0.",
            "- `MP-PBE-Element-Refs.json.gz`: Materials Project elemental polymorphs with PBE "
            "energies per atom; CC-BY-4.0.",
            "- `MatPES-PBE-Element-Refs.json.gz`, `MatPES-r2SCAN-Element-Refs.json.gz`: MatPES "
            'elemental references, A. D. Kaplan et al., "A foundational potential energy '
            'surface dataset for materials" (2025); CC-BY-4.0.',
            "",
            "## Composition-level hull reference",
            "",
            f"- `{MP_E_FORM_FILE}`: Materials Project formation energies (eV/atom, legacy MP "
            "correction scheme, MP 2018) from matbench_mp_e_form (A. Dunn et al., npj Comput. "
            "Mater. 6, 138 (2020)), reduced to the lowest energy per reduced formula by "
            "`evaluation.hull.mp_entries.convert_mp_e_form_csv`; CC-BY-4.0 (Materials Project).",
            "",
            f"- `{KNOWN_PHASES_FILE}`: every known Materials Project composition (the union of "
            "matbench_mp_e_form, the MP energy-above-hull table and MP-20's near-hull phases) "
            "with the complete DFT hulls it lies on (legacy MP 2018, MP's E_hull table) and its "
            "MP-20 ids; it tells how complete a hull reference is and which compositions are "
            "known (`evaluation.hull.known_phases`); CC-BY-4.0 (Materials Project).",
            f"- `{MP20_NEAR_HULL_FILE}`: the MP-20 phases within 25 meV/atom of an MLIP hull "
            "(36,681 MP ids) with their DFT formation energies on the MP2020 correction scale "
            "and band gaps; the DFT hull MLFF energies are screened against "
            "(`evaluation.hull.screening`); CC-BY-4.0 (Materials Project).",
            "",
            "Energies from these files and the `energy_per_atom`/formation-energy properties "
            "above come from different codes, functionals and correction schemes: never put "
            "them on one convex hull without saying so.",
            "",
            "CC-BY-4.0 requires this attribution to be kept with any redistribution of these "
            "files or data derived from them (see also `NOTICE`).",
            "",
        ]
    )
