"""What is known about a chemical system: the phases of the known DFT hulls, and coverage.

An energy above hull is only as good as the reference hull: a hull that lacks a known stable
compound makes anything near that composition look stable. Offline we cannot ship every known
structure, but we do know every Materials Project *composition* and which compositions lie on
MP's DFT hulls (the tables in ``../shared/data/reference``). This module turns them into one
shipped table, ``known_phases.csv.gz`` (:func:`build_known_phases`), and answers two
questions from it:

* :meth:`KnownPhases.hull_phases` -- the **known hull phases** of a system: every compound
  (two or more elements) whose elements lie in the system and which lies on the convex hull
  of a complete DFT source, within :data:`ON_HULL_TOLERANCE`. The sources, each on its own
  hull (never mixed):

  - ``legacy``: matbench_mp_e_form, 132,752 MP formation energies (MP 2018, legacy MP
    corrections), every MP composition of its time, hulled here system by system;
  - ``mp_e_hull``: 56,662 MP energies above hull, as MP computed them against its full hull.

  MP-20's near-hull phases (36,681 MP ids with MP2020 formation energies, the DFT energies of
  :mod:`evaluation.hull.screening`) give ids and energies but not hull membership: they are a
  filtered subset (cells of at most 20 atoms, within 25 meV/atom of an MLIP hull), and a hull
  of a subset crowns phases the full set puts above it (MP-20 alone puts LiO8 on the Li-O hull).

* :meth:`KnownPhases.coverage` -- how much of that a hull reference holds:
  :class:`HullCoverage` (known hull phases present / known, and which are missing).

:meth:`KnownPhases.composition` tells whether a formula is a known MP composition at all (any
source, on the hull or not): novelty uses it to call a structure that matches no reference
structure, but whose composition MP knows, *unverified* rather than novel.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.paths import reference_dir

#: Shipped table of known MP compositions (see :func:`build_known_phases`).
KNOWN_PHASES_FILE = "known_phases.csv.gz"
#: Shipped MP-20 near-hull phases with their MP2020 formation energies.
MP20_NEAR_HULL_FILE = "mp20_near_hull.csv.gz"
#: A composition within this E_hull (eV/atom) of a source's hull counts as on that hull.
ON_HULL_TOLERANCE = 1e-3
#: The complete DFT sources whose hulls define the known hull phases (``on_hull`` names them).
SOURCES = ("legacy", "mp_e_hull")


@dataclass(frozen=True)
class KnownPhase:
    """One known MP composition.

    Attributes
    ----------
    formula, chemsys
        Reduced formula (``Li2O``) and chemical system (``Li-O``).
    on_hull
        The DFT sources on whose hull it lies (empty: known, but above every hull).
    mp_ids
        MP-20 material ids of this composition, lowest formation energy first (may be empty:
        the legacy and E_hull tables carry no ids).
    """

    formula: str
    chemsys: str
    on_hull: tuple[str, ...] = ()
    mp_ids: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``Li2O (mp-1960)``, or the formula alone when no id is known."""
        return f"{self.formula} ({self.mp_ids[0]})" if self.mp_ids else self.formula


