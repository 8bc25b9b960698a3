"""Specification of the data-set summary behind `crystalforge data info` (evaluation.io)."""

from __future__ import annotations

import json

from pymatgen.core import Lattice, Structure

from evaluation.io.data_info import summarize
from evaluation.records import CrystalRecord, ReadProblem, ReadResult


def _result() -> ReadResult:
    rocksalt = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    big = Structure(Lattice.cubic(10), ["Si"] * 24, [[i / 24, 0, 0] for i in range(24)])
    records = [
        CrystalRecord(rocksalt, "mp-1", "mp", {"band_gap": 5.0, "sg": "Fm-3m"}, energy=-7.0),
        CrystalRecord(alloy, "icsd-1", "icsd", {"band_gap": 0.0}),
        CrystalRecord(big, "mp-2", "mp", {"band_gap": 1.0, "flag": True}),
    ]
    return ReadResult(records, [ReadProblem("val.csv row 4", "unknown element 'Xx'")])


def test_summary_counts_sources_elements_cells_and_disorder():
    summary = summarize(_result())
    assert (summary.n_structures, summary.n_skipped) == (3, 1)
    assert summary.sources == {"mp": 2, "icsd": 1}
    assert summary.element_counts == {"Au": 1, "Cl": 1, "Cu": 1, "Na": 1, "Si": 1}
    assert summary.atoms_per_cell["1"] == 1 and summary.atoms_per_cell["2"] == 1
    assert summary.atoms_per_cell["21-30"] == 1
    assert sum(summary.atoms_per_cell.values()) == 3
    assert (summary.n_disordered, summary.n_with_energy) == (1, 1)


def test_summary_gives_numeric_ranges_and_presence_of_properties():
    properties = summarize(_result()).properties
    gap = properties["band_gap"]
    assert (gap.count, gap.numeric, gap.min, gap.max, gap.mean) == (3, True, 0.0, 5.0, 2.0)
    assert (properties["sg"].count, properties["sg"].numeric) == (1, False)
    assert properties["flag"].numeric is False  # booleans are not numbers here


def test_summary_text_and_dict_are_readable_and_json_able():
    summary = summarize(_result())
    text = summary.to_text()
    assert "crystals: 3   skipped: 1" in text
    assert "val.csv row 4: unknown element 'Xx'" in text
    assert "band_gap" in text and "max 5" in text
    as_dict = json.loads(json.dumps(summary.to_dict()))
    assert as_dict["problems"] == [{"location": "val.csv row 4", "reason": "unknown element 'Xx'"}]
    assert as_dict["properties"]["band_gap"]["mean"] == 2.0
