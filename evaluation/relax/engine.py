"""MLFF relaxations and single points over many structures, failures recorded per structure.

:func:`relax_structures` and :func:`single_point` run a calculator from
:mod:`evaluation.relax.calculators` (by model name) over many structures and record each
failure (exploded, not converged, unreadable) on that structure's result instead of raising.
Same-level hull references built from these live in :mod:`evaluation.hull.core.mlff_reference`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.filters import FrechetCellFilter
from ase.neighborlist import neighbor_list
from ase.optimize import BFGS, FIRE, LBFGS
from pymatgen.core import Lattice, Structure
from tqdm.auto import tqdm

from evaluation.records import CrystalRecord
from evaluation.relax.calculators import load_calculator

logger = logging.getLogger(__name__)

Status = Literal["ok", "not_converged", "exploded", "failed"]
StructureLike = Structure | CrystalRecord
_OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}


# --- results ------------------------------------------------------------------------------
@dataclass
class ExplosionCriteria:
    """When a relaxation counts as exploded (checked at every optimizer step)."""

    min_distance: float = 0.5  # Å; closer atoms are unphysical for any MLFF
    max_volume_factor: float = 3.0  # V/V0 above this or below its inverse
    max_energy_drop_per_atom: float = 20.0  # eV/atom below the starting energy
    max_abs_energy_per_atom: float = 100.0  # eV/atom; real crystals stay within ~[-15, 5]


@dataclass
class TrajectorySummary:
    """What the relaxation went through, without the frames."""

    initial_energy: float | None = None
    initial_energy_per_atom: float | None = None
    initial_volume: float | None = None
    final_volume: float | None = None
    energies: list[float] = field(default_factory=list)  # total energy at every step

    @property
    def volume_ratio(self) -> float | None:
        if self.initial_volume and self.final_volume:
            return self.final_volume / self.initial_volume
        return None


@dataclass
class RelaxResult:
    """One MLFF relaxation.

    ``structure`` is the relaxed crystal (same atom order as the input) for ``ok`` and
    ``not_converged``; ``None`` for ``exploded`` and ``failed``, whose ``reason`` says why.
    Energies are totals in eV at ``level_of_theory``.
    """

    label: str
    status: Status
    reason: str = ""
    structure: Structure | None = None
    energy: float | None = None
    energy_per_atom: float | None = None
    max_force: float | None = None
    n_steps: int = 0
    converged: bool = False
    level_of_theory: str = ""
    wall_time_s: float = 0.0
    trajectory: TrajectorySummary = field(default_factory=TrajectorySummary)

    @property
    def ok(self) -> bool:
        """Usable energy and structure (converged or not)."""
        return self.status in ("ok", "not_converged")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)  # asdict deep-copies the Structure; replace it with its dict
        data["structure"] = self.structure.as_dict() if self.structure is not None else None
        return data


@dataclass
class SinglePointResult:
    """Energy and forces of one structure as given."""

    label: str
    status: Literal["ok", "failed"]
    reason: str = ""
    energy: float | None = None
    energy_per_atom: float | None = None
    max_force: float | None = None
    level_of_theory: str = ""


class _ExplodedError(RuntimeError):
    pass


# --- helpers ------------------------------------------------------------------------------
def structure_and_label(item: StructureLike, index: int) -> tuple[Structure, str]:
    """The structure of a Structure or CrystalRecord and its label (the record's, or ``#index``)."""
    if isinstance(item, CrystalRecord):
        return item.structure, item.label
    if isinstance(item, Structure):
        return item, f"#{index}"
    raise TypeError(f"expected a pymatgen Structure or CrystalRecord, got {type(item).__name__}")


def input_problem(structure: Structure, criteria: ExplosionCriteria) -> str | None:
    """Why a structure cannot be computed at all, or None."""
    if len(structure) == 0:
        return "empty structure"
    if not structure.is_ordered:
        return "disordered structure (partial occupancies) cannot be computed by an MLFF"
    if not (
        np.all(np.isfinite(structure.lattice.matrix)) and np.all(np.isfinite(structure.frac_coords))
    ):
        return "non-finite lattice or coordinates (NaN/inf)"
    if not structure.volume > 1e-6:
        return "degenerate cell (zero volume)"
    # Neighbour search on a needle- or plate-like cell enumerates ~cutoff/height images per
    # direction (one generated cell exhausted a worker's memory that way): search the
    # LLL-reduced cell, whose heights are as large as the lattice allows.
    reduced = structure.lattice.get_lll_reduced_lattice()
    if min(reduced.abc) < criteria.min_distance:
        return (
            f"a lattice vector of {min(reduced.abc):.3f} Å: every atom is closer than "
            f"{criteria.min_distance} Å to its own periodic image"
        )
    in_reduced = Structure(
        reduced, structure.species, structure.cart_coords, coords_are_cartesian=True
    )
    closest = _closest_distance(_to_atoms(in_reduced), criteria.min_distance)
    if closest is not None:
        return f"input has atoms {closest:.2f} Å apart (< {criteria.min_distance} Å)"
    return None


def _to_atoms(structure: Structure) -> Atoms:
    return Atoms(
        numbers=[site.specie.Z for site in structure],
        positions=structure.cart_coords,
        cell=structure.lattice.matrix,
        pbc=True,
    )


def _closest_distance(atoms: Atoms, cutoff: float) -> float | None:
    """The shortest interatomic distance if it is below ``cutoff``, else None."""
    distances = neighbor_list("d", atoms, cutoff)
    return float(distances.min()) if len(distances) else None


def unphysical_step(
    n_atoms: int,
    energy: float,
    forces: np.ndarray,
    volume: float,
    closest: Callable[[], float | None],
    e0_per_atom: float,
    v0: float,
    criteria: ExplosionCriteria,
) -> str | None:
    """Why a state of a relaxation is unphysical (it exploded), or None.

    ``closest`` gives the shortest interatomic distance below ``criteria.min_distance`` (or
    None); it is called last, as the dearest check. Shared with the batched engine
    (:mod:`evaluation.relax.batched`), so both judge explosions alike.
    """
    if not (math.isfinite(energy) and np.all(np.isfinite(forces))):
        return "non-finite energy or forces"
    e_pa = energy / n_atoms
    if abs(e_pa) > criteria.max_abs_energy_per_atom:
        return f"absurd energy {e_pa:.1f} eV/atom"
    if e_pa < e0_per_atom - criteria.max_energy_drop_per_atom:
        return f"energy fell {e0_per_atom - e_pa:.1f} eV/atom below the start"
    ratio = volume / v0
    if not (1 / criteria.max_volume_factor <= ratio <= criteria.max_volume_factor):
        return f"volume changed by a factor {ratio:.2f}"
    distance = closest()
    if distance is not None:
        return f"atoms {distance:.2f} Å apart"
    return None


def _check_step(atoms: Atoms, e0_per_atom: float, v0: float, criteria: ExplosionCriteria) -> None:
    """Raise _ExplodedError when the current state of a relaxation is unphysical."""
    reason = unphysical_step(
        len(atoms),
        atoms.get_potential_energy(),  # cached by the calculator for these positions
        atoms.get_forces(),
        atoms.get_volume(),
        lambda: _closest_distance(atoms, criteria.min_distance),
        e0_per_atom,
        v0,
        criteria,
    )
    if reason is not None:
        raise _ExplodedError(reason)


class _FrechetCellFilter(FrechetCellFilter):
    """ASE's FrechetCellFilter, computing its generalized forces once per state.

    ASE's optimizers ask for them three times per step, and each time costs a matrix logarithm
    and nine Fréchet derivatives of the matrix exponential: about a fifth of a CHGNet relaxation
    of a small cell. The result depends only on the positions and the cell, so it is reused
    until either changes.
    """

    _cached: tuple[bytes, np.ndarray, np.ndarray] | None = None

    def get_forces(self, **kwargs: Any) -> np.ndarray:
        key = (
            self.atoms.positions.tobytes() + self.atoms.cell.array.tobytes() + repr(kwargs).encode()
        )
        if self._cached is None or self._cached[0] != key:
            forces = super().get_forces(**kwargs)
            self._cached = (key, forces, self.stress)
        self.stress = self._cached[2]
        return self._cached[1].copy()


def _relax_one(
    structure: Structure,
    label: str,
    calc: Calculator,
    tag: str,
    *,
    fmax: float,
    max_steps: int,
    relax_cell: bool,
    optimizer: str,
    criteria: ExplosionCriteria,
) -> RelaxResult:
    start = time.perf_counter()
    result = RelaxResult(label=label, status="failed", level_of_theory=tag)
    try:
        problem = input_problem(structure, criteria)
    except Exception as exc:  # e.g. MemoryError on a pathological cell: this structure only
        problem = f"input check failed: {type(exc).__name__}: {exc}"
    if problem:
        result.reason = problem
        return result
    atoms = _to_atoms(structure)
    atoms.calc = calc
    traj = result.trajectory
    try:
        traj.initial_energy = float(atoms.get_potential_energy())
        traj.initial_energy_per_atom = traj.initial_energy / len(atoms)
        traj.initial_volume = float(atoms.get_volume())
        e0, v0 = traj.initial_energy_per_atom, traj.initial_volume
        if not math.isfinite(e0):
            raise _ExplodedError("non-finite energy of the input structure")

        def observe() -> None:
            _check_step(atoms, e0, v0, criteria)
            traj.energies.append(float(atoms.get_potential_energy()))

        target = _FrechetCellFilter(atoms) if relax_cell else atoms
        opt = _OPTIMIZERS[optimizer](target, logfile=None)
        opt.attach(observe, interval=1)
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
        _check_step(atoms, e0, v0, criteria)  # the final state, whatever the optimizer did
        # built inside the try: a cell gone numerically wild can fail here too (numpy raised
        # SystemError wrapping the fractional coordinates of one such structure)
        energy = float(atoms.get_potential_energy())
        relaxed = Structure(
            Lattice(atoms.cell[:]),
            structure.species,
            atoms.positions,
            coords_are_cartesian=True,
            to_unit_cell=True,
            site_properties=structure.site_properties or None,
        )
        max_force = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    except _ExplodedError as exc:
        result.status, result.reason = "exploded", str(exc)
    except Exception as exc:  # one structure's failure never stops the batch
        result.reason = f"{type(exc).__name__}: {exc}"
    else:
        result.structure = relaxed
        result.energy, result.energy_per_atom = energy, energy / len(atoms)
        result.max_force = max_force
        result.n_steps, result.converged = int(opt.nsteps), converged
        result.status = "ok" if converged else "not_converged"
        if not converged:
            result.reason = f"not converged to fmax={fmax} in {max_steps} steps"
        traj.final_volume = float(atoms.get_volume())
    finally:
        result.wall_time_s = time.perf_counter() - start
    if traj.initial_volume and result.structure is None:
        traj.final_volume = float(atoms.get_volume())
    return result


# --- public: relax and single points ------------------------------------------------------
@contextlib.contextmanager
def quiet_library_warnings() -> Iterator[None]:
    """Silence two harmless warnings that would otherwise print at every step of every run."""
    with warnings.catch_warnings():
        # FrechetCellFilter's matrix logarithm reports round-off of ~1e-13.
        warnings.filterwarnings("ignore", message="logm result may be inaccurate")
        # CHGNet builds a tensor from a tensor that requires grad (its own code, not ours).
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        yield


def relax_structures(
    structures: Iterable[StructureLike],
    model: str = "chgnet",
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
    *,
    optimizer: Literal["FIRE", "BFGS", "LBFGS"] = "FIRE",
    device: str = "cpu",
    criteria: ExplosionCriteria | None = None,
    progress: bool | str = True,
    on_result: Callable[[int, RelaxResult], None] | None = None,
) -> list[RelaxResult]:
    """Relax structures with one MLFF (positions, and the cell through FrechetCellFilter).

    Parameters
    ----------
    structures
        pymatgen Structures or CrystalRecords (whose ``label`` names the result).
    model, device
        See :func:`load_calculator`; one calculator serves the whole batch.
    fmax, max_steps
        Force convergence (eV/Å) and step budget of the optimizer.
    relax_cell
        Relax lattice and positions (True) or positions only.
    criteria
        When a relaxation counts as exploded.
    progress
        Show a progress bar (a string: its label).
    on_result
        Called with (index, result) as each relaxation finishes, e.g. to persist it.

    Returns
    -------
    list[RelaxResult]
        One per input, in order. Failures are recorded, never raised.
    """
    calc, tag = load_calculator(model, device)
    criteria = criteria or ExplosionCriteria()
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
    items = [structure_and_label(item, i) for i, item in enumerate(structures)]
    settings = dict(fmax=fmax, max_steps=max_steps, relax_cell=relax_cell, optimizer=optimizer)
    results = []
    desc = progress if isinstance(progress, str) else f"relax {tag}"
    bar = tqdm(items, desc=desc, disable=not progress, unit="xtal")
    for index, (structure, label) in enumerate(bar):
        with quiet_library_warnings():
            result = _relax_one(structure, label, calc, tag, criteria=criteria, **settings)
        if not result.ok:
            logger.info("relaxation of %s %s: %s", label, result.status, result.reason)
        results.append(result)
        if on_result is not None:
            on_result(index, result)
    return results


def single_point(
    structures: Iterable[StructureLike],
    model: str = "chgnet",
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> list[SinglePointResult]:
    """Energies and forces of structures as given (no relaxation).

    CHGNet predicts energies and forces without the stress (faster than its ASE calculator),
    ``batch_size`` graphs at a time. The default is 1 on CPU -- with one thread, batching was
    measured slower (16 ten-atom cells: 1.5 s one by one, 4.7-6.1 s as one batch) -- and 16
    on a GPU. Other MLFFs go through their ASE calculator one structure at a time.
    """
    calc, tag = load_calculator(model, device)
    batch_size = batch_size or (1 if device == "cpu" else 16)
    items = [structure_and_label(item, i) for i, item in enumerate(structures)]
    results: list[SinglePointResult | None] = [None] * len(items)
    todo = []
    for i, (structure, label) in enumerate(items):
        problem = input_problem(structure, ExplosionCriteria())
        if problem:
            results[i] = SinglePointResult(label, "failed", problem, level_of_theory=tag)
        else:
            todo.append(i)
    bar = tqdm(total=len(todo), desc=f"single point {tag}", disable=not progress, unit="xtal")
    # CHGNet predicts a whole batch in one graph; other calculators go one at a time.
    batched = hasattr(getattr(calc, "model", None), "predict_structure")
    step = batch_size if batched else 1
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        with quiet_library_warnings():
            outs = _chgnet_batch(calc, [items[i][0] for i in chunk]) if batched else None
        if outs is None:  # not batched, or one bad structure spoiled the batch
            with quiet_library_warnings():
                outs = [_ase_single_point(calc, items[i][0]) for i in chunk]
        for i, out in zip(chunk, outs, strict=True):
            label, n = items[i][1], len(items[i][0])
            if isinstance(out, str):
                results[i] = SinglePointResult(label, "failed", out, level_of_theory=tag)
            elif not (math.isfinite(out[0]) and np.all(np.isfinite(out[1]))):
                reason = "non-finite energy or forces"
                results[i] = SinglePointResult(label, "failed", reason, level_of_theory=tag)
            else:
                max_force = float(np.linalg.norm(out[1], axis=1).max())
                results[i] = SinglePointResult(label, "ok", "", out[0], out[0] / n, max_force, tag)
        bar.update(len(chunk))
    bar.close()
    return [r for r in results if r is not None]


def _chgnet_batch(
    calc: Calculator, structures: list[Structure]
) -> list[tuple[float, np.ndarray]] | None:
    """Total energies (eV) and forces of a batch from CHGNet, or None if the batch failed."""
    try:
        preds = calc.model.predict_structure(structures, task="ef", batch_size=len(structures))
    except Exception:
        return None
    preds = preds if isinstance(preds, list) else [preds]
    # CHGNet predicts eV/atom; the ASE calculator reports the total the same way.
    return [
        (float(p["e"]) * len(s), np.asarray(p["f"])) for s, p in zip(structures, preds, strict=True)
    ]


def _ase_single_point(calc: Calculator, structure: Structure) -> tuple[float, np.ndarray] | str:
    try:
        atoms = _to_atoms(structure)
        atoms.calc = calc
        return float(atoms.get_potential_energy()), atoms.get_forces()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


# --- elemental references and hull references at the MLFF level --------------------------
