"""Machine-learned force fields: calculators, relaxations and same-level hull references.

One concept, reused by the flows layer: :func:`load_calculator` turns a model name into an ASE
calculator plus its level-of-theory tag (``mlff:chgnet-0.3.0``); :func:`relax_structures` and
:func:`single_point` run it over many structures and record per-structure failures instead of
raising. Same-level hull references built from these live in :mod:`evaluation.mlff_reference`.

Only weights already on disk are used: CHGNet 0.3.0 and SevenNet (7net-0, 7net-l3i5) ship
inside their packages; matgl models must be local; nothing waits on the network.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.filters import FrechetCellFilter
from ase.neighborlist import neighbor_list
from ase.optimize import BFGS, FIRE, LBFGS
from ase.stress import full_3x3_to_voigt_6_stress
from pymatgen.core import Lattice, Structure
from tqdm.auto import tqdm

from evaluation.records import CrystalRecord

logger = logging.getLogger(__name__)

Status = Literal["ok", "not_converged", "exploded", "failed"]
StructureLike = Structure | CrystalRecord
_OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}


class MLFFUnavailable(RuntimeError):  # noqa: N818 - the name the pipeline documents
    """The requested MLFF (package or weights) is not available on this machine."""


# --- calculators ----------------------------------------------------------------------------
_SEVENNET_SHIPPED = {"7net-0": "SEVENNET_0_11Jul2024", "7net-l3i5": "SEVENNET_l3i5"}
_ALIASES = {
    **dict.fromkeys(("chgnet", "chgnet-0.3.0"), "chgnet"),
    **dict.fromkeys(("sevennet", "sevennet-0", "7net", "7net-0"), "7net-0"),
    **dict.fromkeys(("7net-l3i5", "sevennet-l3i5"), "7net-l3i5"),
}
# An ASE calculator keeps the last structure and results it computed, so it must not be
# shared between threads (two rocket threads of one FireWorks worker would read each other's
# forces): the cache is per thread.
_CALCULATORS = threading.local()
# Loading is serialised: CHGNet's loader prints, and the process-wide stdout swap that silences
# it, done by two threads at once, can leave stdout swallowed for good (a 2-thread worker's
# report lines vanished when both its first shards loaded CHGNet together).
_LOADING = threading.Lock()


def canonical_model_name(name: str) -> str:
    """``"sevennet"`` -> ``"7net-0"``, ``"CHGNet"`` -> ``"chgnet"``; matgl/mattersim kept."""
    lowered = name.strip().lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    if lowered.startswith("matgl:") or lowered.startswith("mattersim"):
        return name.strip()
    raise ValueError(
        f"unknown MLFF {name!r}: use 'chgnet', 'sevennet'/'7net-0', '7net-l3i5', "
        "'matgl:<model directory or name>' or 'mattersim'"
    )


def load_calculator(name: str, device: str = "cpu") -> tuple[Calculator, str]:
    """An ASE calculator for ``name`` and its level-of-theory tag, cached per thread.

    Parameters
    ----------
    name
        ``"chgnet"`` (CHGNet 0.3.0), ``"sevennet"``/``"7net-0"``, ``"7net-l3i5"``,
        ``"matgl:<path-or-name>"`` (local weights only) or ``"mattersim"``.
    device
        ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    MLFFUnavailable
        The package or its weights are not on this machine (raised at once, no download).
    """
    key = (canonical_model_name(name), device)
    loaded: dict[tuple[str, str], tuple[Calculator, str]] = _CALCULATORS.__dict__
    if key not in loaded:
        model = key[0]
        with _LOADING:
            if model == "chgnet":
                loaded[key] = _load_chgnet(device)
            elif model in _SEVENNET_SHIPPED:
                loaded[key] = _load_sevennet(model, device)
            elif model.lower().startswith("matgl:"):
                loaded[key] = _load_matgl(model.split(":", 1)[1], device)
            else:
                loaded[key] = _load_mattersim(device)
    return loaded[key]


def _load_chgnet(device: str) -> tuple[Calculator, str]:
    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its device and size
        model = CHGNet.load(model_name="0.3.0", use_device=device, verbose=False)
    return CHGNetInferenceCalculator(model, device), f"mlff:chgnet-{model.version or '0.3.0'}"


class CHGNetInferenceCalculator(Calculator):
    """CHGNet energy, forces and stress (eV/Å³) with one backward pass and no training graph.

    chgnet's own ``CHGNetCalculator`` differentiates the energy twice (forces, then stress),
    each time with ``create_graph=True`` as training needs, and also predicts magnetic moments.
    Here the energy is differentiated once with respect to positions and strain together:
    about 2x faster per call on one CPU thread, same numbers to float32 round-off (tested
    against ``CHGNetCalculator``). It uses chgnet's ``BatchedGraph`` and ``CHGNet._compute``
    (chgnet 0.4). ``model`` keeps the CHGNet for batched single points.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: Any, device: str = "cpu") -> None:
        super().__init__()
        self.model = model.to(device).eval()
        self.model.graph_converter.set_isolated_atom_response("warn")  # as CHGNetCalculator
        self.device = device

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        import torch
        from chgnet.model.model import BatchedGraph
        from pymatgen.io.ase import AseAtomsAdaptor

        super().calculate(atoms, properties, system_changes)
        model = self.model
        graph = model.graph_converter(AseAtomsAdaptor.get_structure(self.atoms)).to(self.device)
        with torch.enable_grad():
            batch = BatchedGraph.from_graphs(
                [graph],
                bond_basis_expansion=model.bond_basis_expansion,
                angle_basis_expansion=model.angle_basis_expansion,
                compute_stress=True,
            )
            per_atom = model._compute(batch)["e"]  # eV/atom when intensive, without AtomRef
            n_atoms = len(self.atoms) if model.is_intensive else 1
            energy = per_atom.sum() * n_atoms
            positions_grad, strain_grad = torch.autograd.grad(
                energy, [batch.atom_positions[0], batch.strains[0]]
            )
        if model.composition_model is not None:  # AtomRef: a constant for a given composition
            energy = energy + model.composition_model([graph]).sum() * n_atoms
        stress = (strain_grad / batch.volumes[0]).detach().cpu().numpy()
        self.results = {
            "energy": float(energy.detach()),
            "forces": -positions_grad.detach().cpu().numpy(),
            "stress": full_3x3_to_voigt_6_stress(stress.astype(np.float64)),
        }
        self.results["free_energy"] = self.results["energy"]


