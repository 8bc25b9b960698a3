"""Energies above the convex hull, at one level of theory at a time.

Every energy carries a *level of theory* (what computed it: ``dft:mp-gga-ggau``,
``mlff:chgnet-0.3.0``, ``dft:gpaw-pbe``) and a *correction scheme* applied on top of it
(``mp-legacy``, ``mp2020``, ``none``). A :class:`HullReference` holds reference energies at one
level and refuses queries at another (:class:`LevelOfTheoryMismatch`). Energies at the same level
but under another correction scheme (an MP2020-corrected VASP energy against the legacy MP
formation energies) are compared, but flagged: ``HullResult.correction_mismatch`` and a
:class:`CorrectionMismatchWarning`.

Two references:

* :class:`CompositionHullReference` -- composition-level formation energies (the shipped MP
  formation energies, :func:`mp_formation_energy_reference`); queries are formation energies.
* :class:`EntryHullReference` -- total energies the project computed itself (MLFF- or
  GPAW-relaxed reference structures) plus elemental energies from the same engine.

Both build a pymatgen ``PhaseDiagram`` of one chemical system on demand from an index by element
set (a k-element system touches its 2^k - 1 subsystems only) and keep it in an LRU cache.

Every :class:`HullResult` says how complete the hull behind it is: its ``coverage``
(:class:`~evaluation.hull.known_phases.HullCoverage`) counts the system's known DFT hull phases
(Materials Project, :mod:`evaluation.hull.known_phases`) that the reference holds.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element
from pymatgen.entries.computed_entries import ComputedEntry

from evaluation.hull.known_phases import HullCoverage, known_phases

logger = logging.getLogger(__name__)

#: PBE GGA(+U) with Materials Project input sets (VASP): MP's own energies.
MP_GGA_LEVEL = "dft:mp-gga-ggau"
MP_LEGACY_CORRECTION = "mp-legacy"
MP2020_CORRECTION = "mp2020"
NO_CORRECTION = "none"

#: Tags that name a level and its correction scheme in one string.
LEVEL_ALIASES: dict[str, tuple[str, str]] = {
    "dft:mp-gga-legacy": (MP_GGA_LEVEL, MP_LEGACY_CORRECTION),
    "dft:mp-gga-ggau-mp2020": (MP_GGA_LEVEL, MP2020_CORRECTION),
}

EnergyKind = Literal["formation", "total"]


class LevelOfTheoryMismatch(ValueError):  # noqa: N818 - the name the pipeline documents
    """An energy was put on the hull of a reference computed at another level of theory."""


class UnknownElementError(ValueError):
    """A composition holds an element the reference has no elemental energy for."""


class CorrectionMismatchWarning(UserWarning):
    """Same level of theory, different energy-correction schemes (e.g. MP2020 vs legacy)."""


def resolve_level(level_of_theory: str, correction: str | None = None) -> tuple[str, str]:
    """Split a level-of-theory tag into ``(level, correction)``.

    ``"dft:mp-gga-legacy"`` -> ``("dft:mp-gga-ggau", "mp-legacy")``; a plain tag keeps
    ``correction`` (default ``"none"``). A correction that contradicts an alias raises.
    """
    if not level_of_theory or not isinstance(level_of_theory, str):
        raise ValueError(f"level_of_theory must be a non-empty string, got {level_of_theory!r}")
    if level_of_theory in LEVEL_ALIASES:
        level, implied = LEVEL_ALIASES[level_of_theory]
        if correction not in (None, implied):
            raise ValueError(
                f"level {level_of_theory!r} implies correction {implied!r}, got {correction!r}"
            )
        return level, implied
    return level_of_theory, correction or NO_CORRECTION


def chemsys_elements(chemsys: str | Iterable[str] | Composition) -> frozenset[str]:
    """Element set of ``"Li-Fe-O"``, ``["Li", "O"]`` or a Composition, as a frozenset."""
    if isinstance(chemsys, Composition):
        return frozenset(el.symbol for el in chemsys.elements)
    names = chemsys.split("-") if isinstance(chemsys, str) else list(chemsys)
    elements = frozenset(str(name).strip() for name in names)
    for name in elements:
        if not Element.is_valid_symbol(name):
            raise ValueError(f"{name!r} is not an element symbol (chemical system {chemsys!r})")
    return elements


@dataclass
class HullResult:
    """Where one energy sits relative to the convex hull of a reference.

    Attributes
    ----------
    e_above_hull
        eV/atom; negative when the energy lies below the reference hull (a new ground state).
    formation_energy_per_atom
        eV/atom, relative to the reference's elemental energies.
    decomposition
        The hull phases at this composition: reduced formula -> fraction of atoms.
    reference, level_of_theory, correction
        The reference set used, the level of theory of the queried energy, and its correction
        scheme.
    reference_correction, correction_mismatch
        The reference's correction scheme and whether it differs from the query's.
    reference_level
        The level of theory of the reference's energies: the query's own for a same-level
        hull; ``dft:...`` when MLFF energies are placed on a DFT hull
        (:mod:`evaluation.hull.screening`), which :attr:`label` then says.
    coverage
        The known hull phases of the system the reference holds (``None``: not computed).
    """

    formula: str
    chemsys: str
    e_above_hull: float
    formation_energy_per_atom: float
    hull_energy_per_atom: float
    decomposition: dict[str, float]
    reference: str
    level_of_theory: str
    correction: str
    reference_correction: str
    correction_mismatch: bool = False
    reference_level: str = ""
    coverage: HullCoverage | None = None

    def __post_init__(self) -> None:
        self.reference_level = self.reference_level or self.level_of_theory

    @property
    def label(self) -> str:
        """What the E_hull compares: ``mlff:chgnet-0.3.0`` (same level) or
        ``mlff:chgnet-0.3.0 vs dft:mp-gga-ggau``."""
        if self.reference_level == self.level_of_theory:
            return self.level_of_theory
        return f"{self.level_of_theory} vs {self.reference_level}"

    def is_stable(self, threshold: float = 0.0) -> bool:
        """``e_above_hull <= threshold`` (with 1e-8 eV/atom numerical slack)."""
        return self.e_above_hull <= threshold + 1e-8

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["coverage"] = self.coverage.to_dict() if self.coverage else None
        data["label"] = self.label
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HullResult:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if values.get("coverage") is not None:
            values["coverage"] = HullCoverage.from_dict(values["coverage"])
        return cls(**values)


class HullReference(ABC):
    """Reference energies at one level of theory, queried one chemical system at a time.

    Subclasses index their entries by element set and provide, for one exact element set,
    PDEntries on the *formation-energy scale* (elements at 0). Building every phase diagram on
    that scale keeps E_hull identical to pymatgen's on total energies (the hull is invariant
    under shifting each element's chemical potential) and makes formation energies free.
    """

    def __init__(
        self, name: str, level_of_theory: str, correction: str | None = None, cache_size: int = 256
    ) -> None:
        self.name = name
        self.level_of_theory, self.correction = resolve_level(level_of_theory, correction)
        self._cache_size = cache_size
        self._pd_cache: OrderedDict[frozenset[str], PhaseDiagram] = OrderedDict()
        self._coverage_cache: dict[frozenset[str], HullCoverage] = {}

    # --- what subclasses provide -----------------------------------------------------------
    @property
    @abstractmethod
    def elements(self) -> frozenset[str]:
        """Elements with an elemental reference energy."""

    @abstractmethod
    def _entries_of(self, elements: frozenset[str]) -> list[PDEntry]:
        """Entries whose element set is exactly ``elements``, energies of formation (eV)."""

    @abstractmethod
    def elemental_energy_per_atom(self, element: str) -> float:
        """The zero of formation energies for ``element`` (eV/atom, total-energy scale)."""

    # --- shared machinery ------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, level_of_theory="
            f"{self.level_of_theory!r}, correction={self.correction!r})"
        )

    def _check_elements(self, elements: frozenset[str]) -> None:
        missing = sorted(elements - self.elements)
        if missing:
            raise UnknownElementError(
                f"no elemental reference for {', '.join(missing)} at {self.level_of_theory} "
                f"(reference {self.name!r})"
            )

    def check_level(self, level_of_theory: str, correction: str | None = None) -> bool:
        """Raise :class:`LevelOfTheoryMismatch` unless the level matches.

        Returns whether the correction schemes differ (and warns when they do).
        """
        level, corr = resolve_level(level_of_theory, correction)
        if level != self.level_of_theory:
            raise LevelOfTheoryMismatch(
                f"energy at level {level!r} cannot be placed on the hull of reference "
                f"{self.name!r}, computed at {self.level_of_theory!r}: energies from different "
                "levels of theory never share a hull; build a reference at the query's level "
                "(e.g. evaluation.hull.mlff_reference.mlff_hull_reference) or recompute the energy"
            )
        if corr != self.correction:
            warnings.warn(
                f"correction scheme {corr!r} of the query differs from {self.correction!r} of "
                f"reference {self.name!r} (both {level}); E_hull is flagged correction_mismatch",
                CorrectionMismatchWarning,
                stacklevel=3,
            )
            return True
        return False

    def phase_diagram(self, chemsys: str | Iterable[str] | Composition) -> PhaseDiagram:
        """The phase diagram of one chemical system (formation-energy scale), LRU-cached."""
        elements = chemsys_elements(chemsys)
        if not elements:
            raise ValueError("empty chemical system")
        self._check_elements(elements)
        if elements in self._pd_cache:
            self._pd_cache.move_to_end(elements)
            return self._pd_cache[elements]
        entries = [PDEntry(Composition({el: 1}), 0.0, name=el) for el in sorted(elements)]
        for size in range(1, len(elements) + 1):
            for subset in itertools.combinations(sorted(elements), size):
                entries.extend(self._entries_of(frozenset(subset)))
        diagram = PhaseDiagram(entries, elements=[Element(el) for el in sorted(elements)])
        self._pd_cache[elements] = diagram
        if len(self._pd_cache) > self._cache_size:
            self._pd_cache.popitem(last=False)
        return diagram

    def formulas(self, chemsys: str | Iterable[str] | Composition) -> set[str]:
        """Reduced formulas of the compounds this reference holds within a system."""
        elements = sorted(chemsys_elements(chemsys))
        held: set[str] = set()
        for size in range(2, len(elements) + 1):
            for subset in itertools.combinations(elements, size):
                held.update(
                    e.composition.reduced_formula for e in self._entries_of(frozenset(subset))
                )
        return held

    def coverage(self, chemsys: str | Iterable[str] | Composition) -> HullCoverage:
        """Which known DFT hull phases of the system this reference holds (cached)."""
        elements = chemsys_elements(chemsys)
        if elements not in self._coverage_cache:
            self._coverage_cache[elements] = known_phases().coverage(
                elements, self.formulas(elements)
            )
        return self._coverage_cache[elements]

    def formation_energy_per_atom(
        self, composition: Composition | str, energy_per_atom: float
    ) -> float:
        """Formation energy (eV/atom) of a total energy per atom, with this reference's zero."""
        comp = Composition(composition)
        self._check_elements(chemsys_elements(comp))
        mu = sum(
            comp.get_atomic_fraction(el) * self.elemental_energy_per_atom(el.symbol)
            for el in comp.elements
        )
        return float(energy_per_atom) - mu

    def e_above_hull(
        self,
        composition: Composition | str,
        energy_per_atom: float,
        *,
        level_of_theory: str,
        correction: str | None = None,
        kind: EnergyKind = "formation",
    ) -> HullResult:
        """E_hull of one energy.

        Parameters
        ----------
        composition
            The composition the energy belongs to (any multiple; energies are per atom).
        energy_per_atom
            eV/atom: a formation energy (``kind="formation"``) or a total energy (``"total"``).
        level_of_theory, correction
            How the energy was computed; must match the reference's level.

        Returns
        -------
        HullResult
            Negative ``e_above_hull`` is reported as is (below the reference hull).
        """
        mismatch = self.check_level(level_of_theory, correction)
        comp = Composition(composition)
        if comp.num_atoms <= 0:
            raise ValueError(f"empty composition {composition!r}")
        if not math.isfinite(float(energy_per_atom)):
            raise ValueError(f"energy_per_atom of {comp.reduced_formula} is not finite")
        if kind == "formation":
            e_form = float(energy_per_atom)
        elif kind == "total":
            e_form = self.formation_energy_per_atom(comp, energy_per_atom)
        else:
            raise ValueError(f"kind must be 'formation' or 'total', got {kind!r}")
        decomposition: dict[str, float] = {}
        if len(comp.elements) > MAX_PHASE_DIAGRAM_ELEMENTS:
            hull_energy, decomposition = self._linear_program_hull(comp)
        else:
            diagram = self.phase_diagram(comp)
            decomp, hull_energy = diagram.get_decomp_and_hull_energy_per_atom(comp)
            for entry, amount in decomp.items():
                key = entry.composition.reduced_formula
                decomposition[key] = decomposition.get(key, 0.0) + float(amount)
        return HullResult(
            formula=comp.reduced_formula,
            chemsys=comp.chemical_system,
            e_above_hull=e_form - float(hull_energy),
            formation_energy_per_atom=e_form,
            hull_energy_per_atom=float(hull_energy),
            decomposition=decomposition,
            reference=self.name,
            level_of_theory=self.level_of_theory,
            correction=resolve_level(level_of_theory, correction)[1],
            reference_correction=self.correction,
            correction_mismatch=mismatch,
            coverage=self.coverage(comp),
        )

    def _linear_program_hull(self, comp: Composition) -> tuple[float, dict[str, float]]:
        """Hull energy per atom at ``comp`` as a linear program, for many-element systems.

        The lower convex hull at a composition is the cheapest mix of reference phases with
        that composition: minimise sum_j x_j e_j (formation energies per atom) subject to
        sum_j x_j c_j = c and x >= 0 (atomic fractions c). Exact in any dimension, where
        qhull over every subsystem of a 10-element system does not finish.
        """
        from scipy.optimize import linprog

        elements = sorted(chemsys_elements(comp))
        self._check_elements(frozenset(elements))
        entries = [PDEntry(Composition({el: 1}), 0.0, name=el) for el in elements]
        for size in range(2, len(elements) + 1):
            for subset in itertools.combinations(elements, size):
                entries.extend(self._entries_of(frozenset(subset)))
        fractions = np.array(
            [[e.composition.get_atomic_fraction(el) for e in entries] for el in elements]
        )
        target = np.array([comp.get_atomic_fraction(el) for el in elements])
        energies = np.array([e.energy_per_atom for e in entries])
        result = linprog(energies, A_eq=fractions, b_eq=target, bounds=(0, None), method="highs")
        if not result.success:
            raise ValueError(f"no hull at {comp.reduced_formula}: {result.message}")
        decomposition: dict[str, float] = {}
        for entry, amount in zip(entries, result.x, strict=True):
            if amount > 1e-9:
                key = entry.composition.reduced_formula
                decomposition[key] = decomposition.get(key, 0.0) + float(amount)
        return float(result.fun), decomposition


