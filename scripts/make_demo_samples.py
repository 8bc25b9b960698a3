"""Build ``data/samples/demo_samples.extxyz``, the crystals ``make demo`` evaluates.

A small, reproducible mix that exercises every verdict of ``crystalforge evaluate``:

* disguised copies of reference structures (rotated, sites re-ordered, atoms moved by at most
  0.05 Å) — not novel;
* element-substituted reference structures whose formulas are absent from the reference —
  novel (and, after MLFF relaxation, some of them stable);
* exact duplicates of two of those — not unique;
* one broken structure (two atoms 0.3 Å apart) — invalid, its relaxation fails alone.

Run: ``python scripts/make_demo_samples.py`` (uses the shipped reference set).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp

from evaluation.io.crystals import write_extxyz
from evaluation.records import CrystalRecord
from evaluation.reference import load_reference

#: Reference structures to disguise (source:id in the shipped set) and substitutions to make
#: novel ones; chosen small (≤ 6 atoms) and in few chemical systems so the demo runs in minutes.
COPIES = 3
SUBSTITUTIONS = [
    {"Na": "K"},
    {"O": "S"},
    {"Cl": "Br"},
    {"Mg": "Ca"},
]
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "data/samples/demo_samples.extxyz"


def disguise(structure: Structure, rng: np.random.Generator) -> Structure:
    """Rotate the cell, permute the sites and move every atom by at most 0.05 Å."""
    rotation = SymmOp.from_axis_angle_and_translation(rng.normal(size=3), rng.uniform(10, 80))
    order = rng.permutation(len(structure))
    disguised = Structure(
        Lattice(rotation.operate_multi(structure.lattice.matrix)),
        [structure[i].specie for i in order],
        structure.frac_coords[order],
    )
    for index in range(len(disguised)):
        direction = rng.normal(size=3)
        step = 0.05 * rng.uniform(0.2, 1.0) * direction / np.linalg.norm(direction)
        disguised.translate_sites([index], step, frac_coords=False)
    return disguised


def main(output: Path = DEFAULT_OUTPUT, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    reference = [
        r
        for r in load_reference().records
        if r.source == "lemat/mp"
        and len(r.structure) <= 6
        and 2 <= len(r.structure.composition.elements) <= 3
    ]
    reference.sort(key=lambda r: r.label)
    known_formulas = {r.formula for r in load_reference().records}
    samples: list[CrystalRecord] = []

    for record in [reference[i] for i in rng.choice(len(reference), COPIES, replace=False)]:
        samples.append(
            CrystalRecord(
                disguise(record.structure, rng),
                id=f"copy-of-{record.id}",
                source="demo",
                properties={"expected": "not novel", "copied_from": record.label},
            )
        )

    novel: list[CrystalRecord] = []
    for substitution in SUBSTITUTIONS:
        candidates = [
            r
            for r in reference
            if set(substitution) <= {el.symbol for el in r.structure.composition.elements}
        ]
        for record in candidates:
            substituted = record.structure.copy()
            substituted.replace_species(substitution)
            if substituted.composition.reduced_formula in known_formulas:
                continue
            substituted.scale_lattice(substituted.volume * 1.1)  # larger ions: start roomier
            novel.append(
                CrystalRecord(
                    substituted,
                    id=f"{substituted.composition.reduced_formula}-from-{record.id}",
                    source="demo",
                    properties={"expected": "novel", "substituted_from": record.label},
                )
            )
            break
    samples.extend(novel)

    for record in novel[:2]:
        samples.append(
            CrystalRecord(
                record.structure.copy(),
                id=f"duplicate-of-{record.id}",
                source="demo",
                properties={"expected": "not unique"},
            )
        )

    samples.append(
        CrystalRecord(
            Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.075, 0, 0]]),
            id="broken-NaCl",
            source="demo",
            properties={"expected": "invalid (atoms 0.3 Å apart)"},
        )
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    write_extxyz(samples, output)
    for record in samples:
        print(f"{record.id:45s} {record.formula:10s} {record.properties['expected']}")
    print(f"wrote {len(samples)} crystals to {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    main(args.output, args.seed)
