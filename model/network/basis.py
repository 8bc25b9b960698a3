"""Basis functions of the GemNet family: radial Bessel functions with a smooth polynomial
envelope, Legendre angular functions, and sinusoidal time features. Imports torch only."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PolynomialEnvelope(nn.Module):
    """``u(d) = 1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) - p(p+1)/2 d^(p+2)`` on ``d = r / cutoff``:
    smooth to second order at the cutoff, so edges enter and leave the graph continuously."""

    def __init__(self, exponent: int = 5) -> None:
        super().__init__()
        p = exponent
        self.p = p
        self.a, self.b, self.c = -(p + 1) * (p + 2) / 2, p * (p + 2), -p * (p + 1) / 2

    def forward(self, scaled: Tensor) -> Tensor:
        p = self.p
        value = 1 + self.a * scaled**p + self.b * scaled ** (p + 1) + self.c * scaled ** (p + 2)
        return torch.where(scaled < 1, value, torch.zeros_like(value))


class RadialBessel(nn.Module):
    """``sqrt(2/c) sin(nπ r/c) / r · u(r/c)`` for ``n = 1..num_radial`` (GemNet's radial basis)."""

    def __init__(self, num_radial: int, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("frequencies", math.pi * torch.arange(1, num_radial + 1).float())
        self.envelope = PolynomialEnvelope()

    def forward(self, lengths: Tensor) -> Tensor:
        scaled = (lengths / self.cutoff).clamp_min(1e-6)[:, None]
        norm = math.sqrt(2 / self.cutoff)
        frequencies = self.frequencies.to(lengths.dtype)
        return (
            norm * torch.sin(frequencies * scaled) / (scaled * self.cutoff) * self.envelope(scaled)
        )


def legendre(cosines: Tensor, num_orders: int) -> Tensor:
    """``P_0..P_{L-1}`` of ``cosines [T]`` by Bonnet's recursion, ``[T, L]`` (the ``m = 0``
    spherical harmonics up to normalisation)."""
    values = [torch.ones_like(cosines), cosines]
    for order in range(1, num_orders - 1):
        values.append(((2 * order + 1) * cosines * values[-1] - order * values[-2]) / (order + 1))
    return torch.stack(values[:num_orders], dim=-1)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer-style features of diffusion time ``t [B]`` in ``[0, 1]``, ``[B, dim]``."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / half
    )
    angles = 1000.0 * t[:, None] * frequencies[None]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding
