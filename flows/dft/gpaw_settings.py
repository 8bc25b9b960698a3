"""The GPAW input set: PBE plane-wave settings, spin, k-points and the retry ladder.

Defaults follow the Materials Project's choices where GPAW has an equivalent (PBE, a
plane-wave cutoff near MP's 520 eV, MP's initial magnetic moments) and GPAW's own advice
elsewhere. One deliberate difference: MP always runs spin-polarised (ISPIN = 2); here only
structures with a d- or f-block element are, because s/p compounds essentially never keep a
moment and spin polarisation doubles the cost. The settings that change total energies (xc,
cutoff, k-point density) are part of the level of theory, so a hull never mixes them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Element, Structure

#: MP's initial magnetic moments (pymatgen's MPRelaxSet MAGMOM, element keys only).
_MP_MAGMOM = {
    "Ce": 5.0, "Co": 0.6, "Cr": 5.0, "Eu": 10.0, "Fe": 5.0, "Mn": 5.0, "Mo": 5.0, "Ni": 5.0,
    "V": 5.0, "W": 5.0,
}  # fmt: skip
_DEFAULT_MAGMOM = 0.6


def _is_magnetic_candidate(element: Element) -> bool:
    return element.is_transition_metal or element.is_lanthanoid or element.is_actinoid


def _is_elemental_oxygen(structure: Structure) -> bool:
    """Solid O2 is made of triplet molecules: without spin its energy, and with it every
    oxide's formation energy, is off by about 1 eV per O2."""
    return {el.symbol for el in structure.composition.elements} == {"O"}


class GpawInputSet(BaseModel):
    """Settings of every GPAW calculation of a run (and of its hull references).

    Attributes
    ----------
    xc, ecut
        Functional and plane-wave cutoff (eV).
    kpoint_density
        Γ-centred Monkhorst-Pack density in k-points per Å⁻¹ (ASE ``kpts={"density": ...}``).
    smearing_width
        Fermi-Dirac width (eV); small enough for gaps, large enough for metals to converge.
    spin
        ``auto`` (polarised when a d/f element is present, MP moments), ``on`` or ``off``
        (solid O2 is always polarised unless ``off``).
    fmax, relax_steps
        Force criterion (eV/Å) and step budget of relaxations (FIRE + Fréchet cell filter).
    band_gap_kpoint_factor, band_gap_extra_bands
        The band-gap task's denser k-mesh (× density) and empty bands (fraction of occupied).
    max_attempts
        SCF attempts per calculation; each retry uses :meth:`safer` settings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The MSONable protocol: jobflow serialises makers (and this, their field) into FireWorks
    # specs with monty, which would otherwise turn a pydantic model into a plain dict.
    def as_dict(self) -> dict[str, Any]:
        return {
            "@module": type(self).__module__,
            "@class": type(self).__name__,
            **self.model_dump(),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> GpawInputSet:
        return cls(**{k: v for k, v in document.items() if not k.startswith("@")})

    xc: str = "PBE"
    ecut: float = Field(500.0, gt=100)
    kpoint_density: float = Field(3.5, gt=0)
    smearing_width: float = Field(0.05, gt=0)
    spin: str = Field("auto", pattern="^(auto|on|off)$")
    maxiter: int = Field(333, ge=10)
    mixer_beta: float | None = Field(None, gt=0, le=1, description="None: GPAW's default")
    fmax: float = Field(0.05, gt=0)
    relax_steps: int = Field(100, ge=2)
    band_gap_kpoint_factor: float = Field(1.5, ge=1)
    band_gap_extra_bands: float = Field(0.5, gt=0)
    max_attempts: int = Field(3, ge=1)
    attempt: int = Field(0, ge=0, description="0 for the first try; retries count up")

    @property
    def level_of_theory(self) -> str:
        """e.g. ``dft:gpaw-pbe-pw500-k3.5``: energies only share a hull at equal levels."""
        return f"dft:gpaw-{self.xc.lower()}-pw{self.ecut:g}-k{self.kpoint_density:g}"

    def safer(self) -> GpawInputSet:
        """The next rung of the retry ladder: gentler density mixing, more smearing, more
        SCF iterations. Cutoff and k-points stay, so the level of theory does not change."""
        beta = self.mixer_beta if self.mixer_beta is not None else 0.1
        return self.model_copy(
            update={
                "attempt": self.attempt + 1,
                "mixer_beta": max(beta / 2, 0.02),
                "smearing_width": min(self.smearing_width * 2, 0.2),
                "maxiter": self.maxiter * 2,
            }
        )

    def describe(self) -> str:
        """One line naming what this attempt changed, for the task record."""
        mixer = "default mixer" if self.mixer_beta is None else f"mixer beta {self.mixer_beta:g}"
        return (
            f"attempt {self.attempt + 1}: {mixer}, width {self.smearing_width:g} eV, "
            f"maxiter {self.maxiter}"
        )

    def initial_magmoms(self, structure: Structure) -> list[float] | None:
        """MP's initial moments when this structure is run spin-polarised, else ``None``."""
        if self.spin != "off" and _is_elemental_oxygen(structure):
            return [1.0] * len(structure)
        magnetic = [_is_magnetic_candidate(site.specie) for site in structure]
        if self.spin == "off" or (self.spin == "auto" and not any(magnetic)):
            return None
        # "on" starts every atom with a moment, as MP does; "auto" only the d/f ones
        return [
            _MP_MAGMOM.get(site.specie.symbol, _DEFAULT_MAGMOM)
            if is_m or self.spin == "on"
            else 0.0
            for site, is_m in zip(structure, magnetic, strict=True)
        ]

    def calculator_kwargs(self, *, kpoint_factor: float = 1.0, nbands: Any = None) -> dict:
        """Keyword arguments of ``gpaw.GPAW`` for these settings (no moments: see
        :meth:`initial_magmoms`, which are set on the atoms)."""
        from gpaw import PW

        kwargs: dict[str, Any] = {
            "mode": PW(self.ecut),
            "xc": self.xc,
            "kpts": {"density": self.kpoint_density * kpoint_factor, "gamma": True},
            "occupations": {"name": "fermi-dirac", "width": self.smearing_width},
            "convergence": {"energy": 1e-5},  # eV per valence electron
            "maxiter": self.maxiter,
            "txt": None,
        }
        if self.mixer_beta is not None:
            kwargs["mixer"] = {"beta": self.mixer_beta, "nmaxold": 5, "weight": 50.0}
        if nbands is not None:
            kwargs["nbands"] = nbands
        return kwargs