def _load_sevennet(model: str, device: str) -> tuple[Calculator, str]:
    from sevenn import _const
    from sevenn.calculator import SevenNetCalculator

    checkpoint = getattr(_const, _SEVENNET_SHIPPED[model])
    if not os.path.exists(checkpoint):  # sevenn would otherwise try to download it
        raise MLFFUnavailable(f"SevenNet checkpoint for {model} is missing at {checkpoint}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no tensor-product accelerator" on CPU
        calc = SevenNetCalculator(model=checkpoint, device=device)
    return calc, f"mlff:sevennet-{model}"


_MATGL_FILES = ("model.json", "model.pt", "state.pt")  # what matgl's ``save`` writes
_MATGL_HINT = (
    "matgl weights are never downloaded here: on a machine with network access run "
    "`matgl.load_model('<name>').save('<dir>')`, copy <dir> to this machine and pass "
    "'matgl:<dir>' (a folder with model.json, model.pt and state.pt)"
)


def _matgl_model_dir(target: str) -> Path:
    """The local matgl model directory ``target`` names, checked before matgl is imported.

    Raises
    ------
    MLFFUnavailable
        ``target`` is a pretrained name rather than a folder on this machine, or the folder
        lacks one of the files matgl's ``save`` writes.
    """
    path = Path(target).expanduser()
    if not path.exists():
        if target.startswith((".", "/", "~")) or os.sep in target:
            raise MLFFUnavailable(f"no matgl model at {target!r}: {_MATGL_HINT}")
        raise MLFFUnavailable(
            f"matgl model {target!r} is not a local model directory: {_MATGL_HINT}"
        )
    missing = [name for name in _MATGL_FILES if not (path / name).is_file()]
    if missing:
        raise MLFFUnavailable(
            f"{str(path)!r} is not a matgl model directory (missing {', '.join(missing)}): "
            f"{_MATGL_HINT}"
        )
    return path.resolve()


def _load_matgl(target: str, device: str) -> tuple[Calculator, str]:
    """matgl's ASE calculator for the potential saved in the directory ``target``.

    The directory is what ``Potential.save(dir)`` writes. Pretrained names are refused at once
    (no download); the stress is reported in eV/Å³, as ASE's cell filters expect.
    """
    path = _matgl_model_dir(target)
    if importlib.util.find_spec("matgl") is None:
        raise MLFFUnavailable(
            f"matgl is not installed, cannot load {str(path)!r}: "
            "`pip install 'crystalforge[matgl]'`"
        )
    import matgl
    from matgl.apps.pes import Potential
    from matgl.ext.ase import PESCalculator

    try:  # every file is local, so matgl reads them and never asks the Hugging Face Hub
        potential = matgl.load_model(path)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise MLFFUnavailable(
            f"matgl could not load the model at {str(path)!r}: {type(cause).__name__}: {cause}"
        ) from exc
    if not isinstance(potential, Potential):
        raise MLFFUnavailable(
            f"the matgl model at {str(path)!r} is a {type(potential).__name__}, not an "
            "interatomic potential (matgl.apps.pes.Potential)"
        )
    potential = potential.to(device).eval()  # eval: no double-backward graph for forces
    return PESCalculator(potential, stress_unit="eV/A3"), f"mlff:matgl-{path.name}"


def _load_mattersim(device: str) -> tuple[Calculator, str]:
    if importlib.util.find_spec("mattersim") is None:
        raise MLFFUnavailable(
            "mattersim is not installed: CrystalForge does not install it (it pins torch and "
            "torchvision versions that conflict with this environment); use 'chgnet' or "
            "'sevennet', or run MatterSim in a separate environment"
        )
    from mattersim.forcefield import MatterSimCalculator  # pragma: no cover - not installed

    try:  # pragma: no cover
        return MatterSimCalculator(device=device), "mlff:mattersim-v1.0.0-1m"
    except Exception as exc:  # pragma: no cover - weights not local
        raise MLFFUnavailable(f"mattersim could not load its weights: {exc}") from exc


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
def _unpack(item: StructureLike, index: int) -> tuple[Structure, str]:
    if isinstance(item, CrystalRecord):
        return item.structure, item.label
    if isinstance(item, Structure):
        return item, f"#{index}"
    raise TypeError(f"expected a pymatgen Structure or CrystalRecord, got {type(item).__name__}")


def _input_problem(structure: Structure, criteria: ExplosionCriteria) -> str | None:
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


def _check_step(atoms: Atoms, e0_per_atom: float, v0: float, criteria: ExplosionCriteria) -> None:
    """Raise _ExplodedError when the current state of a relaxation is unphysical."""
    n = len(atoms)
    energy = atoms.get_potential_energy()  # cached by the calculator for these positions
    forces = atoms.get_forces()
    if not (math.isfinite(energy) and np.all(np.isfinite(forces))):
        raise _ExplodedError("non-finite energy or forces")
    e_pa = energy / n
    if abs(e_pa) > criteria.max_abs_energy_per_atom:
        raise _ExplodedError(f"absurd energy {e_pa:.1f} eV/atom")
    if e_pa < e0_per_atom - criteria.max_energy_drop_per_atom:
        raise _ExplodedError(f"energy fell {e0_per_atom - e_pa:.1f} eV/atom below the start")
    ratio = atoms.get_volume() / v0
    if not (1 / criteria.max_volume_factor <= ratio <= criteria.max_volume_factor):
        raise _ExplodedError(f"volume changed by a factor {ratio:.2f}")
    closest = _closest_distance(atoms, criteria.min_distance)
    if closest is not None:
        raise _ExplodedError(f"atoms {closest:.2f} Å apart")


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
        problem = _input_problem(structure, criteria)
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
def _quiet_library_warnings() -> Iterator[None]:
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
    items = [_unpack(item, i) for i, item in enumerate(structures)]
    settings = dict(fmax=fmax, max_steps=max_steps, relax_cell=relax_cell, optimizer=optimizer)
    results = []
    desc = progress if isinstance(progress, str) else f"relax {tag}"
    bar = tqdm(items, desc=desc, disable=not progress, unit="xtal")
    for index, (structure, label) in enumerate(bar):
        with _quiet_library_warnings():
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
    items = [_unpack(item, i) for i, item in enumerate(structures)]
    results: list[SinglePointResult | None] = [None] * len(items)
    todo = []
    for i, (structure, label) in enumerate(items):
        problem = _input_problem(structure, ExplosionCriteria())
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
        with _quiet_library_warnings():
            outs = _chgnet_batch(calc, [items[i][0] for i in chunk]) if batched else None
        if outs is None:  # not batched, or one bad structure spoiled the batch
            with _quiet_library_warnings():
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
