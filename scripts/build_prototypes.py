"""Build the shipped substitution prototypes (data/prototypes/) and λ table (data/priors/).

Usage: python scripts/build_prototypes.py [--shared ../shared/data] [--data data]

Reads the three prototype collections of ``<shared>/prototypes``:

* ``aflow_encyclopedia/*.cif`` + ``prototypes.json``: the AFLOW Encyclopedia of
  Crystallographic Prototypes (source ``aflow-encyclopedia``, id = CIF stem, i.e. the AFLOW
  label, with the compound appended where AFLOW lists several for one label);
* ``pymatgen_aflow_prototypes.json.gz``: pymatgen's AFLOW prototypes, ``StructureNL`` dicts with
  mineral/Pearson tags (source ``pymatgen-aflow``, id = AFLOW label);
* ``robocrys_mineral_db.json.gz``: robocrystallographer's mineral database, pandas split JSON
  (source ``robocrys-minerals``, id = AFLOW label);

drops AFLOW CIFs with molecular groups on one site (``H2O``, ``NH4``, ...: a CIF reader would
turn them into single atoms), keeps the ordered crystals (substitution decorates ordered sites
only), drops exact duplicates (same lattice, species and coordinates to 1e-5, in any site
order; the first of the list above is kept and the dropped ones are named in its
``duplicates`` property) and writes
``data/prototypes/prototypes.jsonl.gz`` sorted by source then id, coordinates rounded to six
decimals, gzip timestamp zero: the same input gives the same bytes. A label that occurs twice
in one collection gets ``#2``, ``#3``, ... on its later occurrences.

It also copies the Hautier et al. (2011) substitution λ table unchanged to
``data/priors/substitution_lambda.json``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure
from pymatgen.io.cif import CifFile

from evaluation.io.crystals import read_crystals, write_jsonl
from evaluation.io.formats import check_structure
from evaluation.records import CrystalInputError, CrystalRecord

REPOSITORY = Path(__file__).resolve().parents[1]
PROTOTYPES_FILE = Path("prototypes") / "prototypes.jsonl.gz"
LAMBDA_FILE = Path("priors") / "substitution_lambda.json"
#: Source names in the order they win over exact duplicates.
SOURCES = ("aflow-encyclopedia", "pymatgen-aflow", "robocrys-minerals")
COORDINATE_DECIMALS = 6
#: A CIF site type that is one element, optionally charged (``O``, ``Fe3+``).
_ELEMENT_TYPE = re.compile(r"[A-Z][a-z]?(\d*[+-])?")


def _tag(value: Any) -> Any:
    """Metadata as JSON: the string ``"None"`` the collections use means no value."""
    return None if value in (None, "None", "") else value


def _numbered(label: str, seen: Counter) -> str:
    """``label``, or ``label#k`` for its k-th occurrence (k >= 2) in one collection."""
    seen[label] += 1
    return label if seen[label] == 1 else f"{label}#{seen[label]}"


def _molecular_units(cif_path: Path) -> list[str]:
    """Site types of a CIF that are groups, not elements (``H2O``, ``NH4``, ``OH``, ...).

    AFLOW puts some molecules on one site; a CIF reader turns ``NH4`` into nihonium and ``OH``
    into oxygen, so such prototypes would decorate wrong chemistry.
    """
    cif = CifFile.from_str(cif_path.read_text(encoding="utf-8", errors="replace"))
    types = (t for block in cif.data.values() for t in block.data.get("_atom_site_type_symbol", []))
    return sorted({t for t in types if not _ELEMENT_TYPE.fullmatch(t)})


def read_aflow_encyclopedia(folder: Path) -> tuple[list[CrystalRecord], list[str]]:
    """The encyclopedia's CIFs, with name, Pearson symbol etc. from ``prototypes.json``."""
    metadata = json.loads((folder / "prototypes.json").read_text(encoding="utf-8"))
    result = read_crystals(folder, source=SOURCES[0])
    problems = [f"{SOURCES[0]} {problem}" for problem in result.problems]
    records = []
    for record in result.records:
        units = _molecular_units(folder / f"{record.id}.cif")
        if units:
            problems.append(f"{SOURCES[0]} {record.id}: molecular site types {', '.join(units)}")
            continue
        label, _, compound = record.id.partition(".")  # "A2B_oP12_62_2c_c.PbCl2"
        info = metadata.get(label, {})
        record.properties = {
            "prototype": compound or info.get("prototype") or label,
            "description": _tag(info.get("description")),
            "aflow_label": label,
            "pearson": _tag(info.get("pearson_symbol")),
            "strukturbericht": _tag(info.get("strukturbericht")),
            "space_group": _tag(info.get("spacegroup_number")),
        }
        records.append(record)
    return records, problems


