"""Classifier-free guidance (paper B.2, B45–B46): one score from a conditional and an
unconditional evaluation of the same network.

Continuous scores (coordinates, lattice) mix linearly, ``γ s(M|c) + (1 − γ) s(M)`` (B46); atom
types mix in log-probability space, ``γ log p(a_0|c) + (1 − γ) log p(a_0)`` (B.2.2). ``γ = 1``
is the conditional model, ``γ = 0`` the unconditional one; the paper samples with ``γ = 2``.
Imports torch only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.crystal import CrystalBatch
from model.network.gemnet import ScoreNetwork, ScoreOutput


def combine(conditional: ScoreOutput, unconditional: ScoreOutput, gamma: float) -> ScoreOutput:
    """The guided score of B46 / B.2.2 (``type_logits`` become guided log-probabilities)."""
    log_cond = torch.log_softmax(conditional.type_logits, dim=-1)
    log_uncond = torch.log_softmax(unconditional.type_logits, dim=-1)
    return ScoreOutput(
        coords=gamma * conditional.coords + (1 - gamma) * unconditional.coords,
        lattice=gamma * conditional.lattice + (1 - gamma) * unconditional.lattice,
        type_logits=gamma * log_cond + (1 - gamma) * log_uncond,
    )


def guided_score(
    network: ScoreNetwork,
    batch: CrystalBatch,
    t: Tensor,
    condition: Tensor | None = None,
    gamma: float = 2.0,
    condition_mask: Tensor | None = None,
) -> ScoreOutput:
    """The network's score at ``t``; guided by ``condition [B, d]`` with scale ``γ`` when given.

    ``condition_mask`` (``[B]`` or ``[B, P]``) marks the properties given; the unconditional
    score has every property null.
    """
    if condition is None:
        return network(batch, t)
    unconditional = network(batch, t)
    if gamma == 0:
        return unconditional
    conditional = network(batch, t, condition=condition, condition_mask=condition_mask)
    return combine(conditional, unconditional, gamma)
