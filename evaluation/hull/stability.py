"""Which hull an energy goes on, for ``evaluate`` and campaigns alike.

The hull choices (README, "Hulls"):

``known-phases`` (default for MLFF energies)
    The MLFF energy on the MP2020 scale, on the DFT hull of the known MP-20 near-hull phases
    (:mod:`evaluation.hull.screening`); labelled ``mlff:<model> vs dft:mp-gga-ggau (mp2020)``.
``same-level``
    The MLFF hull of the reference set's compounds relaxed with the same MLFF and its own
    elemental energies (:mod:`evaluation.hull.mlff_reference`); labelled ``mlff:<model>``.
a user's reference with energies (always wins)
    ``--reference`` entries (``ComputedStructureEntry`` JSON/JSONL, e.g. Alex-MP-ICSD):
    energies carried by the samples are placed on the hull of the entries at the same level;
    MLFF energies on the MP2020 scale go on it when the entries are MP-style DFT.

Entries are prepared the same way on both sides (:func:`prepare_entry`): MP-style entries
(``parameters.run_type`` GGA or GGA+U) get ``MaterialsProject2020Compatibility`` corrections
unless they carry them already; other entries are used as given, at the level their
``data.level_of_theory`` names (``unlabelled`` when none). An entry the scheme rejects (wrong
U values, no POTCAR information) is that entry's failure, never the run's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from evaluation.hull.core import (
    MP2020_CORRECTION,
    MP_GGA_LEVEL,
    NO_CORRECTION,
    CompositionHullReference,
    EntryHullReference,
    HullReference,
    HullResult,
    LevelOfTheoryMismatch,
    UnknownElementError,
)
from evaluation.hull.known_phases import HullCoverage
from evaluation.hull.screening import MLFFOnDFTHull, known_phase_hull
from evaluation.records import CrystalInputError, CrystalRecord

HullChoice = Literal["known-phases", "same-level"]
HULL_CHOICES: tuple[HullChoice, ...] = ("known-phases", "same-level")
#: The level of entries that name none and are not MP-style.
UNLABELLED = "unlabelled"


class PlacesEnergies(Protocol):
    """A hull an MLFF energy of a structure can be placed on."""

    name: str

    def e_above_hull(
        self, structure: Structure, energy_per_atom: float, *, level_of_theory: str
    ) -> HullResult: ...

    def coverage(self, chemsys: str) -> HullCoverage: ...


@dataclass
class SameLevelHull:
    """A same-level :class:`~evaluation.hull.core.HullReference` taking total energies per atom."""

    reference: HullReference

    @property
    def name(self) -> str:
        return self.reference.name

    def coverage(self, chemsys: str) -> HullCoverage:
        return self.reference.coverage(chemsys)

    def e_above_hull(
        self, structure: Structure, energy_per_atom: float, *, level_of_theory: str
    ) -> HullResult:
        return self.reference.e_above_hull(
            structure.composition, energy_per_atom, level_of_theory=level_of_theory, kind="total"
        )


# --- entries: samples and references that carry energies -----------------------------------
@dataclass
class PreparedEntry:
    """An entry's energy ready for a hull: total energy (eV), level and correction scheme."""

    label: str
    structure: Structure
    energy: float
    level_of_theory: str
    correction: str


def is_mp_style(record: CrystalRecord) -> bool:
    """The energy comes with MP-style VASP parameters (``run_type`` GGA or GGA+U)."""
    parameters = record.energy_metadata.get("parameters") or {}
    return parameters.get("run_type") in ("GGA", "GGA+U")


