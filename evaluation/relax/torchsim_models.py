"""MLFFs as torch-sim models: a batch of crystals in, energies, forces and stresses out.

torch-sim's optimisers call a :class:`~torch_sim.models.interface.ModelInterface` on a whole
:class:`~torch_sim.state.SimState` (many crystals, one tensor of positions). SevenNet has one
in torch-sim (:class:`~torch_sim.models.sevennet.SevenNetModel`, made importable beside sevenn
0.13 by :func:`evaluation.compat.sevenn.torchsim_sevennet_class`); CHGNet has none in torch-sim
0.3.0, so :class:`CHGNetModel` is the thin one here, over chgnet's batched graph forward
(:func:`evaluation.compat.chgnet.batched_energies_and_gradients`).

Every model here reports in float64 whatever it computes in (both MLFFs run in float32): the
optimiser's state then stays in float64, as ASE's does, and the cell filter's matrix logarithm
and exponential keep their precision near the identity.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from pymatgen.core import Lattice, Structure
from torch_sim.models.interface import ModelInterface
from torch_sim.state import SimState

from evaluation.compat.chgnet import batched_energies_and_gradients
from evaluation.relax.calculators import MLFFUnavailable, canonical_model_name, chgnet_model

#: The float type every model here reports in, and the optimiser's state therefore uses.
STATE_DTYPE = torch.float64


class CHGNetModel(ModelInterface):
    """CHGNet as a torch-sim model: all crystals of a state in one graph forward pass.

    Each crystal's graph is built by CHGNet's own converter (from a pymatgen Structure, as its
    ASE calculator does), and the energy is differentiated once with respect to positions and
    strains of all crystals together.

    Parameters
    ----------
    model
        A loaded ``chgnet.model.CHGNet``.
    device
        Where CHGNet runs (``"cpu"``, ``"cuda"``).
    """

    def __init__(self, model: Any, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self._device = torch.device(device)
        self._dtype = STATE_DTYPE
        self._compute_stress = True
        self._compute_forces = True
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff (5 Å)
        self.model = model.to(self._device).eval()
        self.model.graph_converter.set_isolated_atom_response("warn")  # as CHGNetCalculator

    def forward(self, state: SimState, **_: Any) -> dict[str, torch.Tensor]:
        """Energies ``[n_systems]`` (eV), forces ``[n_atoms, 3]`` (eV/Å) and stresses
        ``[n_systems, 3, 3]`` (eV/Å³) of every crystal in ``state``."""
        cells = state.row_vector_cell.detach().cpu().numpy()
        positions = state.positions.detach().cpu().numpy()
        numbers = state.atomic_numbers.detach().cpu().numpy()
        system_idx = state.system_idx.detach().cpu().numpy()
        graphs = []
        for index in range(state.n_systems):
            mask = system_idx == index
            structure = Structure(
                Lattice(cells[index]),
                numbers[mask].tolist(),
                positions[mask],
                coords_are_cartesian=True,
            )
            graphs.append(self.model.graph_converter(structure).to(self._device))
        energies, forces, stresses = batched_energies_and_gradients(self.model, graphs)
        return {
            "energy": energies.to(STATE_DTYPE),
            "forces": forces.to(STATE_DTYPE),
            "stress": stresses.to(STATE_DTYPE),
        }


class Float64Model(ModelInterface):
    """A torch-sim model that computes in float32 presented as a float64 one.

    Parameters
    ----------
    inner
        The model (e.g. torch-sim's ``SevenNetModel``, float32 only).
    """

    def __init__(self, inner: ModelInterface) -> None:
        super().__init__()
        self.inner = inner
        self._device = inner.device
        self._dtype = STATE_DTYPE
        self._compute_stress = inner.compute_stress
        self._compute_forces = inner.compute_forces
        self._memory_scales_with = inner.memory_scales_with

    def forward(self, state: SimState, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The inner model's output for ``state`` cast to float32, cast back to float64."""
        narrow = SimState(
            positions=state.positions.to(self.inner.dtype),
            masses=state.masses.to(self.inner.dtype),
            cell=state.cell.to(self.inner.dtype),
            pbc=state.pbc,
            atomic_numbers=state.atomic_numbers,
            system_idx=state.system_idx,
        )
        output = self.inner(narrow, **kwargs)
        return {key: value.to(STATE_DTYPE) for key, value in output.items()}


def torchsim_model(name: str, device: str = "cpu") -> tuple[ModelInterface, str]:
    """A torch-sim model for the MLFF ``name`` and its level-of-theory tag.

    Parameters
    ----------
    name
        ``"chgnet"`` (CHGNet 0.3.0), ``"7net-0"`` / ``"sevennet"`` or ``"7net-l3i5"``; the
        aliases of :func:`evaluation.relax.calculators.canonical_model_name`.
    device
        ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    model, tag
        The model (float64 state, see the module docstring) and the same level-of-theory tag
        as :func:`~evaluation.relax.calculators.load_calculator` gives (``mlff:chgnet-0.3.0``).

    Raises
    ------
    MLFFUnavailable
        The package or its shipped weights are missing (raised at once, no download).
    ValueError
        A model with no batched interface here (matgl, mattersim): relax those through the
        per-structure engine, :func:`evaluation.relax.engine.relax_structures`.
    """
    model = canonical_model_name(name)
    if model == "chgnet":
        loaded, tag = chgnet_model(device)
        return CHGNetModel(loaded, device), tag
    if model in ("7net-0", "7net-l3i5"):
        return _sevennet(model, device), f"mlff:sevennet-{model}"
    raise ValueError(
        f"no batched (torch-sim) interface for {name!r}: use 'chgnet', '7net-0' or "
        "'7net-l3i5', or the per-structure engine (evaluation.relax.engine.relax_structures)"
    )


def _sevennet(model: str, device: str) -> ModelInterface:
    """torch-sim's SevenNet interface over the checkpoint sevenn ships (never downloaded)."""
    from evaluation.compat.sevenn import shipped_checkpoint, torchsim_sevennet_class

    checkpoint = shipped_checkpoint(model)
    if not os.path.exists(checkpoint):  # sevenn would otherwise try to download it
        raise MLFFUnavailable(f"SevenNet checkpoint for {model} is missing at {checkpoint}")
    from sevenn.util import model_from_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no tensor-product accelerator" on CPU
        network, _config = model_from_checkpoint(checkpoint)
        inner = torchsim_sevennet_class()(network, device=device, dtype=torch.float32)
    return Float64Model(inner)
