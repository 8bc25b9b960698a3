"""MLFF energies on the DFT hull of the known phases: the hull MatterGen screens against.

A same-level MLFF hull (:mod:`evaluation.hull.mlff_reference`) can only hold the reference
structures we ship, and those miss most known phases of most systems. MatterGen's own
evaluation instead places MLFF energies on a DFT hull: its MLFF was trained on Materials
Project GGA/GGA+U energies, so its total energies, with MP2020 corrections, sit on the scale of
MP's DFT energies. This module does the same with what we have offline, and says so on every
result (``HullResult.label``: ``mlff:chgnet-0.3.0 vs dft:mp-gga-ggau``):

* the DFT side: the MP-20 near-hull phases (``mp20_near_hull.csv.gz``, 36,681 MP ids,
  formation energies on the MP2020 scale; MP's elemental ground states at 0);
* the MLFF side: the energy brought onto the MP2020 scale (:func:`mp2020_energy_per_atom`):
  models trained on uncorrected MPtrj energies (SevenNet, MatterSim) get
  ``MaterialsProject2020Compatibility`` corrections computed from the structure as MP's input
  set would have run it (GGA+U for O/F compounds of V, Cr, Mn, Fe, Co, Ni, Mo, W); CHGNet
  0.3.0 predicts MP2020-corrected energies already (measured:
  ``benchmarks/hull_screening.py``) and is used as is;
* the formation energy against MP's DFT elemental energies
  (``2023-02-07-mp-elemental-reference-entries.json.gz``), as MatterGen's hull does.

Energy scales of the sources, measured on shared formulas (``benchmarks/hull_screening.py``):
MP-20's formation energies are on the MP2020 scale, matbench_mp_e_form's on the legacy one
(Fe2O3: -1.707 vs -1.886 eV/atom, the Fe U correction 2.256 vs 2.733 eV/Fe); the two are
never mixed in one hull.
"""

from __future__ import annotations

import csv
import gzip
import math
import warnings
from dataclasses import replace
from functools import lru_cache
from typing import Literal

from pymatgen.core import Composition, Structure

from evaluation.hull.core import (
    MP2020_CORRECTION,
    MP_GGA_LEVEL,
    CompositionHullReference,
    HullResult,
    UnknownElementError,
)
from evaluation.hull.known_phases import MP20_NEAR_HULL_FILE, HullCoverage
from evaluation.hull.mp_entries import mp_elemental_energies
from evaluation.paths import reference_dir

EnergyScale = Literal["mp2020", "uncorrected"]

#: What each MLFF's total energies are, by level-of-theory tag: already on the MP2020 scale, or
#: uncorrected MP GGA/GGA+U energies (MPtrj's raw energies) that need MP2020 corrections.
#: Measured on MP-20 near-hull structures (``benchmarks/hull_screening.py``): for oxides of U
#: elements CHGNet's raw formation energy agrees with MP's DFT value within 0.03 eV/atom, and
#: SevenNet's only after the correction (0.7-1.2 eV/atom).
MLFF_ENERGY_SCALES: dict[str, EnergyScale] = {
    "mlff:chgnet-0.3.0": "mp2020",
    "mlff:sevennet-7net-0": "uncorrected",
    "mlff:sevennet-7net-l3i5": "uncorrected",
    "mlff:mattersim": "uncorrected",  # MatterGen applies MP2020 corrections to MatterSim
}

#: How the DFT hull of known phases is named in results.
KNOWN_PHASES_HULL_NAME = "dft:mp20-near-hull (MP-20 phases, MP2020 corrections)"


class UnknownEnergyScale(ValueError):  # noqa: N818 - reads as the condition
    """An MLFF whose energy scale (MP2020-corrected or not) is not known."""


def energy_scale(level_of_theory: str) -> EnergyScale:
    """The energy scale of an MLFF level-of-theory tag (see :data:`MLFF_ENERGY_SCALES`).

    Raises
    ------
    UnknownEnergyScale
        For an MLFF not measured yet (e.g. a matgl model): its energies cannot be placed on a
        DFT hull; the same-level hull still works.
    """
    for tag, scale in MLFF_ENERGY_SCALES.items():
        if level_of_theory == tag or level_of_theory.startswith(tag + "-"):
            return scale
    raise UnknownEnergyScale(
        f"the energy scale of {level_of_theory} (MP2020-corrected or raw MP GGA/GGA+U) is not "
        "known, so its energies cannot be placed on the DFT hull of known phases: use the "
        "same-level hull (hull: same-level)"
    )


def model_energy_scale(model: str) -> EnergyScale:
    """:func:`energy_scale` of an MLFF by the name a user types (``chgnet``, ``7net-0``),
    without loading it: campaigns check their hull choice before any work."""
    from evaluation.relax.calculators import canonical_model_name

    name = canonical_model_name(model)
    tags = {
        "chgnet": "mlff:chgnet-0.3.0",
        "7net-0": "mlff:sevennet-7net-0",
        "7net-l3i5": "mlff:sevennet-7net-l3i5",
    }
    return energy_scale(tags.get(name, f"mlff:{name.lower()}"))


