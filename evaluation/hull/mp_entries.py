"""Materials Project energies on the hull: the shipped legacy formation energies, MP-style
VASP entries under MP2020 corrections, and MP's elemental references.

Everything here is at the ``dft:mp-gga-ggau`` level (:mod:`evaluation.hull.core`); the
files live in ``reference_dir()`` (see ``data/reference/SOURCES.md``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import pandas as pd
from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedEntry

from evaluation.hull.core import (
    MP2020_CORRECTION,
    MP_GGA_LEVEL,
    MP_LEGACY_CORRECTION,
    NO_CORRECTION,
    CompositionHullReference,
    CorrectionMismatchWarning,
    EnergyKind,
    HullReference,
    HullResult,
    UnknownElementError,
)
from evaluation.paths import reference_dir

logger = logging.getLogger(__name__)

#: Shipped files in ``reference_dir()``, Materials Project data (CC-BY-4.0): the compact copy of
#: matbench_mp_e_form (:func:`convert_mp_e_form_csv`) and a byte copy of MP's elemental entries.
MP_E_FORM_FILE = "mp_e_form_legacy.csv.gz"
MP_ELEMENTAL_ENTRIES_FILE = "2023-02-07-mp-elemental-reference-entries.json.gz"


# --- the shipped MP formation-energy reference ----------------------------------------------
def convert_mp_e_form_csv(source: str | Path, destination: str | Path) -> int:
    """Write the compact copy of matbench_mp_e_form that CrystalForge ships.

    One row per reduced formula with its lowest formation energy (the only one a hull can use),
    plus the chemical system, so loading needs no formula parsing. Gzip with ``mtime=0`` makes
    the output byte-reproducible. Reproduce the shipped file with::

        convert_mp_e_form_csv("/work/shared/data/reference/mp_e_form.csv",
                              reference_dir() / MP_E_FORM_FILE)

    Returns the number of rows written.
    """
    table = pd.read_csv(source)
    comps = [Composition(f) for f in table["formula"]]
    table["formula"] = [c.reduced_formula for c in comps]
    table["chemsys"] = [c.chemical_system for c in comps]
    grouped = table.groupby("formula", sort=True).agg(
        chemsys=("chemsys", "first"), e_form=("target", "min"), n_source_rows=("target", "size")
    )
    text = io.StringIO()
    text.write(
        "# Materials Project formation energies (eV/atom), legacy MP correction scheme:\n"
        "# matbench_mp_e_form (MP 2018), CC-BY-4.0, Materials Project / matbench.\n"
        f"# {len(table)} source rows reduced to the lowest energy per reduced formula by\n"
        "# evaluation.hull.convert_mp_e_form_csv. Elements are at 0 eV/atom.\n"
    )
    grouped.reset_index()[["formula", "chemsys", "e_form", "n_source_rows"]].to_csv(
        text, index=False, float_format="%.12g", quoting=csv.QUOTE_MINIMAL
    )
    with (
        open(destination, "wb") as handle,
        gzip.GzipFile(fileobj=handle, mode="wb", mtime=0, filename="") as gz,
    ):
        gz.write(text.getvalue().encode())
    return len(grouped)


@lru_cache(maxsize=4)
def mp_formation_energy_reference(path: str | None = None) -> CompositionHullReference:
    """The shipped MP formation energies (legacy corrections) as a hull reference.

    Level ``dft:mp-gga-ggau`` with correction ``mp-legacy`` (alias ``dft:mp-gga-legacy``).
    Loaded once per process (about 0.3 s).
    """
    return CompositionHullReference.from_csv(
        path or reference_dir() / MP_E_FORM_FILE,
        name="mp_e_form (matbench, MP 2018 legacy corrections)",
        level_of_theory=MP_GGA_LEVEL,
        correction=MP_LEGACY_CORRECTION,
    )


# --- MP-style VASP entries: MP2020 corrections and MP elemental references ------------------
@lru_cache(maxsize=4)
def mp_elemental_entries(path: str | None = None) -> dict[str, ComputedEntry]:
    """MP GGA elemental ground states (uncorrected; MP2020 corrects no elemental phase)."""
    with gzip.open(path or reference_dir() / MP_ELEMENTAL_ENTRIES_FILE, "rt") as handle:
        raw = json.load(handle)
    with warnings.catch_warnings():  # noble gases have no Pauling electronegativity
        warnings.filterwarnings("ignore", message="No Pauling electronegativity")
        return {el: ComputedEntry.from_dict(entry) for el, entry in raw.items()}


def mp_elemental_energies(path: str | None = None) -> dict[str, float]:
    """eV/atom of each MP elemental ground state (the zero of MP formation energies)."""
    return {el: entry.energy_per_atom for el, entry in mp_elemental_entries(path).items()}


def apply_mp2020_compatibility(
    entries: Sequence[ComputedEntry], *, check_potcar: bool = True
) -> list[ComputedEntry]:
    """Apply ``MaterialsProject2020Compatibility`` to MP-style GGA/GGA+U entries.

    Entries the scheme rejects (wrong run type, U values or POTCARs) are dropped, as pymatgen
    does, and logged. Kept entries are copies marked ``data["correction_scheme"] = "mp2020"``.
    """
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    compat = MaterialsProject2020Compatibility(check_potcar=check_potcar)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No Pauling electronegativity")
        processed = compat.process_entries(list(entries), inplace=False, on_error="warn")
    if len(processed) < len(entries):
        logger.warning(
            "MP2020 compatibility rejected %d of %d entries (see pymatgen warnings for which)",
            len(entries) - len(processed),
            len(entries),
        )
    for entry in processed:
        entry.data["correction_scheme"] = MP2020_CORRECTION
    return processed


def correction_scheme_of(entry: ComputedEntry) -> str:
    """``"mp2020"``, ``"none"`` (no adjustments) or ``"other:<names>"`` for an entry."""
    if "correction_scheme" in entry.data:
        return str(entry.data["correction_scheme"])
    names = [adj.name for adj in entry.energy_adjustments]
    if not names:
        return NO_CORRECTION
    if any("MP2020" in name for name in names):
        return MP2020_CORRECTION
    return "other:" + ";".join(sorted(set(names)))


def level_of_theory_of(entry: ComputedEntry) -> str:
    """``entry.data["level_of_theory"]``, or ``dft:mp-gga-ggau`` for MP-style VASP entries."""
    if "level_of_theory" in entry.data:
        return str(entry.data["level_of_theory"])
    params = entry.parameters or {}
    if params.get("run_type") in ("GGA", "GGA+U") and (
        "potcar_spec" in params or "hubbards" in params
    ):
        return MP_GGA_LEVEL
    raise ValueError(
        f"entry {entry.entry_id or entry.composition.reduced_formula} carries no level of "
        "theory: set entry.data['level_of_theory'] or MP-style parameters (run_type, potcar_spec)"
    )


def entry_e_above_hull(entry: ComputedEntry, reference: HullReference) -> HullResult:
    """E_hull of a ComputedEntry (as corrected) against ``reference``.

    On a :class:`CompositionHullReference` the formation energy is taken against MP elemental
    reference entries (MP-level entries only); on an :class:`EntryHullReference` against that
    reference's own elemental energies.
    """
    level, correction = level_of_theory_of(entry), correction_scheme_of(entry)
    reference.check_level(level, correction)  # fail before any work; warns on mismatch
    if isinstance(reference, CompositionHullReference):
        mu = mp_elemental_energies()
        missing = sorted(el.symbol for el in entry.composition.elements if el.symbol not in mu)
        if missing:
            raise UnknownElementError(f"no MP elemental reference entry for {missing}")
        e_form = (
            entry.energy - sum(n * mu[el.symbol] for el, n in entry.composition.items())
        ) / entry.composition.num_atoms
        args: tuple[float, EnergyKind] = (e_form, "formation")
    else:
        args = (entry.energy_per_atom, "total")
    with warnings.catch_warnings():  # check_level above already warned once
        warnings.simplefilter("ignore", CorrectionMismatchWarning)
        return reference.e_above_hull(
            entry.composition,
            args[0],
            level_of_theory=level,
            correction=correction,
            kind=args[1],
        )