#: Above this many elements, E_hull comes from a linear program instead of a PhaseDiagram.
MAX_PHASE_DIAGRAM_ELEMENTS = 6


class CompositionHullReference(HullReference):
    """Composition-level formation energies (eV/atom), elements at 0 eV/atom.

    Parameters
    ----------
    formulas, formation_energies
        One reference phase per row; duplicate compositions are allowed (the lowest wins).
    """

    def __init__(
        self,
        formulas: Sequence[str],
        formation_energies: Sequence[float],
        *,
        name: str,
        level_of_theory: str,
        correction: str | None = None,
        chemsys: Sequence[str] | None = None,
        cache_size: int = 256,
    ) -> None:
        super().__init__(name, level_of_theory, correction, cache_size)
        formulas = np.asarray(formulas, dtype=object)
        energies = np.asarray(formation_energies, dtype=float)
        if len(formulas) != len(energies):
            raise ValueError("formulas and formation_energies differ in length")
        if chemsys is None:  # the shipped file stores it; parsing 100k formulas takes seconds
            chemsys = [Composition(f).chemical_system for f in formulas]
        # Sort once by chemical system; the index maps an element set to a slice.
        keys = np.asarray(chemsys, dtype=object)
        order = np.argsort(keys, kind="stable")
        self._formulas, self._energies, keys = formulas[order], energies[order], keys[order]
        self._slices: dict[frozenset[str], slice] = {}
        boundaries = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        for start, stop in zip(np.r_[0, boundaries], np.r_[boundaries, len(keys)], strict=True):
            if stop > start:
                self._slices[frozenset(str(keys[start]).split("-"))] = slice(start, stop)
        self._elements = frozenset(el for key in self._slices for el in key)

    @property
    def elements(self) -> frozenset[str]:
        return self._elements

    def __len__(self) -> int:
        return len(self._energies)

    def elemental_energy_per_atom(self, element: str) -> float:
        raise ValueError(
            f"reference {self.name!r} holds formation energies only (no elemental total "
            "energies): pass kind='formation', or use an EntryHullReference for total energies"
        )

    def rows(self) -> Iterator[tuple[str, float]]:
        """Every ``(formula, formation energy per atom)`` row, grouped by chemical system."""
        for formula, e_form in zip(self._formulas, self._energies, strict=True):
            yield str(formula), float(e_form)

    def _entries_of(self, elements: frozenset[str]) -> list[PDEntry]:
        rows = self._slices.get(elements)
        if rows is None:
            return []
        entries = []
        for formula, e_form in zip(self._formulas[rows], self._energies[rows], strict=True):
            comp = Composition(formula)
            entries.append(PDEntry(comp, float(e_form) * comp.num_atoms, name=str(formula)))
        return entries

    @classmethod
    def from_csv(
        cls, path: str | Path, *, name: str, level_of_theory: str, correction: str | None = None
    ) -> CompositionHullReference:
        """Read a (gzipped) CSV with ``formula`` and ``e_form`` (or ``target``) columns."""
        # keep_default_na=False: pandas would read sodium nitride, "NaN", as a missing value
        table = pd.read_csv(path, comment="#", keep_default_na=False, dtype={"formula": str})
        energy_column = "e_form" if "e_form" in table else "target"
        return cls(
            table["formula"].tolist(),
            table[energy_column].to_numpy(float),
            chemsys=table["chemsys"].tolist() if "chemsys" in table else None,
            name=name,
            level_of_theory=level_of_theory,
            correction=correction,
        )