def mp_style_parameters(composition: Composition) -> dict[str, object]:
    """The ``run_type`` and ``hubbards`` an MP calculation of this composition would have had.

    MP's input set (``MPRelaxSet``) runs GGA+U when the most electronegative element is O or
    F and the compound holds one of its U elements; the U values are the input set's.
    """
    from pymatgen.io.vasp.sets import MPRelaxSet

    elements = sorted(composition.elements, key=lambda el: el.X)
    u_table = MPRelaxSet.CONFIG["INCAR"]["LDAUU"].get(elements[-1].symbol, {})
    hubbards = {el.symbol: float(u_table[el.symbol]) for el in elements if u_table.get(el.symbol)}
    return {"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards}


def mp2020_correction(structure: Structure) -> float:
    """The MP2020 correction (eV, whole cell) of ``structure`` computed as MP would.

    Oxide type (oxide/peroxide/superoxide) and sulfide type come from the structure; anion
    corrections from pymatgen's oxidation-state guess.

    Raises
    ------
    ValueError
        When the compatibility scheme rejects the structure.
    """
    from pymatgen.entries.compatibility import (
        CompatibilityError,
        MaterialsProject2020Compatibility,
    )
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    entry = ComputedStructureEntry(
        structure, 0.0, parameters=mp_style_parameters(structure.composition)
    )
    compatibility = MaterialsProject2020Compatibility(check_potcar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oxidation-state guesses and noble-gas warnings
        try:
            adjustments = compatibility.get_adjustments(entry)
        except CompatibilityError as error:
            raise ValueError(f"MP2020 corrections do not apply: {error}") from None
    return float(sum(adjustment.value for adjustment in adjustments))


def mp2020_energy_per_atom(structure: Structure, energy_per_atom: float, level: str) -> float:
    """An MLFF energy per atom on the MP2020 scale (see :data:`MLFF_ENERGY_SCALES`)."""
    if energy_scale(level) == "mp2020":
        return float(energy_per_atom)
    return float(energy_per_atom) + mp2020_correction(structure) / len(structure)


class MLFFOnDFTHull:
    """MLFF energies placed on a composition-level DFT hull (MP2020 scale), e.g. the known phases.

    Parameters
    ----------
    dft
        The DFT formation energies (level ``dft:mp-gga-ggau``, correction ``mp2020``).
    elemental_energies
        eV/atom of each element's DFT ground state: the zero of ``dft``'s formation energies.
    """

    def __init__(self, dft: CompositionHullReference, elemental_energies: dict[str, float]) -> None:
        if (dft.level_of_theory, dft.correction) != (MP_GGA_LEVEL, MP2020_CORRECTION):
            raise ValueError(
                f"the known-phase hull needs MP2020-corrected MP GGA(+U) energies, got "
                f"{dft.level_of_theory} with {dft.correction} corrections"
            )
        self.dft = dft
        self.elemental_energies = dict(elemental_energies)

    @property
    def name(self) -> str:
        return self.dft.name

    def coverage(self, chemsys: str) -> HullCoverage:
        """The known hull phases of ``chemsys`` the DFT side holds."""
        return self.dft.coverage(chemsys)

    def formation_energy_per_atom(
        self, structure: Structure, energy_per_atom: float, level_of_theory: str
    ) -> float:
        """The MLFF formation energy (eV/atom) on the MP2020 scale against MP's elements."""
        composition = structure.composition
        missing = sorted(
            el.symbol for el in composition if el.symbol not in self.elemental_energies
        )
        if missing:
            raise UnknownElementError(f"no MP elemental reference energy for {', '.join(missing)}")
        corrected = mp2020_energy_per_atom(structure, energy_per_atom, level_of_theory)
        mu = sum(
            composition.get_atomic_fraction(el) * self.elemental_energies[el.symbol]
            for el in composition
        )
        return corrected - mu

    def e_above_hull(
        self, structure: Structure, energy_per_atom: float, *, level_of_theory: str
    ) -> HullResult:
        """E_hull of one MLFF energy on the DFT hull, labelled as the comparison it is.

        Raises
        ------
        UnknownEnergyScale, UnknownElementError, ValueError
            The MLFF's scale is unknown, an element has no DFT reference, or MP2020 rejects
            the structure.
        """
        if not math.isfinite(float(energy_per_atom)):
            raise ValueError(f"energy of {structure.composition.reduced_formula} is not finite")
        e_form = self.formation_energy_per_atom(structure, energy_per_atom, level_of_theory)
        result = self.dft.e_above_hull(
            structure.composition,
            e_form,
            level_of_theory=MP_GGA_LEVEL,
            correction=MP2020_CORRECTION,
            kind="formation",
        )
        return replace(
            result,
            level_of_theory=level_of_theory,
            reference_level=f"{MP_GGA_LEVEL} ({MP2020_CORRECTION})",
        )


def read_mp20_near_hull(path: str | None = None) -> CompositionHullReference:
    """The shipped MP-20 near-hull formation energies as a DFT hull reference (MP2020)."""
    formulas, energies, systems = [], [], []
    with gzip.open(path or reference_dir() / MP20_NEAR_HULL_FILE, "rt", newline="") as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            formulas.append(row["formula"])
            energies.append(float(row["e_form"]))
            systems.append(row["chemsys"])
    return CompositionHullReference(
        formulas,
        energies,
        chemsys=systems,
        name=KNOWN_PHASES_HULL_NAME,
        level_of_theory=MP_GGA_LEVEL,
        correction=MP2020_CORRECTION,
    )


@lru_cache(maxsize=2)
def known_phase_hull(path: str | None = None) -> MLFFOnDFTHull:
    """The shipped known-phase hull (MP-20 near-hull phases, MP elemental energies)."""
    return MLFFOnDFTHull(read_mp20_near_hull(path), mp_elemental_energies())
