"""D3PM absorbing ("masked") diffusion of atom types (paper A.5, A10–A17).

Each atom keeps its species with probability ``keep(t)`` and is otherwise in the absorbing
[MASK] class ``m`` (A17). With ``keep(t) = 1 - t`` on the grid ``t_i = i / T``, the step
matrices are A17's with ``β_i = 1 / (T - i + 1)``: everything is masked at ``t = 1`` and nothing
at ``t = 0``. The matrices are never materialised: for the absorbing process

* ``p Q̄_t`` (A14) moves ``1 - keep(t)`` of every non-mask class's mass onto ``m``;
* column ``a_t`` of the step matrix ``Q_t`` is ``β`` on every class and 1 on ``m`` if ``a_t = m``,
  and ``1 - β`` on ``a_t`` alone otherwise.

These give the posterior ``q(a_{t-1} | a_t, a_0)`` (A15), the model's reverse step (A16) and the
loss terms of A12/A13/A43. Tests check them against explicit ``Q`` matrices. Imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.crystal import MASK_CLASS, NUM_CLASSES

_TINY = 1e-20


def _times_cumulative(probs: Tensor, keep: Tensor) -> Tensor:
    """``probs [N, K] @ Q̄`` for the absorbing process with keep probability ``keep [N]``."""
    out = probs * keep[:, None]
    moved = (probs[:, :MASK_CLASS].sum(-1)) * (1 - keep)
    out[:, MASK_CLASS] = probs[:, MASK_CLASS] + moved
    return out


def _step_column(types_t: Tensor, beta: Tensor) -> Tensor:
    """``Q_t[:, a_t]`` per atom, ``[N, K]``: how likely each class steps to the observed ``a_t``."""
    n_atoms = types_t.shape[0]
    column = torch.zeros((n_atoms, NUM_CLASSES), device=types_t.device, dtype=beta.dtype)
    masked = types_t == MASK_CLASS
    column[masked] = beta[masked, None].expand(-1, NUM_CLASSES).clone()
    column[masked, MASK_CLASS] = 1.0
    rows = torch.nonzero(~masked).squeeze(-1)
    column[rows, types_t[rows]] = 1 - beta[rows]
    return column


@dataclass(frozen=True)
class AbsorbingTypeDiffusion:
    """The atom-type forward process, its posterior and the reverse step of A16."""

    def keep(self, t: Tensor) -> Tensor:
        """``keep(t) = 1 - t``: the probability that a type is still unmasked at ``t``."""
        return (1.0 - t).clamp(0.0, 1.0)

    def step_beta(self, t: Tensor, t_prev: Tensor) -> Tensor:
        """``β`` of the step ``t_prev → t`` (A17): ``1 - keep(t) / keep(t_prev)``."""
        return 1.0 - self.keep(t) / self.keep(t_prev).clamp_min(_TINY)

    def sample_marginal(
        self, classes0: Tensor, t: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """``a_t ~ Cat(a_0 Q̄_t)`` (A14): each atom masked with probability ``1 - keep(t)``."""
        draw = torch.rand(classes0.shape, generator=generator, device=classes0.device)
        masked = draw >= self.keep(t).to(draw.dtype)
        return torch.where(masked, torch.full_like(classes0, MASK_CLASS), classes0)

    def posterior_probs(self, types_t: Tensor, probs0: Tensor, t: Tensor, t_prev: Tensor) -> Tensor:
        """``Σ_{a0} q(a_{t-1}, a_t | a_0) p(a_0)``, normalised over ``a_{t-1}`` (A15, A16).

        With a one-hot ``probs0`` this is the true posterior ``q(a_{t-1} | a_t, a_0)``; with the
        model's ``p_θ(a_0 | ...)`` it is ``p_θ(a_{t-1} | a_t)``.
        """
        beta = self.step_beta(t, t_prev).to(probs0.dtype)
        unnormalised = _times_cumulative(probs0, self.keep(t_prev).to(probs0.dtype))
        unnormalised = unnormalised * _step_column(types_t, beta)
        return unnormalised / unnormalised.sum(-1, keepdim=True).clamp_min(_TINY)

    @staticmethod
    def clean_log_probs(type_logits: Tensor, allowed: Tensor | None = None) -> Tensor:
        """``log p_θ(a_0 | ...)`` from logits: [MASK] (and disallowed classes) get zero mass."""
        logits = type_logits.clone()
        logits[:, MASK_CLASS] = float("-inf")
        if allowed is not None:
            logits[:, ~allowed] = float("-inf")
        return torch.log_softmax(logits, dim=-1)

    def loss(
        self,
        type_logits: Tensor,
        types_t: Tensor,
        classes0: Tensor,
        t: Tensor,
        t_prev: Tensor,
        ce_weight: float,
    ) -> Tensor:
        """Per-atom ``L_types`` of A43, ``[N]``.

        For ``t_prev > 0``: ``KL[q(a_{t-1}|a_t,a_0) || p_θ(a_{t-1}|a_t)] - λ_CE log p_θ(a_0|·)``;
        at the first step (``t_prev = 0``) the reconstruction term ``-log p_θ(a_0 | ·)``.
        """
        log_p0 = self.clean_log_probs(type_logits)
        nll = -log_p0.gather(1, classes0[:, None]).squeeze(1)
        onehot = torch.nn.functional.one_hot(classes0, NUM_CLASSES).to(log_p0.dtype)
        q_post = self.posterior_probs(types_t, onehot, t, t_prev)
        p_post = self.posterior_probs(types_t, log_p0.exp(), t, t_prev)
        kl = q_post * (torch.log(q_post.clamp_min(_TINY)) - torch.log(p_post.clamp_min(_TINY)))
        kl = kl.sum(-1)
        first_step = t_prev <= 0
        return torch.where(first_step, nll, kl + ce_weight * nll)

    def reverse_step(
        self,
        type_logits: Tensor,
        types_t: Tensor,
        t: Tensor,
        t_prev: Tensor,
        generator: torch.Generator | None,
        allowed: Tensor | None = None,
        guided_log_probs: Tensor | None = None,
    ) -> Tensor:
        """A draw of ``a_{t-1} ~ p_θ(a_{t-1} | a_t)`` (A16).

        ``guided_log_probs`` replaces the model's ``log p_θ(a_0 | ·)`` (classifier-free guidance
        on the logits, B.2.2); ``allowed [K]`` restricts the species that may appear.
        """
        log_p0 = guided_log_probs if guided_log_probs is not None else type_logits
        log_p0 = self.clean_log_probs(log_p0, allowed)
        probs = self.posterior_probs(types_t, log_p0.exp(), t, t_prev)
        # An unmasked atom keeps its type (absorbing process: the posterior is a point mass on
        # a_t). Its computed posterior is that point mass too, unless the model gives a_t so
        # little mass that it underflows to 0 and the row cannot be sampled.
        unmasked = types_t != MASK_CLASS
        probs[unmasked] = torch.nn.functional.one_hot(types_t[unmasked], NUM_CLASSES).to(
            probs.dtype
        )
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return drawn
