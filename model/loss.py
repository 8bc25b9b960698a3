"""The training loss of paper A40–A43.

``L = λ_coord L_coord + λ_cell L_cell + λ_types L_types`` where, per crystal,

* ``L_coord = σ_t(n)² Σ_atoms ‖s_X − ∇ log q(x_t|x_0)‖²`` (A41; fractional scores, A23);
* ``L_cell = (1 − ᾱ_t) σ(n)² ‖s_L − ∇ log q(L_t|L_0)‖²`` (A42; the variance of A29);
* ``L_types = Σ_atoms`` [KL of the A16 reverse step + λ_CE · CE] (A43, A13), or the
  reconstruction term at the first step.

Sums run over the atoms of a crystal (as the paper states) and the batch loss is the mean over
crystals. Imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.config import LossConfig
from model.crystal import segment_sum
from model.diffusion.joint import CrystalDiffusion, NoisyCrystals
from model.network.gemnet import ScoreOutput
from model.properties import ConditionBatch


@dataclass
class LossTerms:
    """Batch-mean loss terms (scalars); ``total`` is the weighted sum that is optimised."""

    total: Tensor
    coord: Tensor
    cell: Tensor
    types: Tensor

    def as_floats(self) -> dict[str, float]:
        return {
            name: float(getattr(self, name).detach())
            for name in ("total", "coord", "cell", "types")
        }


def diffusion_loss(
    output: ScoreOutput,
    noisy: NoisyCrystals,
    diffusion: CrystalDiffusion,
    weights: LossConfig,
) -> LossTerms:
    """A40 for one corrupted batch and the network's output on it."""
    batch = noisy.batch
    atom_batch = batch.batch
    size = batch.num_crystals
    coord_error = (output.fractional_coords(batch).float() - noisy.coord_score) ** 2
    coord = segment_sum(noisy.coord_sigma[:, None] ** 2 * coord_error, atom_batch, size).sum(-1)
    cell_error = ((output.lattice.float() - noisy.lattice_score) ** 2).sum((-1, -2))
    cell = noisy.lattice_std**2 * cell_error
    per_atom_types = diffusion.types.loss(
        output.type_logits.float(),
        noisy.types_t,
        noisy.classes0,
        noisy.t[atom_batch],
        noisy.t_prev[atom_batch],
        weights.cross_entropy,
    )
    types = segment_sum(per_atom_types, atom_batch, size)
    coord, cell, types = coord.mean(), cell.mean(), types.mean()
    total = weights.coord * coord + weights.cell * cell + weights.types * types
    return LossTerms(total=total, coord=coord, cell=cell, types=types)


def loss_on_batch(
    network,
    batch,
    weights: LossConfig,
    generator: torch.Generator | None = None,
    condition: ConditionBatch | None = None,
) -> LossTerms:
    """Corrupt ``batch`` at uniformly drawn steps ``1..T`` and score the network on it
    (conditioned on ``condition`` when given: fine-tuning, B.1)."""
    diffusion: CrystalDiffusion = network.diffusion
    step = torch.randint(
        1,
        diffusion.num_steps + 1,
        (batch.num_crystals,),
        generator=generator,
        device=batch.lattice.device,
    )
    noisy = diffusion.corrupt(batch, step, network.statistics.volume_per_atom, generator)
    if condition is None:
        output = network(noisy.batch, noisy.t)
    else:
        output = network(
            noisy.batch, noisy.t, condition=condition.values, condition_mask=condition.present
        )
    return diffusion_loss(output, noisy, diffusion, weights)
