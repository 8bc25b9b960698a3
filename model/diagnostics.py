"""Diagnostics of a trained score network: does it know which elements go together?

:func:`type_recovery` corrupts crystals by the forward process at a diffusion step (A14: each
atom type masked with probability ``t``) and asks the network for the masked types. Per step,
over the masked atoms:

* ``accuracy``: the argmax prediction is the true element;
* ``in_crystal``: the prediction is one of the crystal's own elements;
* ``nll``: mean ``-log p(true element)``;
* two baselines: ``copy_baseline_accuracy`` copies the crystal's most common *visible* element
  (a network that learned chemistry beats it when most types are visible), ``marginal_nll``
  predicts the data's element frequencies for every atom (ignores the crystal).

Imports torch only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from model.crystal import MASK_CLASS, CrystalBatch, types_to_classes
from model.network.gemnet import ScoreNetwork


def copy_baseline(classes0: Tensor, masked: Tensor, atom_batch: Tensor) -> float:
    """Accuracy of predicting each masked atom as its crystal's most common visible element."""
    hits, total = 0, 0
    for crystal in atom_batch.unique().tolist():
        atoms = atom_batch == crystal
        visible = classes0[atoms & ~masked].tolist()
        guess = Counter(visible).most_common(1)[0][0] if visible else -1
        hidden = classes0[atoms & masked]
        hits += int((hidden == guess).sum())
        total += len(hidden)
    return hits / max(total, 1)


@torch.no_grad()
def type_recovery(
    network: ScoreNetwork,
    batch: CrystalBatch,
    marginal: Tensor,
    steps: Sequence[int] = (100, 300, 500, 700, 900, 1000),
    seed: int = 0,
) -> list[dict[str, float]]:
    """One row per diffusion step (see the module docstring).

    Parameters
    ----------
    batch
        The crystals (e.g. a validation split), unmasked.
    marginal
        ``[K]`` element frequencies of the training data (the ``marginal_nll`` baseline).
    """
    generator = torch.Generator().manual_seed(seed)
    classes0 = types_to_classes(batch.atomic_numbers)
    rows = []
    for step in steps:
        t_steps = torch.full((batch.num_crystals,), step)
        noisy = network.diffusion.corrupt(
            batch, t_steps, network.statistics.volume_per_atom, generator
        )
        logits = network(noisy.batch, noisy.t).type_logits.clone()
        logits[:, MASK_CLASS] = -math.inf
        log_p = torch.log_softmax(logits, dim=-1)
        masked = noisy.types_t == MASK_CLASS
        if not bool(masked.any()):
            continue
        truth = classes0[masked]
        predicted = log_p[masked].argmax(-1)
        crystal_of = batch.batch[masked]
        present = torch.zeros(batch.num_crystals, MASK_CLASS + 1, dtype=torch.bool)
        present[batch.batch, classes0] = True
        rows.append(
            {
                "step": step,
                "masked_atoms": int(masked.sum()),
                "accuracy": float((predicted == truth).float().mean()),
                "copy_baseline_accuracy": copy_baseline(classes0, masked, batch.batch),
                "in_crystal": float(present[crystal_of, predicted].float().mean()),
                "nll": float(-log_p[masked].gather(1, truth[:, None]).mean()),
                "marginal_nll": float(-marginal[truth].clamp_min(1e-12).log().mean()),
            }
        )
    return rows


def element_marginal(atomic_numbers: Tensor) -> Tensor:
    """``[K]`` relative frequencies of the classes in a data set (``[MASK]`` excluded)."""
    counts = torch.bincount(types_to_classes(atomic_numbers), minlength=MASK_CLASS + 1).float()
    counts[MASK_CLASS] = 0
    return counts / counts.sum()