@dataclass(frozen=True)
class HullCoverage:
    """How many of a system's known hull phases a hull reference holds.

    Attributes
    ----------
    chemsys
        The system (elements sorted, ``-``-joined).
    known
        Formulas of the known hull phases (compounds of the system and its subsystems).
    missing
        Formulas of the known hull phases the reference lacks.
    missing_labels
        The same with their MP ids where known (``CoO``, ``Li5CoO4 (mp-754280)``).
    """

    chemsys: str
    known: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    missing_labels: tuple[str, ...] = ()

    def holds(self, formula: str) -> bool:
        """Whether ``formula`` is a known hull phase the reference holds."""
        return formula in self.known and formula not in self.missing

    @property
    def n_known(self) -> int:
        return len(self.known)

    @property
    def n_present(self) -> int:
        return len(self.known) - len(self.missing)

    @property
    def complete(self) -> bool:
        """The reference holds every known hull phase (vacuously so when none is known)."""
        return not self.missing

    @property
    def fraction(self) -> float:
        """Known hull phases present / known (1.0 when none is known)."""
        return self.n_present / self.n_known if self.known else 1.0

    def label(self, max_missing: int = 4) -> str:
        """``5/6 known hull phases (missing CoO (mp-22408))``, for summaries and tables."""
        text = f"{self.n_present}/{self.n_known} known hull phases"
        if self.missing:
            labels = self.missing_labels or self.missing
            shown = ", ".join(labels[:max_missing])
            hidden = len(labels) - max_missing
            text += f" (missing {shown}{f' and {hidden} more' if hidden > 0 else ''})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "chemsys": self.chemsys,
            "n_known": self.n_known,
            "n_present": self.n_present,
            "complete": self.complete,
            "known": list(self.known),
            "missing": list(self.missing),
            "missing_labels": list(self.missing_labels),
            "label": self.label(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HullCoverage:
        return cls(
            data["chemsys"],
            tuple(data["known"]),
            tuple(data["missing"]),
            tuple(data.get("missing_labels") or ()),
        )


def element_set(formula_or_chemsys: str) -> frozenset[str]:
    """``"Co-Li-O"`` -> ``{"Co", "Li", "O"}``."""
    return frozenset(formula_or_chemsys.split("-"))


@dataclass
class KnownPhases:
    """The known MP compositions, indexed by formula and by chemical system."""

    phases: Sequence[KnownPhase]
    _by_formula: dict[str, KnownPhase] = field(init=False, repr=False)
    _hull_by_system: dict[frozenset[str], list[KnownPhase]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_formula = {phase.formula: phase for phase in self.phases}
        self._hull_by_system = defaultdict(list)
        for phase in self.phases:
            if phase.on_hull and "-" in phase.chemsys:
                self._hull_by_system[element_set(phase.chemsys)].append(phase)

    def __len__(self) -> int:
        return len(self.phases)

    def composition(self, formula: str) -> KnownPhase | None:
        """The known phase of this reduced formula, or ``None`` (not a known MP composition)."""
        return self._by_formula.get(formula)

    def hull_phases(self, elements: Iterable[str]) -> list[KnownPhase]:
        """Known hull phases (compounds) whose elements all lie in ``elements``."""
        elements = sorted(set(elements))
        found: list[KnownPhase] = []
        if len(elements) <= 12:
            for size in range(2, len(elements) + 1):
                for subset in itertools.combinations(elements, size):
                    found.extend(self._hull_by_system.get(frozenset(subset), ()))
        else:  # 2^n subsets would be slower than one pass over every system
            wanted = frozenset(elements)
            for system, phases in self._hull_by_system.items():
                if system <= wanted:
                    found.extend(phases)
        return sorted(found, key=lambda phase: (phase.chemsys.count("-"), phase.formula))

    def coverage(self, elements: Iterable[str], present: Iterable[str]) -> HullCoverage:
        """Which known hull phases of the system ``elements`` the formulas ``present`` hold."""
        elements = sorted(set(elements))
        held = set(present)
        known = self.hull_phases(elements)
        missing = [phase for phase in known if phase.formula not in held]
        return HullCoverage(
            "-".join(elements),
            tuple(phase.formula for phase in known),
            tuple(phase.formula for phase in missing),
            tuple(phase.label for phase in missing),
        )

    # --- the shipped file -------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path) -> KnownPhases:
        """Read a table written by :func:`build_known_phases`."""
        phases = []
        with gzip.open(path, "rt", newline="") as handle:
            rows = csv.DictReader(line for line in handle if not line.startswith("#"))
            for row in rows:
                phases.append(
                    KnownPhase(
                        row["formula"],
                        row["chemsys"],
                        tuple(s for s in row["on_hull"].split(";") if s),
                        tuple(s for s in row["mp_ids"].split(";") if s),
                    )
                )
        return cls(phases)


@lru_cache(maxsize=2)
def known_phases(path: str | None = None) -> KnownPhases:
    """The shipped table of known MP compositions (loaded once per process)."""
    return KnownPhases.read(path or reference_dir() / KNOWN_PHASES_FILE)


# --- building the shipped tables from the shared data ---------------------------------------
def _reduced(formula: str) -> tuple[str, str]:
    from pymatgen.core import Composition

    composition = Composition(formula)
    return composition.reduced_formula, composition.chemical_system


def on_hull_formulas(
    energies: Mapping[str, float],
    chemsys_of: Mapping[str, str],
    tolerance: float = ON_HULL_TOLERANCE,
) -> set[str]:
    """The formulas on the convex hull of their own chemical system, for one source.

    ``energies`` maps reduced formulas to their lowest formation energy (eV/atom, elements at
    0). A composition's hull status depends only on the entries of its own element set and its
    subsets, so systems are processed by increasing size and each is hulled on its own entries
    plus the hull phases already found in its subsystems -- one small hull per system instead
    of one huge one.
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition
    from scipy.optimize import linprog

    by_system: dict[frozenset[str], list[str]] = defaultdict(list)
    for formula in energies:
        elements = element_set(chemsys_of[formula])
        if len(elements) > 1:
            by_system[elements].append(formula)
    stable: dict[frozenset[str], list[tuple[Composition, float]]] = {}
    on_hull: set[str] = set()
    for system in sorted(by_system, key=len):
        own = [(Composition(f), float(energies[f]), f) for f in by_system[system]]
        context: list[tuple[Composition, float]] = []
        for size in range(2, len(system)):
            for subset in itertools.combinations(sorted(system), size):
                context.extend(stable.get(frozenset(subset), ()))
        if len(system) <= 6:
            entries = [PDEntry(Composition(el), 0.0) for el in sorted(system)]
            entries += [PDEntry(c, e * c.num_atoms) for c, e in context]
            own_entries = [PDEntry(c, e * c.num_atoms, name=f) for c, e, f in own]
            diagram = PhaseDiagram(entries + own_entries)
            kept = [
                (entry.composition, entry.energy_per_atom, entry.name)
                for entry in own_entries
                if diagram.get_e_above_hull(entry, allow_negative=True) <= tolerance
            ]
        else:  # qhull in 7+ dimensions is slow: one linear program per composition
            elements = sorted(system)
            pool = (
                [(Composition(el), 0.0) for el in elements] + context + [(c, e) for c, e, _ in own]
            )
            matrix = np.array([[c.get_atomic_fraction(el) for c, _ in pool] for el in elements])
            costs = np.array([e for _, e in pool])
            kept = []
            for composition, energy, formula in own:
                target = np.array([composition.get_atomic_fraction(el) for el in elements])
                result = linprog(costs, A_eq=matrix, b_eq=target, bounds=(0, None), method="highs")
                if result.success and energy <= result.fun + tolerance:
                    kept.append((composition, energy, formula))
        stable[system] = [(c, e) for c, e, _ in kept]
        on_hull.update(f for _, _, f in kept)
    return on_hull


def _write_table(path: Path, header: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """A gzipped CSV with ``#`` comment lines; ``mtime=0`` keeps the bytes reproducible."""
    text = io.StringIO()
    text.write(header)
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    with (
        open(path, "wb") as handle,
        gzip.GzipFile(fileobj=handle, mode="wb", mtime=0, filename="") as gz,
    ):
        gz.write(text.getvalue().encode())


def build_known_phases(shared_reference: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Write :data:`KNOWN_PHASES_FILE` and :data:`MP20_NEAR_HULL_FILE` from the shared data.

    Parameters
    ----------
    shared_reference
        ``../shared/data/reference`` (``mp_e_form.csv``, ``mp_e_hull/``, ``mp20_hulls/``).
    out_dir
        Where to write (``data/reference``).

    Returns
    -------
    dict[str, int]
        Counts: known compositions, known hull phases per source and in all, MP-20 rows.
    """
    import pandas as pd

    shared, out = Path(shared_reference), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chemsys_of: dict[str, str] = {}

    def reduce_column(formulas: Iterable[str]) -> list[str]:
        reduced = []
        for formula in formulas:
            name, system = _reduced(formula)
            chemsys_of[name] = system
            reduced.append(name)
        return reduced

    # keep_default_na=False: pandas would read sodium nitride, "NaN", as a missing value
    legacy = pd.read_csv(shared / "mp_e_form.csv", keep_default_na=False)
    legacy["reduced"] = reduce_column(legacy["formula"])
    legacy_energy = legacy.groupby("reduced")["target"].min()
    legacy_rows = legacy.groupby("reduced").size()

    e_hull = pd.concat(
        [
            pd.read_csv(p, keep_default_na=False)
            for p in sorted((shared / "mp_e_hull").glob("*.csv"))
        ]
    )
    e_hull["reduced"] = reduce_column(e_hull["formula"])
    e_hull_min = e_hull.groupby("reduced")["target"].min()

    mp20 = pd.concat(
        [pd.read_parquet(p) for p in sorted((shared / "mp20_hulls").glob("*.parquet"))]
    ).drop_duplicates("material_id")
    mp20["reduced"] = reduce_column(mp20["pretty_formula"])
    mp20["n_sites"] = [len(species) for species in mp20["species_at_sites"]]
    mp20 = mp20.sort_values(["reduced", "formation_energy_per_atom", "material_id"])
    mp20_ids = mp20.groupby("reduced")["material_id"].agg(list)

    hull_sets = {
        "legacy": on_hull_formulas(legacy_energy.to_dict(), chemsys_of),
        "mp_e_hull": {f for f, e in e_hull_min.items() if e <= ON_HULL_TOLERANCE},
    }
    formulas = sorted(set(legacy_energy.index) | set(e_hull_min.index) | set(mp20_ids.index))
    rows = [
        (
            formula,
            chemsys_of[formula],
            ";".join(s for s in SOURCES if formula in hull_sets[s] and "-" in chemsys_of[formula]),
            ";".join(mp20_ids.get(formula, [])),
            int(legacy_rows.get(formula, 0)),
        )
        for formula in formulas
    ]
    _write_table(
        out / KNOWN_PHASES_FILE,
        "# Known Materials Project compositions (CC-BY-4.0, Materials Project): the union of\n"
        "# matbench_mp_e_form (legacy corrections), the MP E_hull table and MP-20's near-hull\n"
        "# phases. on_hull: the complete DFT sources on whose convex hull (per source, within\n"
        f"# {ON_HULL_TOLERANCE} eV/atom) the composition lies; mp_ids: MP-20 ids, lowest "
        "formation\n"
        "# energy first; legacy_rows: MP entries of this formula in matbench_mp_e_form.\n"
        "# Built by evaluation.hull.known_phases.build_known_phases.\n",
        ("formula", "chemsys", "on_hull", "mp_ids", "legacy_rows"),
        rows,
    )
    _write_table(
        out / MP20_NEAR_HULL_FILE,
        "# MP-20 phases within 25 meV/atom of an MLIP hull (MACE/ORB/UMA, union of the four\n"
        "# files of ../shared/data/reference/mp20_hulls), Materials Project data, CC-BY-4.0.\n"
        "# e_form: DFT formation energy (eV/atom) on the MP2020 correction scale; band_gap: eV.\n"
        "# Built by evaluation.hull.known_phases.build_known_phases.\n",
        ("material_id", "formula", "chemsys", "n_sites", "e_form", "band_gap"),
        (
            (r.material_id, r.reduced, chemsys_of[r.reduced], r.n_sites,
             f"{r.formation_energy_per_atom:.6f}", f"{r.band_gap:.4f}")
            for r in mp20.sort_values("material_id").itertuples()
        ),
    )  # fmt: skip
    known_hull = {f for s in SOURCES for f in hull_sets[s] if "-" in chemsys_of[f]}
    return {
        "known_compositions": len(rows),
        "known_hull_phases": len(known_hull),
        **{f"on_hull_{source}": len(hull_sets[source]) for source in SOURCES},
        "mp20_near_hull_rows": len(mp20),
    }
