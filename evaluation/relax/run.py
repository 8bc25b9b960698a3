"""The one relaxation entry point: batched on torch-sim where the MLFF allows, per structure
through ASE where it cannot.

:func:`relax` is what every caller runs (campaign stages, hull references, ``evaluate --relax``,
training-set labelling, ``crystalforge relax``, the benchmarks). CHGNet and SevenNet
(``7net-0``, ``7net-l3i5``) have a batched interface
(:mod:`evaluation.relax.torchsim_models`) and go through
:func:`evaluation.relax.batched.relax_batched`; matgl and MatterSim models exist only as ASE
calculators here and go through :func:`evaluation.relax.engine.relax_structures`, one
structure at a time. Both engines share the input checks, the explosion criteria, the
convergence criterion (ASE's, with the Fréchet cell filter) and :class:`RelaxResult`, so a
caller never needs to know which one ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from evaluation.relax.calculators import canonical_model_name
from evaluation.relax.engine import ExplosionCriteria, RelaxResult, StructureLike, relax_structures

#: MLFFs with a batched (torch-sim) interface, by canonical name.
BATCHED_MODELS = frozenset({"chgnet", "7net-0", "7net-l3i5"})


def is_batched(model: str) -> bool:
    """Whether ``model`` relaxes on the batched engine (raises ValueError for an unknown name)."""
    return canonical_model_name(model) in BATCHED_MODELS


def relax(
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
    """Relax structures with one MLFF: FIRE on positions (and the cell, by default).

    Parameters
    ----------
    structures
        pymatgen Structures or CrystalRecords (whose ``label`` names the result).
    model, device
        The MLFF (see :func:`evaluation.relax.calculators.canonical_model_name`) and where it
        runs (``"cpu"``, ``"cuda"``).
    fmax, max_steps
        Converged when every atom's force, and every row of the cell force, is below ``fmax``
        (eV/Å); at most ``max_steps`` FIRE steps.
    relax_cell
        Relax lattice and positions (True) or positions only.
    max_atoms
        Atoms in flight at once on the batched engine (ignored by the per-structure one).
    criteria
        When a relaxation counts as exploded.
    progress
        Show a progress bar (a string: its label).
    on_result
        Called with (input index, result) as each relaxation finishes.

    Returns
    -------
    list[RelaxResult]
        One per input, in input order. Failures are recorded per structure, never raised.

    Raises
    ------
    MLFFUnavailable
        The model's package or weights are missing (at once, before any relaxation).
    """
    settings = dict(relax_cell=relax_cell, device=device, criteria=criteria, progress=progress)
    if is_batched(model):
        from evaluation.relax.batched import relax_batched  # imports torch-sim

        return relax_batched(
            structures, model, fmax, max_steps, max_atoms=max_atoms, on_result=on_result, **settings
        )
    return relax_structures(structures, model, fmax, max_steps, on_result=on_result, **settings)
