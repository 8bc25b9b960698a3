"""The one record type every package passes crystals around in.

A :class:`CrystalRecord` is a pymatgen ``Structure`` plus where it came from (``source`` and
``id``: provenance that survives every read, write and store), free-form ``properties`` (the
property columns of a CSV, the ``info`` of an extxyz frame, a ``metadata.csv`` row) and, when
the input carried one, a total energy with the metadata needed to interpret it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure


class CrystalInputError(ValueError):
    """Input crystals could not be used at all (unknown format, nothing readable, ...)."""


@dataclass
class CrystalRecord:
    """One crystal with its provenance.

    Attributes
    ----------
    structure
        The crystal (ordered or disordered).
    id
        Identifier unique within ``source`` (``mp-149``, ``row-17``, a CIF's file stem, ...).
    source
        Where it came from: a data set name (``mp``, ``alexandria``, ``perov_5``) or a file.
    properties
        Scalar properties that came with it (``band_gap``, ``energy_per_atom``, ...).
    energy
        Total energy in eV of ``structure`` when the input carried one, else ``None``.
    energy_metadata
        How ``energy`` was computed: ``parameters``/``data`` of a ``ComputedStructureEntry``,
        ``correction`` already applied, ``level_of_theory`` when known.
    """

    structure: Structure
    id: str
    source: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    energy: float | None = None
    energy_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def formula(self) -> str:
        """Reduced formula, e.g. ``LiCoO2``."""
        return self.structure.composition.reduced_formula

    @property
    def chemsys(self) -> str:
        """Chemical system, elements sorted and joined by ``-`` (``Co-Li-O``)."""
        return self.structure.composition.chemical_system

    @property
    def label(self) -> str:
        """``source:id``, the key used in reports and error messages."""
        return f"{self.source}:{self.id}" if self.source else self.id


@dataclass
class ReadProblem:
    """One row, frame or file that was skipped, and why."""

    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass
class ReadResult:
    """What a reader returns: the crystals it could use and the ones it skipped."""

    records: list[CrystalRecord]
    problems: list[ReadProblem] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.problems)

    def summary_line(self) -> str:
        """``read 17 crystals, skipped 2`` — printed at the end of every read."""
        return f"read {len(self.records)} crystals, skipped {self.n_skipped}"