def prepare_entry(record: CrystalRecord) -> PreparedEntry | str:
    """The record's energy prepared for a hull, or the reason it cannot be used.

    MP-style entries: MP2020 corrections (recomputed from the uncorrected energy unless the
    entry already carries MP2020 adjustments). Others: the energy as given.
    """
    metadata = record.energy_metadata
    if record.energy is None or not math.isfinite(record.energy):
        return "no energy"
    data = metadata.get("data") or {}
    if not is_mp_style(record):
        level = str(data.get("level_of_theory") or UNLABELLED)
        return PreparedEntry(record.label, record.structure, record.energy, level, NO_CORRECTION)
    adjustments = metadata.get("energy_adjustments") or []
    if any("MP2020" in name for name in adjustments):
        return PreparedEntry(
            record.label, record.structure, record.energy, MP_GGA_LEVEL, MP2020_CORRECTION
        )
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    uncorrected = metadata.get("uncorrected_energy", record.energy - metadata.get("correction", 0))
    entry = ComputedStructureEntry(
        record.structure,
        float(uncorrected),
        parameters=dict(metadata.get("parameters") or {}),
        data=dict(data),
        entry_id=record.id,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oxidation-state guesses, noble gases
        try:
            corrected = MaterialsProject2020Compatibility().process_entry(entry, on_error="raise")
        except KeyError as error:  # e.g. parameters without POTCAR information
            return f"MP2020 corrections cannot be applied: parameters lack {error}"
        except Exception as error:  # CompatibilityError, ValueError: this entry only
            return f"MP2020 corrections cannot be applied: {error}"
    if corrected is None:
        return "MP2020 corrections rejected this entry"
    return PreparedEntry(
        record.label, record.structure, corrected.energy, MP_GGA_LEVEL, MP2020_CORRECTION
    )


@dataclass
class ReferenceEntries:
    """A user's reference entries prepared for a hull, and the ones that could not be used."""

    entries: list[PreparedEntry]
    level_of_theory: str
    correction: str
    name: str
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Sequence[CrystalRecord], name: str) -> ReferenceEntries | None:
        """``None`` when no record carries an energy (a structures-only reference).

        Raises
        ------
        CrystalInputError
            When the usable entries mix levels of theory or correction schemes.
        """
        carrying = [r for r in records if r.energy is not None]
        if not carrying:
            return None
        entries, skipped = [], {}
        for record in carrying:
            prepared = prepare_entry(record)
            if isinstance(prepared, str):
                skipped[record.label] = prepared
            else:
                entries.append(prepared)
        kinds = sorted({(e.level_of_theory, e.correction) for e in entries})
        if len(kinds) > 1:
            raise CrystalInputError(
                f"--reference {name}: its entries mix levels of theory {kinds}; one hull holds "
                "one level"
            )
        if not entries:
            raise CrystalInputError(
                f"--reference {name}: no entry is usable ({next(iter(skipped.values()))})"
            )
        level, correction = kinds[0]
        return cls(entries, level, correction, name, skipped)

    def elemental_energies(self) -> dict[str, float]:
        """eV/atom of each element's lowest elemental entry (the zero of formation energies)."""
        mu: dict[str, float] = {}
        for entry in self.entries:
            composition = entry.structure.composition
            if len(composition.elements) == 1:
                symbol = composition.elements[0].symbol
                mu[symbol] = min(mu.get(symbol, math.inf), entry.energy / composition.num_atoms)
        return mu

    def same_level_hull(self) -> EntryHullReference:
        """The entries' own hull (carried energies at their level go on it)."""
        mu = self.elemental_energies()
        usable = []
        for entry in self.entries:
            if {el.symbol for el in entry.structure.composition} <= set(mu):
                usable.append(PDEntry(entry.structure.composition, entry.energy, entry.label))
            else:
                self.skipped[entry.label] = "the reference has no elemental entry for an element"
        return EntryHullReference(
            usable,
            mu,
            level_of_theory=self.level_of_theory,
            correction=self.correction,
            name=f"{self.name} ({len(usable)} entries, {self.level_of_theory})",
        )

    def dft_hull(self) -> MLFFOnDFTHull:
        """The entries as the DFT side of an MLFF-on-DFT hull (MP-style entries only)."""
        if (self.level_of_theory, self.correction) != (MP_GGA_LEVEL, MP2020_CORRECTION):
            raise CrystalInputError(
                f"--reference {self.name}: MLFF energies can be placed only on MP-style DFT "
                f"entries (MP2020 scale), not on {self.level_of_theory} entries; evaluate them "
                "with the same-level hull, or the entries' own energies with --relax none"
            )
        mu = self.elemental_energies()
        usable = [
            e for e in self.entries if {el.symbol for el in e.structure.composition} <= set(mu)
        ]
        dft = CompositionHullReference(
            [e.structure.composition.reduced_formula for e in usable],
            [prepared_formation_energy(e, mu) for e in usable],
            name=f"{self.name} ({len(usable)} entries, {MP_GGA_LEVEL} {MP2020_CORRECTION})",
            level_of_theory=MP_GGA_LEVEL,
            correction=MP2020_CORRECTION,
        )
        return MLFFOnDFTHull(dft, mu)


def place_carried_energy(
    record: CrystalRecord, hull: HullReference | None, reference_entries: ReferenceEntries | None
) -> HullResult | str:
    """E_hull of the energy a sample carries, or why there is none.

    Against the user's reference entries when given (the same preparation and level), else,
    for MP-style DFT entries, against the DFT hull of the known phases (MP2020).
    """
    prepared = prepare_entry(record)
    if isinstance(prepared, str):
        return prepared
    per_atom = prepared.energy / len(prepared.structure)
    try:
        if reference_entries is not None and hull is not None:
            return hull.e_above_hull(
                prepared.structure.composition,
                per_atom,
                level_of_theory=prepared.level_of_theory,
                correction=prepared.correction,
                kind="total",
            )
        if prepared.level_of_theory != MP_GGA_LEVEL:
            return (
                f"energy at level {prepared.level_of_theory}: no shipped reference at that "
                "level (pass --reference entries computed the same way, or use --relax)"
            )
        known = known_phase_hull()
        e_form = prepared_formation_energy(prepared, known.elemental_energies)
        return known.dft.e_above_hull(
            prepared.structure.composition,
            e_form,
            level_of_theory=MP_GGA_LEVEL,
            correction=MP2020_CORRECTION,
            kind="formation",
        )
    except (LevelOfTheoryMismatch, UnknownElementError, ValueError) as error:
        return str(error)


def prepared_formation_energy(entry: PreparedEntry, mu: dict[str, float]) -> float:
    """Formation energy per atom of a prepared entry against elemental energies ``mu``."""
    composition = entry.structure.composition
    missing = sorted(el.symbol for el in composition if el.symbol not in mu)
    if missing:
        raise UnknownElementError(f"no elemental reference energy for {', '.join(missing)}")
    total_mu = sum(n * mu[el.symbol] for el, n in composition.items())
    return (entry.energy - total_mu) / composition.num_atoms
