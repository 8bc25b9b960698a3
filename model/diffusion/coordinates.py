"""Wrapped-normal variance-exploding diffusion of fractional coordinates (paper A.6, A18–A24).

The torus ``[0, 1)^3`` (A18) is diffused with ``q(x_t | x_0) = N_W(x_t; x_0, σ_t(n)² I)`` (A20),
where ``σ_t`` grows geometrically from ``sigma_min`` to ``sigma_max`` and is divided by the cube
root of the crystal's atom count (A22), so Cartesian noise stays comparable between small and
large cells. At ``t = 1`` the wrapped normal is uniform on the torus for any ``n ≤ 100`` with the
default ``sigma_max = 5`` (its first Fourier coefficient is ``exp(-2π²σ²) < 1e-30``).

The isotropic wrapped normal factorises over the three axes, so the truncated lattice sum of
A23–A24 is evaluated per axis with enough images that the dropped terms are below ``exp(-18)``.
Imports torch only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from model.crystal import wrap


def _image_displacements(x_t: Tensor, x0: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """``x_t - x_0 + k`` per axis for the images ``k`` whose Gaussian terms matter,
    ``[N, 3, 2K+1]``, and ``sigma`` shaped ``[N, 1, 1]`` to broadcast against them.

    The nearest image comes first (``round``), then ``K = ceil(6 σ_max) + 1`` images each side,
    so every dropped term is below ``exp(-18)`` of the largest.
    """
    sigma = sigma[:, None, None]
    delta = x_t - x0
    delta = (delta - torch.round(delta))[..., None]
    reach = math.ceil(6.0 * float(sigma.max())) + 1
    images = torch.arange(-reach, reach + 1, device=x_t.device, dtype=x_t.dtype)
    return delta + images, sigma


@dataclass(frozen=True)
class WrappedNormalVE:
    """The coordinate forward process and its reverse-time steps.

    Attributes
    ----------
    sigma_min, sigma_max
        ``σ_t`` at ``t = 0`` and ``t = 1`` before the ``n^(-1/3)`` scaling.
    """

    sigma_min: float = 0.01
    sigma_max: float = 5.0

    def sigma(self, t: Tensor) -> Tensor:
        """``σ_t``: geometric interpolation between ``sigma_min`` and ``sigma_max``."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sigma_n(self, t: Tensor, num_atoms: Tensor) -> Tensor:
        """``σ_t(n) = σ_t / n^(1/3)`` (A22), elementwise over matching ``t`` and ``n``."""
        return self.sigma(t) / num_atoms.to(t.dtype) ** (1.0 / 3.0)

    def sample_marginal(
        self, x0: Tensor, sigma: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """A draw of ``x_t ~ N_W(x_0, σ²)`` (A20); ``sigma`` is per atom ``[N]``."""
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return wrap(x0 + sigma[:, None] * noise)

    def score(self, x_t: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
        """``∇_{x_t} log N_W(x_t; x_0, σ²)`` by the truncated sum of A23–A24, ``[N, 3]``.

        The paper's A23 omits the minus sign of the Gaussian's gradient; this is the gradient of
        the log density itself (a test compares it with finite differences).
        """
        shifted, sigma = _image_displacements(x_t, x0, sigma)
        weights = torch.softmax(-(shifted**2) / (2 * sigma**2), dim=-1)  # w_k of A24
        return -(weights * shifted).sum(-1) / sigma[..., 0] ** 2

    def log_density(self, x_t: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
        """``log N_W(x_t; x_0, σ²)`` per atom ``[N]`` (truncated sum; for tests and diagnostics)."""
        shifted, sigma = _image_displacements(x_t, x0, sigma)
        log_terms = -(shifted**2) / (2 * sigma**2)
        log_norm = -0.5 * math.log(2 * math.pi) - torch.log(sigma[..., 0])
        return (torch.logsumexp(log_terms, dim=-1) + log_norm).sum(-1)

    def prior_sample(
        self, num_atoms_total: int, generator: torch.Generator | None, device, dtype
    ) -> Tensor:
        """Uniform coordinates on the torus: the ``t = 1`` limit."""
        return torch.rand((num_atoms_total, 3), generator=generator, device=device, dtype=dtype)

    def predictor_step(
        self, x_t: Tensor, score: Tensor, sigma_t: Tensor, sigma_prev: Tensor, noise: Tensor
    ) -> Tensor:
        """Ancestral VE step (A6) from ``σ_t`` to ``σ_{t-1}`` per atom, wrapped to the torus."""
        variance = (sigma_t**2 - sigma_prev**2).clamp_min(0.0)[:, None]
        return wrap(x_t + variance * score + variance.sqrt() * noise)
