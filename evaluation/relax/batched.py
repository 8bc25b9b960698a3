"""Batched MLFF relaxations: many crystals in one model call, failures recorded per structure.

:func:`relax_batched` relaxes structures as :func:`evaluation.relax.engine.relax_structures`
does -- FIRE on positions and cell (Fréchet cell parameterisation), the same ``fmax`` criterion,
step cap, input checks and explosion criteria, the same :class:`RelaxResult` per structure --
but steps every structure in flight with one forward pass of the model. A structure leaves the
batch as soon as it converges, explodes or reaches the step cap, and the next waiting one takes
its place while the atoms in flight stay within a budget.

The parts are torch-sim's: :class:`~torch_sim.state.SimState`, the FIRE optimisers
(:func:`~torch_sim.optimizers.frechet_cell_fire`, :func:`~torch_sim.optimizers.fire`, ASE
flavour) and :func:`~torch_sim.state.concatenate_states`. The loop that drives them is ours:
torch-sim 0.3.0's ``optimize`` runner counts steps for the whole run rather than per structure,
checks convergence every few steps, and lets one structure's exception stop the batch; here
every structure is checked at every step, as the per-structure engine does.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch_sim as ts
from pymatgen.core import Lattice, Structure
from torch_sim.models.interface import ModelInterface
from torch_sim.state import SimState, concatenate_states
from tqdm.auto import tqdm

from evaluation.relax.calculators import canonical_model_name
from evaluation.relax.engine import (
    ExplosionCriteria,
    RelaxResult,
    StructureLike,
    input_problem,
    quiet_library_warnings,
    structure_and_label,
    unphysical_step,
)
from evaluation.relax.torchsim_models import torchsim_model

logger = logging.getLogger(__name__)

#: Atoms in flight at once on a CPU when no budget is given (64 and 256 measured alike: 24
#: structures of 2-12 atoms, CHGNet, one thread).
CPU_MAX_ATOMS = 256
#: The same on a GPU: a placeholder until measured on one (torch-sim's memory estimate, which
#: grows a batch until CUDA runs out of memory, builds every CHGNet graph on the CPU first).
GPU_MAX_ATOMS = 4096
# ASE's FIRE defaults (ase.optimize.FIRE), which relax_structures runs with.
_FIRE = dict(dt_start=0.1, dt_max=1.0, max_step=0.2, n_min=5, f_inc=1.1, f_dec=0.5)
_FIRE.update(alpha_start=0.1, f_alpha=0.99)


@dataclass
class _Job:
    """One structure's relaxation while it waits or is in flight."""

    index: int
    structure: Structure
    result: RelaxResult
    start: float = 0.0
    e0_per_atom: float = math.nan
    v0: float = math.nan
    steps: int = 0

    @property
    def n_atoms(self) -> int:
        return len(self.structure)


#: Loaded models, per thread (as the ASE calculators of :mod:`evaluation.relax.calculators`):
#: two rocket threads of one FireWorks worker never share a model's forward pass.
_MODELS = threading.local()


def loaded_model(name: str, device: str) -> tuple[ModelInterface, str]:
    """The torch-sim model for ``name`` on ``device``, loaded once per thread."""
    key = (canonical_model_name(name), device)
    loaded: dict[tuple[str, str], tuple[ModelInterface, str]] = _MODELS.__dict__
    if key not in loaded:
        loaded[key] = torchsim_model(name, device)
    return loaded[key]


def relax_batched(
    structures: Iterable[StructureLike],
    model: str = "chgnet",
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
    *,
    device: str = "cpu",
    max_atoms: int | None = None,
    criteria: ExplosionCriteria | None = None,
    progress: bool | str = True,
    on_result: Callable[[int, RelaxResult], None] | None = None,
) -> list[RelaxResult]:
    """Relax structures with one MLFF, many at a time (positions, and the cell by default).

    Parameters
    ----------
    structures
        pymatgen Structures or CrystalRecords (whose ``label`` names the result).
    model, device
        ``"chgnet"``, ``"7net-0"``/``"sevennet"`` or ``"7net-l3i5"`` (see
        :func:`~evaluation.relax.torchsim_models.torchsim_model`); ``"cpu"`` or ``"cuda"``.
    fmax, max_steps
        Converged when every atom's force and every row of the cell force (the Fréchet cell
        filter's, as in ASE) is below ``fmax`` (eV/Å); at most ``max_steps`` FIRE steps.
    relax_cell
        Relax lattice and positions (True) or positions only.
    max_atoms
        Atoms in flight at once (a structure larger than this runs alone). Default:
        :data:`CPU_MAX_ATOMS` on a CPU, :data:`GPU_MAX_ATOMS` on a GPU.
    criteria
        When a relaxation counts as exploded (checked for every structure at every step).
    progress
        Show a progress bar (a string: its label).
    on_result
        Called with (index, result) as each relaxation finishes, in the order they finish.

    Returns
    -------
    list[RelaxResult]
        One per input, in input order; ``wall_time_s`` is the time from entering the batch to
        leaving it. Failures are recorded, never raised.
    """
    ts_model, tag = loaded_model(model, device)
    criteria = criteria or ExplosionCriteria()
    jobs = []
    for index, item in enumerate(structures):
        structure, label = structure_and_label(item, index)
        result = RelaxResult(label=label, status="failed", level_of_theory=tag)
        jobs.append(_Job(index, structure, result))
    desc = progress if isinstance(progress, str) else f"relax {tag} (batched)"
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, unit="xtal")

    def finish(job: _Job) -> None:
        result = job.result
        result.wall_time_s = time.perf_counter() - job.start
        if not result.ok:
            logger.info("relaxation of %s %s: %s", result.label, result.status, result.reason)
        bar.update(1)
        if on_result is not None:
            on_result(job.index, result)

    waiting = deque()
    for job in jobs:
        job.start = time.perf_counter()
        try:
            problem = input_problem(job.structure, criteria)
        except Exception as exc:  # e.g. MemoryError on a pathological cell: this one only
            problem = f"input check failed: {type(exc).__name__}: {exc}"
        if problem:
            job.result.reason = problem
            finish(job)
        else:
            waiting.append(job)
    if waiting:
        budget = max_atoms or (CPU_MAX_ATOMS if ts_model.device.type == "cpu" else GPU_MAX_ATOMS)
        run = _BatchedFire(ts_model, fmax, max_steps, relax_cell, criteria, finish)
        with quiet_library_warnings():
            run.relax(waiting, budget)
    bar.close()
    return [job.result for job in jobs]


