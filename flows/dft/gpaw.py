"""GPAW through atomate2's ASE makers: relax, static, band gap and elastic for one structure.

``GpawRelaxMaker`` is an :class:`atomate2.ase.jobs.AseRelaxMaker` whose calculator is GPAW
built from a :class:`~flows.dft.gpaw_settings.GpawInputSet`; the static is the same maker
with one step (atomate2's single point). Both take ``make(structure, prev_dir=None)``, the
signature atomate2's common flows call, so :class:`GpawElasticMaker` is atomate2's
``BaseElasticMaker`` unchanged apart from its makers. A calculation whose SCF does not
converge is retried on the input set's retry ladder (gentler mixing, more smearing) and the
attempts are recorded in the task document's ``tags``; one that still fails raises
:class:`~flows.dft.schema.DFTTaskError` so the job fails alone and the run's summary records it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from atomate2.ase.jobs import AseRelaxMaker
from atomate2.ase.schemas import AseResult, AseTaskDoc
from atomate2.ase.utils import AseRelaxer
from atomate2.common.flows.elastic import BaseElasticMaker
from jobflow import Maker, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from evaluation.metrics.structure import MIN_INTERATOMIC_DISTANCE, min_interatomic_distance
from flows.dft.gpaw_settings import GpawInputSet
from flows.dft.schema import DFTTaskError, DFTUnavailable

#: atomate2's "minimal" elastic stencil (paper C.2): ±1 % on each independent strain state.
MINIMAL_STENCIL = [-0.01, 0.01]

#: A relaxation whose volume changes by more than this factor has exploded.
_MAX_VOLUME_CHANGE = 3.0

_T = TypeVar("_T")


def check_gpaw() -> None:
    """Raise :class:`DFTUnavailable` (one line) when GPAW or its PAW setups are missing."""
    try:
        import gpaw  # noqa: F401
        from gpaw.setup_data import search_for_file
    except ImportError as error:
        raise DFTUnavailable(
            f"GPAW is not installed ({error}); run `make install-gpaw` (apt libxc/blas/fftw "
            "headers + `pip install gpaw gpaw-data`)"
        ) from None
    try:
        search_for_file("Si.PBE")
    except (RuntimeError, OSError):
        raise DFTUnavailable(
            "GPAW's PAW setups were not found; `pip install gpaw-data` or set GPAW_SETUP_PATH"
        ) from None


def gpaw_calculator(settings: GpawInputSet, **overrides: Any):
    """A ``gpaw.GPAW`` calculator for these settings (import deferred: GPAW is optional)."""
    check_gpaw()
    from gpaw import GPAW

    return GPAW(**settings.calculator_kwargs(**overrides))


def with_retries(
    settings: GpawInputSet, task: str, run: Callable[[GpawInputSet], _T]
) -> tuple[_T, list[str]]:
    """``run(settings)``, retried on SCF non-convergence with :meth:`GpawInputSet.safer`.

    Returns the result and the attempts tried (one line each). Raises
    :class:`DFTTaskError` naming the task and every attempt once the ladder is exhausted.
    """
    from gpaw import KohnShamConvergenceError

    attempts: list[str] = []
    current = settings
    for _ in range(settings.max_attempts):
        attempts.append(current.describe())
        try:
            return run(current), attempts
        except KohnShamConvergenceError:
            current = current.safer()
    raise DFTTaskError(
        f"GPAW {task}: SCF did not converge in {len(attempts)} attempts ({'; '.join(attempts)})"
    )


def _check_not_exploded(before: Structure, after: Structure, task: str) -> None:
    ratio = after.volume / before.volume
    if not 1 / _MAX_VOLUME_CHANGE < ratio < _MAX_VOLUME_CHANGE or not np.isfinite(ratio):
        raise DFTTaskError(
            f"GPAW {task} exploded: volume {before.volume:.1f} -> {after.volume:.1f} Å^3"
        )
    if min_interatomic_distance(after) < MIN_INTERATOMIC_DISTANCE:  # periodic images included
        raise DFTTaskError(
            f"GPAW {task} exploded: two atoms closer than {MIN_INTERATOMIC_DISTANCE} Å"
        )


def task_tags(seconds: float, attempts: list[str]) -> list[str]:
    """How a task ran, as task-document tags (the ASE task document has no other free field)."""
    return [f"seconds={seconds:.3f}", *(f"attempt: {a}" for a in attempts)]


def read_task_tags(tags: list[str] | None) -> tuple[float | None, list[str]]:
    """The seconds and attempts written by :func:`task_tags`."""
    seconds, attempts = None, []
    for tag in tags or []:
        if tag.startswith("seconds="):
            seconds = float(tag.split("=", 1)[1])
        elif tag.startswith("attempt: "):
            attempts.append(tag.removeprefix("attempt: "))
    return seconds, attempts


@dataclass
class GpawRelaxMaker(AseRelaxMaker):
    """Relax a structure with GPAW (cell too when ``relax_cell``): FIRE + Fréchet filter.

    Attributes
    ----------
    settings
        The input set; ``steps`` and ``fmax`` default to its ``relax_steps`` and ``fmax``.
    """

    name: str = "GPAW relax"
    settings: GpawInputSet = field(default_factory=GpawInputSet)
    relax_cell: bool = True
    steps: int | None = None  # None: settings.relax_steps

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps is None:
            self.steps = self.settings.relax_steps
        # atomate2 otherwise appends every final structure to ./final_atoms_object.xyz
        self.relax_kwargs = {
            "fmax": self.settings.fmax,
            "final_atoms_object_file": None,
            **self.relax_kwargs,
        }

    @property
    def task_label(self) -> str:
        return "static" if self.steps <= 1 else "relax"

    def _get_calculator(self):
        return gpaw_calculator(self.settings)

    @job(data=["trajectory"])
    def make(self, structure: Structure, prev_dir: str | Path | None = None) -> AseTaskDoc:
        """Run GPAW on ``structure`` (``prev_dir`` is unused: GPAW restarts from scratch)."""
        started = time.perf_counter()
        result, attempts = with_retries(
            self.settings, self.task_label, lambda s: self._run_once(structure, s)
        )
        return AseTaskDoc.to_mol_or_struct_metadata_doc(
            "GPAW",
            result,
            self.steps,
            relax_kwargs=self.relax_kwargs,
            relax_cell=self.relax_cell,
            ionic_step_data=self.ionic_step_data,
            store_trajectory=self.store_trajectory,
            tags=[*(self.tags or []), *task_tags(time.perf_counter() - started, attempts)],
        )

    def _run_once(self, structure: Structure, settings: GpawInputSet) -> AseResult:
        atoms = AseAtomsAdaptor.get_atoms(structure)
        magmoms = settings.initial_magmoms(structure)
        if magmoms is not None:
            atoms.set_initial_magnetic_moments(magmoms)
        relaxer = AseRelaxer(
            gpaw_calculator(settings),
            relax_cell=self.relax_cell,
            relax_shape=self.relax_shape,
            fix_symmetry=self.fix_symmetry,
            symprec=self.symprec,
            **self.optimizer_kwargs,
        )
        result = relaxer.relax(atoms, steps=self.steps, **self.relax_kwargs)
        _check_not_exploded(structure, result.final_mol_or_struct, self.task_label)
        return result


@dataclass
class GpawStaticMaker(GpawRelaxMaker):
    """A GPAW single point (atomate2's ASE static: a relaxation of at most one step)."""

    name: str = "GPAW static"
    steps: int | None = 1


@dataclass
class GpawBandGapMaker(Maker):
    """The Kohn-Sham band gap from an SCF on a denser Γ-centred mesh with empty bands.

    ``ase.dft.bandgap`` reads it from the k-points of that mesh, so it is the gap on the mesh
    (exact for gaps at Γ or other mesh points, an upper bound otherwise).
    """

    name: str = "GPAW band gap"
    settings: GpawInputSet = field(default_factory=GpawInputSet)

    @job
    def make(self, structure: Structure) -> dict[str, Any]:
        """``{"band_gap", "is_gap_direct", "energy_per_atom", "seconds", "attempts"}``."""
        from ase.dft.bandgap import bandgap

        started = time.perf_counter()

        def run(settings: GpawInputSet) -> tuple[float, bool, float]:
            atoms = AseAtomsAdaptor.get_atoms(structure)
            magmoms = settings.initial_magmoms(structure)
            if magmoms is not None:
                atoms.set_initial_magnetic_moments(magmoms)
            extra = f"{round(100 * (1 + settings.band_gap_extra_bands))}%"
            atoms.calc = gpaw_calculator(
                settings, kpoint_factor=settings.band_gap_kpoint_factor, nbands=extra
            )
            energy = atoms.get_potential_energy() / len(atoms)
            gap, vbm, cbm = bandgap(atoms.calc, output=None)
            direct = bool(gap > 0 and vbm is not None and cbm is not None and vbm[1] == cbm[1])
            return float(gap), direct, float(energy)

        (gap, direct, energy), attempts = with_retries(self.settings, "band gap", run)
        return {
            "band_gap": gap,
            "is_gap_direct": direct,
            "energy_per_atom": energy,
            "seconds": time.perf_counter() - started,
            "attempts": attempts,
        }


def aligned_with_symmetry_axes(structure: Structure, symprec: float = 1e-3) -> Structure:
    """``structure`` rigidly rotated so that its conventional axes lie along x, y, z.

    Elastic deformations are Cartesian strains. In a cell whose symmetry axes are not along
    x, y, z (any cell built from CIF cell parameters), each strain breaks more symmetry than
    it must, and GPAW needs several times the k-points: Si read from a CIF took 347 s for the
    elastic task against 72 s aligned. A rotation changes no energy, and the cell and the atoms
    stay as they are. A structure spglib cannot analyse is returned unchanged.
    """
    from pymatgen.core import Lattice
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        dataset = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_dataset()
        rotation = np.asarray(dataset.std_rotation_matrix, dtype=float)
    except Exception:  # noqa: BLE001 - no symmetry analysis: keep the orientation given
        return structure
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-8) or np.linalg.det(rotation) < 0:
        return structure
    return Structure(
        Lattice((rotation @ structure.lattice.matrix.T).T),
        structure.species,
        structure.frac_coords,
        site_properties=structure.site_properties,
    )


@job
def align_for_elastic(structure: Structure) -> Structure:
    """The structure the elastic task deforms: :func:`aligned_with_symmetry_axes`."""
    return aligned_with_symmetry_axes(structure)


@dataclass
class GpawElasticMaker(BaseElasticMaker):
    """atomate2's elastic flow with GPAW: fixed-cell ionic relaxations of the ±1 % stencil.

    The structure passed in is expected to be relaxed already (the DFT run relaxes it
    first), so ``bulk_relax_maker`` is off by default.
    """

    name: str = "GPAW elastic"
    bulk_relax_maker: GpawRelaxMaker | None = None
    elastic_relax_maker: GpawRelaxMaker = field(
        default_factory=lambda: GpawRelaxMaker(name="GPAW elastic relax", relax_cell=False)
    )
    generate_elastic_deformations_kwargs: dict = field(
        default_factory=lambda: {"strain_magnitudes": MINIMAL_STENCIL}
    )

    @property
    def prev_calc_dir_argname(self) -> None:
        """GPAW starts each deformation from scratch: no previous directory to pass on."""
        return None