class EntryHullReference(HullReference):
    """Total energies computed by the project at one level, with same-level elemental energies.

    Parameters
    ----------
    entries
        PDEntry/ComputedEntry objects or ``(composition, total_energy_eV)`` pairs.
    elemental_energies
        eV/atom of each element's ground state computed the same way; they set the zero of the
        formation energies. An elemental entry lower than this is still used by the hull.
    """

    def __init__(
        self,
        entries: Iterable[PDEntry | ComputedEntry | tuple[Composition | str, float]],
        elemental_energies: Mapping[str, float],
        *,
        level_of_theory: str,
        correction: str | None = None,
        name: str = "entries",
        cache_size: int = 256,
    ) -> None:
        super().__init__(name, level_of_theory, correction, cache_size)
        self._mu = {str(el): float(e) for el, e in elemental_energies.items()}
        bad = [el for el, e in self._mu.items() if not math.isfinite(e)]
        if bad:
            raise ValueError(f"elemental energies are not finite for {bad}")
        self._index: dict[frozenset[str], list[PDEntry]] = {}
        for item in entries:
            if isinstance(item, PDEntry | ComputedEntry):
                comp, energy = item.composition, float(item.energy)
                label = getattr(item, "entry_id", None) or getattr(item, "name", None)
            else:
                comp, energy, label = Composition(item[0]), float(item[1]), None
            elements = chemsys_elements(comp)
            self._check_elements(elements)
            e_form = energy - sum(n * self._mu[el.symbol] for el, n in comp.items())
            entry = PDEntry(comp, e_form, name=str(label or comp.reduced_formula))
            self._index.setdefault(elements, []).append(entry)

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(self._mu)

    def __len__(self) -> int:
        return sum(len(v) for v in self._index.values())

    def elemental_energy_per_atom(self, element: str) -> float:
        if element not in self._mu:
            raise UnknownElementError(
                f"no elemental reference for {element} at {self.level_of_theory}"
            )
        return self._mu[element]

    def _entries_of(self, elements: frozenset[str]) -> list[PDEntry]:
        return list(self._index.get(elements, []))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (total energies, so :meth:`from_dict` rebuilds it exactly)."""
        entries = []
        for group in self._index.values():
            for entry in group:
                comp = entry.composition
                total = entry.energy + sum(n * self._mu[el.symbol] for el, n in comp.items())
                entries.append([comp.formula, total, entry.name])
        return {
            "entries": entries,
            "elemental_energies": dict(self._mu),
            "level_of_theory": self.level_of_theory,
            "correction": self.correction,
            "name": self.name,
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON (gzipped for a ``.gz`` name), atomically."""
        from evaluation.io.crystals import atomic_output

        with atomic_output(path) as handle:
            json.dump(self.to_dict(), handle)

    @classmethod
    def load(cls, path: str | Path) -> EntryHullReference:
        """Read a hull written by :meth:`save`."""
        path = Path(path)
        with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as handle:
            return cls.from_dict(json.load(handle))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EntryHullReference:
        """Inverse of :meth:`to_dict`."""
        entries = [
            PDEntry(Composition(formula), float(total), name=name)
            for formula, total, name in data["entries"]
        ]
        return cls(
            entries,
            data["elemental_energies"],
            level_of_theory=data["level_of_theory"],
            correction=data.get("correction"),
            name=data.get("name", "entries"),
        )
