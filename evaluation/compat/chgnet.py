"""A CHGNet shortcut that public API would make slower, verified on chgnet 0.4.2.

:func:`energy_and_gradients` differentiates the energy once with respect to positions and strain
together, through chgnet's ``BatchedGraph`` and private ``CHGNet._compute``. The public path,
``CHGNet.predict_graph(..., task="efs")`` (what ``CHGNetCalculator`` runs), differentiates twice
with ``create_graph=True`` as training needs: measured 1.8-1.95x slower per single point on
one CPU thread (Si 2 atoms: 6.1 vs 3.1 ms; NaCl 8: 25.3 vs 14.2 ms; LiCoO2 4: 19.4 vs 10.7 ms;
16: 39.1 vs 20.1 ms), and every MLFF relaxation step pays it. Outside the verified range
:func:`energy_and_gradients` takes that public path, with one logged warning.
:func:`batched_energies_and_gradients` does the same for many crystal graphs in one forward pass
(the batched relaxation engine's CHGNet model interface); its public path is
``predict_graph(graphs, task="efs", batch_size=len(graphs))``.
``tests/evaluation/test_compat_shortcuts.py`` compares the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation.compat import VerifiedRange, shortcut_allowed

if TYPE_CHECKING:
    import torch

VERIFIED = VerifiedRange("chgnet", "0.4.2", "0.4.2")


def energy_and_gradients(
    model: Any, graph: Any, n_atoms: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """CHGNet's total energy (eV), forces (eV/Å) and 3x3 stress (eV/Å³) of one crystal graph.

    Parameters
    ----------
    model
        A ``chgnet.model.CHGNet`` in eval mode.
    graph
        ``model.graph_converter(structure)``, on the model's device.
    n_atoms
        Atoms in the structure (the model predicts eV/atom when intensive).
    """
    if not shortcut_allowed(VERIFIED, "CHGNet._compute"):
        return _public_energy_and_gradients(model, graph, n_atoms)
    import torch
    from chgnet.model.model import BatchedGraph

    with torch.enable_grad():
        batch = BatchedGraph.from_graphs(
            [graph],
            bond_basis_expansion=model.bond_basis_expansion,
            angle_basis_expansion=model.angle_basis_expansion,
            compute_stress=True,
        )
        per_atom = model._compute(batch)["e"]  # eV/atom when intensive, without AtomRef
        scale = n_atoms if model.is_intensive else 1
        energy = per_atom.sum() * scale
        positions_grad, strain_grad = torch.autograd.grad(
            energy, [batch.atom_positions[0], batch.strains[0]]
        )
    if model.composition_model is not None:  # AtomRef: a constant for a given composition
        energy = energy + model.composition_model([graph]).sum() * scale
    stress = (strain_grad / batch.volumes[0]).detach().cpu().numpy().astype(np.float64)
    return float(energy.detach()), -positions_grad.detach().cpu().numpy(), stress


def _public_energy_and_gradients(
    model: Any, graph: Any, n_atoms: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """The same through ``CHGNet.predict_graph`` (two backward passes), as ``CHGNetCalculator``."""
    from ase.units import GPa  # CHGNet predicts stress in GPa; ASE wants eV/Å³

    prediction = model.predict_graph(graph, task="efs")
    scale = n_atoms if model.is_intensive else 1
    stress = np.asarray(prediction["s"], dtype=np.float64) * GPa
    return float(prediction["e"]) * scale, np.asarray(prediction["f"]), stress


def batched_energies_and_gradients(
    model: Any, graphs: Sequence[Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CHGNet's total energies, forces and stresses of many crystal graphs in one forward pass.

    Parameters
    ----------
    model
        A ``chgnet.model.CHGNet`` in eval mode.
    graphs
        ``model.graph_converter(structure)`` of each crystal, on the model's device.

    Returns
    -------
    energies, forces, stresses
        Detached tensors on the model's device: total energies (eV, shape ``[n_graphs]``),
        forces of all atoms in graph order (eV/Å, ``[n_atoms, 3]``) and stresses (eV/Å³,
        ``[n_graphs, 3, 3]``, the sign convention of ASE).
    """
    if not shortcut_allowed(VERIFIED, "CHGNet._compute"):
        return _public_batched(model, graphs)
    import torch
    from chgnet.model.model import BatchedGraph

    with torch.enable_grad():
        batch = BatchedGraph.from_graphs(
            list(graphs),
            bond_basis_expansion=model.bond_basis_expansion,
            angle_basis_expansion=model.angle_basis_expansion,
            compute_stress=True,
        )
        n_atoms = torch.bincount(batch.atom_owners).to(batch.volumes.dtype)
        predicted = model._compute(batch)["e"]  # eV/atom when intensive, without AtomRef
        energies = predicted * n_atoms if model.is_intensive else predicted
        # one backward pass for positions and strains of every graph: the energies of
        # different graphs share no inputs, so the gradient of their sum is each one's own
        gradients = torch.autograd.grad(energies.sum(), [*batch.atom_positions, *batch.strains])
    positions_grads, strain_grads = gradients[: len(graphs)], gradients[len(graphs) :]
    energies = energies.detach()
    if model.composition_model is not None:  # AtomRef: a constant for a given composition
        reference = model.composition_model(list(graphs)).detach()
        energies = energies + (reference * n_atoms if model.is_intensive else reference)
    forces = -torch.cat(positions_grads, dim=0)
    stresses = torch.stack(strain_grads) / batch.volumes.view(-1, 1, 1)
    return energies, forces, stresses.detach()


def _public_batched(
    model: Any, graphs: Sequence[Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same through ``CHGNet.predict_graph`` (two backward passes per batch)."""
    import torch
    from ase.units import GPa  # CHGNet predicts stress in GPa

    predictions = model.predict_graph(list(graphs), task="efs", batch_size=len(graphs))
    predictions = predictions if isinstance(predictions, list) else [predictions]
    device = graphs[0].atomic_number.device
    sizes = [len(graph.atomic_number) for graph in graphs]
    totals = [
        float(p["e"]) * (n if model.is_intensive else 1)
        for p, n in zip(predictions, sizes, strict=True)
    ]
    energies = torch.tensor(totals, device=device)
    forces = torch.cat([torch.as_tensor(np.asarray(p["f"])) for p in predictions]).to(device)
    stresses = torch.stack(
        [torch.as_tensor(np.asarray(p["s"], dtype=np.float32) * GPa) for p in predictions]
    ).to(device)
    return energies, forces, stresses