def read_pymatgen_aflow(path: Path) -> tuple[list[CrystalRecord], list[str]]:
    """pymatgen's AFLOW prototypes: ``[{"snl": StructureNL dict, "tags": {...}}, ...]``."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        items = json.load(handle)
    return _records_from_dicts(
        SOURCES[1],
        ((item["snl"], item["tags"]) for item in items),
    )


def read_robocrys_minerals(path: Path) -> tuple[list[CrystalRecord], list[str]]:
    """robocrystallographer's mineral database: pandas ``split`` JSON indexed by AFLOW label."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        table = json.load(handle)
    columns = table["columns"]
    rows = (dict(zip(columns, row, strict=True)) for row in table["data"])
    return _records_from_dicts(
        SOURCES[2],
        (
            (row["structure"], {**row, "aflow": label})
            for label, row in zip(table["index"], rows, strict=True)
        ),
    )


def _records_from_dicts(source: str, items) -> tuple[list[CrystalRecord], list[str]]:
    records, problems, seen = [], [], Counter()
    for structure_dict, tags in items:
        record_id = _numbered(tags["aflow"], seen)
        structure = Structure.from_dict(structure_dict)
        reason = check_structure(structure)
        if reason:
            problems.append(f"{source} {record_id}: {reason}")
            continue
        properties = {
            "prototype": _tag(tags.get("mineral")) or tags["aflow"],
            "aflow_label": tags["aflow"],
            "pearson": _tag(tags.get("pearson")),
            "strukturbericht": _tag(tags.get("strukturbericht")),
        }
        records.append(CrystalRecord(structure, record_id, source, properties))
    return records, problems


def _fingerprint(structure: Structure) -> str:
    """Identity of a crystal to 1e-5, independent of site order and of x ≡ x + 1."""
    coords = np.round(structure.frac_coords % 1.0, 5) % 1.0  # 0.999999 -> 1.0 -> 0.0
    sites = sorted(
        (str(site.species), *map(float, xyz)) for site, xyz in zip(structure, coords, strict=True)
    )
    lattice = np.round(structure.lattice.matrix, 5).tolist()
    return hashlib.sha256(json.dumps([lattice, sites]).encode()).hexdigest()


def build_prototypes(shared_data_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Write the prototype file and copy the λ table; returns a summary of what was done."""
    folder = shared_data_dir / "prototypes"
    lambda_source = shared_data_dir / "priors" / "substitution_lambda.json"
    for needed in (folder / "aflow_encyclopedia", lambda_source):
        if not needed.exists():
            raise CrystalInputError(f"{needed}: not found (expected the shared data layout)")
    collections = [
        read_aflow_encyclopedia(folder / "aflow_encyclopedia"),
        read_pymatgen_aflow(folder / "pymatgen_aflow_prototypes.json.gz"),
        read_robocrys_minerals(folder / "robocrys_mineral_db.json.gz"),
    ]
    problems = [problem for _, found in collections for problem in found]
    kept: list[CrystalRecord] = []
    first_of: dict[str, CrystalRecord] = {}
    n_disordered = n_duplicates = 0
    for records, _ in collections:
        for record in sorted(records, key=lambda r: r.id):
            if not record.structure.is_ordered:
                n_disordered += 1
                continue
            key = _fingerprint(record.structure)
            if key in first_of:
                first_of[key].properties.setdefault("duplicates", []).append(record.label)
                n_duplicates += 1
                continue
            first_of[key] = record
            kept.append(record)

    out = data_dir / PROTOTYPES_FILE
    write_jsonl(kept, out, decimals=COORDINATE_DECIMALS)
    (data_dir / LAMBDA_FILE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lambda_source, data_dir / LAMBDA_FILE)
    return {
        "counts": dict(Counter(record.source for record in kept)),
        "n_written": len(kept),
        "n_disordered_dropped": n_disordered,
        "n_duplicates_dropped": n_duplicates,
        "problems": problems,
        "path": out,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=REPOSITORY.parent / "shared" / "data",
        help="shared data folder with prototypes/ and priors/ (default: %(default)s)",
    )
    parser.add_argument(
        "--data", type=Path, default=REPOSITORY / "data", help="output data folder (%(default)s)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        summary = build_prototypes(args.shared, args.data)
    except CrystalInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for source, count in summary["counts"].items():
        print(f"{source:<22}{count:>6}")
    for problem in summary["problems"]:
        print(f"skipped {problem}")
    print(
        f"wrote {summary['n_written']} prototypes to {summary['path']} "
        f"(sha256 {summary['sha256'][:16]}...); dropped {summary['n_disordered_dropped']} "
        f"disordered and {summary['n_duplicates_dropped']} exact duplicates; "
        f"copied {args.data / LAMBDA_FILE}; {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