class _BatchedFire:
    """The in-flight FIRE loop: admit, step, check every structure, let the finished go."""

    def __init__(
        self,
        model: ModelInterface,
        fmax: float,
        max_steps: int,
        relax_cell: bool,
        criteria: ExplosionCriteria,
        finish: Callable[[_Job], None],
    ) -> None:
        self.model, self.fmax, self.max_steps = model, fmax, max_steps
        self.relax_cell, self.criteria, self.finish = relax_cell, criteria, finish
        optimizer = ts.optimizers.frechet_cell_fire if relax_cell else ts.optimizers.fire
        self.init, self.update = optimizer(model, md_flavor="ase_fire", **_FIRE)

    def relax(self, waiting: deque[_Job], budget: int) -> None:
        """Relax every job of ``waiting``, at most ``budget`` atoms in flight."""
        state, flying = None, []
        while waiting or flying:
            entering = []
            load = sum(job.n_atoms for job in flying)
            while waiting and (not (flying or entering) or load + waiting[0].n_atoms <= budget):
                entering.append(waiting.popleft())
                entering[-1].start = time.perf_counter()
                load += entering[-1].n_atoms
            if entering:
                fresh, entered = self._start(entering)
                if entered:
                    state = fresh if state is None else concatenate_states([state, fresh])
                    flying += entered
            if flying:
                state, flying = self._step(state, flying)
                state, flying = self._observe(state, flying)

    def _start(self, jobs: list[_Job]) -> tuple[SimState | None, list[_Job]]:
        """Initial energies of ``jobs`` (one forward pass); those that finish at once go."""
        state, jobs = self._isolating(self.init, jobs, self._to_state(jobs))
        if state is None:
            return None, []
        energies = state.energy.detach().cpu().numpy()
        volumes = torch.linalg.det(state.cell).abs().detach().cpu().numpy()
        keep = []
        for i, job in enumerate(jobs):
            traj = job.result.trajectory
            traj.initial_energy = float(energies[i])
            traj.initial_energy_per_atom = traj.initial_energy / job.n_atoms
            traj.initial_volume = float(volumes[i])
            job.e0_per_atom, job.v0 = traj.initial_energy_per_atom, traj.initial_volume
            if math.isfinite(job.e0_per_atom):
                keep.append(i)
            else:
                job.result.status = "exploded"
                job.result.reason = "non-finite energy of the input structure"
                traj.final_volume = traj.initial_volume
                self.finish(job)
        if not keep:
            return None, []
        state = state[keep] if len(keep) < len(jobs) else state
        jobs = [jobs[i] for i in keep]
        # ASE's FIRE starts from zero velocity and skips the mixing on its first step. torch-sim
        # marks a fresh structure with NaN velocities, which sends every structure in the
        # batch down its first-step branch (no power check, undeformed forces) whenever one
        # enters. Zero velocities and a doubled dt instead give the same first step -- zero
        # power halves dt back to dt_start -- and leave the structures in flight alone.
        state.velocities = torch.zeros_like(state.positions)
        state.dt = torch.full_like(state.dt, _FIRE["dt_start"] / _FIRE["f_dec"])
        if self.relax_cell:
            state.cell_velocities = torch.zeros_like(state.cell_forces)
        return self._observe(state, jobs)

    def _step(self, state: SimState, jobs: list[_Job]) -> tuple[SimState | None, list[_Job]]:
        """One FIRE step of every structure in flight."""
        for job in jobs:
            job.steps += 1
        return self._isolating(self.update, jobs, state)

    def _isolating(
        self, fn: Callable[[SimState], SimState], jobs: list[_Job], state: SimState
    ) -> tuple[SimState | None, list[_Job]]:
        """``fn`` of the whole batch; if it raises, of each structure alone, recording those
        that fail on their own (the others go on)."""
        backup = state.clone()  # torch-sim's update changes the state it is given
        try:
            return fn(state), jobs
        except Exception:
            logger.debug("batched step failed; retrying its %d structures alone", len(jobs))
        states, kept = [], []
        for i, job in enumerate(jobs):
            try:
                states.append(fn(backup[i]))
            except Exception as exc:  # this structure's failure, not the batch's
                job.result.reason = f"{type(exc).__name__}: {exc}"
                self.finish(job)
            else:
                kept.append(job)
        return (concatenate_states(states) if states else None), kept

    def _observe(
        self, state: SimState | None, jobs: list[_Job]
    ) -> tuple[SimState | None, list[_Job]]:
        """Check every structure of ``state``; record and remove those that are done."""
        if state is None:
            return None, []
        forces = state.forces
        if self.relax_cell:  # the forces ASE's FrechetCellFilter reports for the atoms
            deform = state.deform_grad()
            forces = torch.bmm(forces.unsqueeze(1), deform[state.system_idx]).squeeze(1)
        norms = forces.norm(dim=1)
        largest = torch.zeros(state.n_systems, dtype=norms.dtype, device=norms.device)
        largest = largest.scatter_reduce(0, state.system_idx, norms, reduce="amax")
        if self.relax_cell:
            largest = torch.maximum(largest, state.cell_forces.norm(dim=2).amax(dim=1))
        fmax = largest.detach().cpu().numpy()
        energies = state.energy.detach().cpu().numpy()
        all_forces = state.forces.detach().cpu().numpy()
        positions = state.positions.detach().cpu().numpy()
        cells = state.row_vector_cell.detach().cpu().numpy()
        owner = state.system_idx.detach().cpu().numpy()
        keep, stop = [], []
        for i, job in enumerate(jobs):
            mine = owner == i
            forces_i, positions_i = all_forces[mine], positions[mine]
            volume = float(abs(np.linalg.det(cells[i])))
            energy = float(energies[i])
            traj, result = job.result.trajectory, job.result
            closest = functools.partial(_closest, positions_i, cells[i], self.criteria.min_distance)
            status = "exploded"
            try:
                reason = unphysical_step(
                    job.n_atoms, energy, forces_i, volume, closest,
                    job.e0_per_atom, job.v0, self.criteria,
                )  # fmt: skip
            except Exception as exc:  # a cell gone numerically wild: this structure only
                status, reason = "failed", f"{type(exc).__name__}: {exc}"
            if reason is not None:
                result.status, result.reason = status, reason
            else:
                traj.energies.append(energy)
                converged = bool(fmax[i] < self.fmax)
                if not (converged or job.steps >= self.max_steps):
                    keep.append(i)
                    continue
                self._record(job, energy, forces_i, positions_i, cells[i], converged)
            traj.final_volume = volume
            stop.append(job)
        for job in stop:
            self.finish(job)
        if not keep:
            return None, []
        return (state[keep] if len(keep) < len(jobs) else state), [jobs[i] for i in keep]

    def _record(
        self,
        job: _Job,
        energy: float,
        forces: np.ndarray,
        positions: np.ndarray,
        cell: np.ndarray,
        converged: bool,
    ) -> None:
        """The result of a relaxation that ended without exploding."""
        result, structure = job.result, job.structure
        try:
            relaxed = Structure(
                Lattice(cell),
                structure.species,
                positions,
                coords_are_cartesian=True,
                to_unit_cell=True,
                site_properties=structure.site_properties or None,
            )
        except Exception as exc:  # as in relax_structures: a wild cell fails this one only
            result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
            return
        result.structure = relaxed
        result.energy, result.energy_per_atom = energy, energy / job.n_atoms
        result.max_force = float(np.linalg.norm(forces, axis=1).max())
        result.n_steps, result.converged = job.steps, converged
        result.status = "ok" if converged else "not_converged"
        if not converged:
            result.reason = f"not converged to fmax={self.fmax} in {self.max_steps} steps"

    def _to_state(self, jobs: list[_Job]) -> SimState:
        return ts.io.structures_to_state(
            [job.structure for job in jobs], self.model.device, self.model.dtype
        )


def _closest(positions: np.ndarray, cell: np.ndarray, cutoff: float) -> float | None:
    """The shortest interatomic distance if it is below ``cutoff``, else None (vesin: about
    a tenth of ASE's neighbour list, which would cost as much as a batched model step)."""
    import vesin

    (distances,) = vesin.NeighborList(cutoff=cutoff, full_list=False).compute(
        points=positions, box=cell, periodic=True, quantities="d"
    )
    return float(distances.min()) if len(distances) else None
