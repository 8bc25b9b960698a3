"""Variance-preserving diffusion of the symmetric lattice (paper A.7, A27–A30).

Every lattice is a symmetric positive-definite matrix (A27), and so is the noise: its upper
triangle (with the diagonal) is standard normal and mirrored, which fixes the rotation (A.7.1).
The forward marginal is A29::

    q(L_t | L_0) = N( sqrt(ᾱ_t) L_0 + (1 - sqrt(ᾱ_t)) μ(n) I,  (1 - ᾱ_t) σ(n)² I )

with ``μ(n) = (n c)^(1/3)`` (``c`` the training set's average volume per atom, so the limit
cubic cell has the data's density) and ``σ(n) = (n ν)^(1/3)`` (A30). ``ᾱ_t`` follows the usual
linear-β VP schedule, ``ᾱ_t = exp(-β_min t - (β_max - β_min) t² / 2)``. In the shifted, scaled
variable ``Y = (L - μ I) / σ(n)`` this is the plain VP process of A7, which is how the ancestral
step A8 is applied. Imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def symmetric_noise(num_crystals: int, generator: torch.Generator | None, device, dtype) -> Tensor:
    """``[B, 3, 3]`` symmetric matrices whose six free entries are iid standard normal."""
    raw = torch.randn((num_crystals, 3, 3), generator=generator, device=device, dtype=dtype)
    upper = torch.triu(raw)
    return upper + torch.triu(raw, diagonal=1).mT


@dataclass(frozen=True)
class SymmetricLatticeVP:
    """The lattice forward process and its reverse-time steps.

    Attributes
    ----------
    beta_min, beta_max
        The linear β(t) schedule of the VP process.
    limit_variance_per_atom
        ``ν`` (Å³): the limit standard deviation is ``(n ν)^(1/3)``. With ``c ≈ 17 Å³`` and
        ``ν = 0.25 Å³`` the prior's off-diagonal spread puts most cell angles within 60°–120°.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    limit_variance_per_atom: float = 0.25

    def alpha_bar(self, t: Tensor) -> Tensor:
        """``ᾱ_t = exp(-∫_0^t β(s) ds)``."""
        return torch.exp(-self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t**2)

    def limit_mean(self, num_atoms: Tensor, volume_per_atom: Tensor) -> Tensor:
        """``μ(n) = (n c)^(1/3)`` per crystal ``[B]``."""
        return (num_atoms.to(volume_per_atom.dtype) * volume_per_atom) ** (1.0 / 3.0)

    def limit_std(self, num_atoms: Tensor, dtype: torch.dtype) -> Tensor:
        """``σ(n) = (n ν)^(1/3)`` per crystal ``[B]``."""
        return (num_atoms.to(dtype) * self.limit_variance_per_atom) ** (1.0 / 3.0)

    def marginal(
        self, lattice0: Tensor, t: Tensor, num_atoms: Tensor, volume_per_atom: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Mean ``[B, 3, 3]`` and standard deviation ``[B]`` of ``q(L_t | L_0)`` (A29)."""
        root_alpha = self.alpha_bar(t).sqrt()
        mu = self.limit_mean(num_atoms, volume_per_atom).to(lattice0.dtype)
        eye = torch.eye(3, device=lattice0.device, dtype=lattice0.dtype)
        mean = root_alpha[:, None, None] * lattice0 + ((1 - root_alpha) * mu)[:, None, None] * eye
        std = (1 - root_alpha**2).sqrt() * self.limit_std(num_atoms, lattice0.dtype)
        return mean, std

    def sample_marginal(
        self,
        lattice0: Tensor,
        t: Tensor,
        num_atoms: Tensor,
        volume_per_atom: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``L_t ~ q(L_t | L_0)`` and its score ``∇_{L_t} log q = -(L_t - mean) / std²``."""
        mean, std = self.marginal(lattice0, t, num_atoms, volume_per_atom)
        noise = symmetric_noise(lattice0.shape[0], generator, lattice0.device, lattice0.dtype)
        lattice_t = mean + std[:, None, None] * noise
        return lattice_t, -noise / std[:, None, None]

    def prior_sample(
        self,
        num_atoms: Tensor,
        volume_per_atom: Tensor,
        generator: torch.Generator | None,
        dtype: torch.dtype,
    ) -> Tensor:
        """``L_T ~ N(μ(n) I, σ(n)² I)`` on symmetric matrices (A30)."""
        device = num_atoms.device
        mu = self.limit_mean(num_atoms, volume_per_atom).to(dtype)
        std = self.limit_std(num_atoms, dtype)
        noise = symmetric_noise(num_atoms.shape[0], generator, device, dtype)
        eye = torch.eye(3, device=device, dtype=dtype)
        return mu[:, None, None] * eye + std[:, None, None] * noise

    def step_beta(self, t: Tensor, t_prev: Tensor) -> Tensor:
        """The discrete ``β`` of the step ``t_prev → t``: ``1 - ᾱ_t / ᾱ_{t_prev}``."""
        return 1.0 - self.alpha_bar(t) / self.alpha_bar(t_prev)

    def predictor_step(
        self,
        lattice_t: Tensor,
        score: Tensor,
        beta: Tensor,
        num_atoms: Tensor,
        volume_per_atom: Tensor,
        noise: Tensor,
    ) -> Tensor:
        """Ancestral VP step (A8) in ``Y = (L - μI)/σ(n)``, mapped back to ``L``."""
        dtype = lattice_t.dtype
        mu = self.limit_mean(num_atoms, volume_per_atom).to(dtype)[:, None, None]
        std = self.limit_std(num_atoms, dtype)[:, None, None]
        eye = torch.eye(3, device=lattice_t.device, dtype=dtype)
        beta = beta[:, None, None]
        scaled = (lattice_t - mu * eye) / std
        scaled_score = std * score  # ∇_Y log q = σ(n) ∇_L log q
        scaled = (scaled + beta * scaled_score) / (1 - beta).sqrt() + beta.sqrt() * noise
        return mu * eye + std * scaled
