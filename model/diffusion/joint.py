"""The joint forward process (A9): types, coordinates and lattice corrupted independently.

Time is continuous in ``[0, 1]`` and discretised on the grid ``t_i = i / T`` (D.1.3); training
draws ``i`` uniformly from ``1..T`` so that the atom-type terms of A43 (which need ``t_{i-1}``)
and the sampler use the same grid. Imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.config import DiffusionConfig
from model.crystal import CrystalBatch, classes_to_types, types_to_classes
from model.diffusion.atom_types import AbsorbingTypeDiffusion
from model.diffusion.coordinates import WrappedNormalVE
from model.diffusion.lattice import SymmetricLatticeVP


@dataclass
class NoisyCrystals:
    """A corrupted batch and everything the loss needs about how it was corrupted.

    Shapes: ``t, t_prev, lattice_std [B]``; ``coord_sigma [N]``; ``coord_score [N, 3]``
    (fractional, A23); ``lattice_score [B, 3, 3]``; ``classes0, types_t [N]`` (diffusion classes).
    """

    batch: CrystalBatch
    t: Tensor
    t_prev: Tensor
    coord_sigma: Tensor
    coord_score: Tensor
    lattice_std: Tensor
    lattice_score: Tensor
    classes0: Tensor
    types_t: Tensor


class CrystalDiffusion:
    """The three forward processes with one configuration and one time grid."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.num_steps = config.num_steps
        self.sampling_steps = config.sampling_steps
        self.type_temperature = config.type_temperature
        self.coords = WrappedNormalVE(config.coord_sigma_min, config.coord_sigma_max)
        self.lattice = SymmetricLatticeVP(
            config.lattice_beta_min,
            config.lattice_beta_max,
            config.lattice_limit_variance_per_atom,
        )
        self.types = AbsorbingTypeDiffusion()

    def time(self, step: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """``t_i = i / T`` for integer steps ``i``."""
        return step.to(dtype) / self.num_steps

    def coord_sigma(self, t: Tensor, num_atoms: Tensor) -> Tensor:
        """``σ_t(n)`` per crystal (A22)."""
        return self.coords.sigma_n(t, num_atoms)

    def lattice_std(self, t: Tensor, num_atoms: Tensor) -> Tensor:
        """``sqrt(1 - ᾱ_t) σ(n)`` per crystal: the std of A29."""
        alpha_bar = self.lattice.alpha_bar(t)
        return (1 - alpha_bar).sqrt() * self.lattice.limit_std(num_atoms, t.dtype)

    def corrupt(
        self,
        batch: CrystalBatch,
        step: Tensor,
        volume_per_atom: Tensor,
        generator: torch.Generator | None = None,
    ) -> NoisyCrystals:
        """Draw ``M_t ~ q(M_t | M_0)`` at integer steps ``step [B]`` (1..T) per crystal."""
        dtype = batch.frac_coords.dtype
        t = self.time(step, dtype)
        t_prev = self.time(step - 1, dtype)
        atom_batch = batch.batch
        sigma_atom = self.coord_sigma(t, batch.num_atoms)[atom_batch]
        frac_t = self.coords.sample_marginal(batch.frac_coords, sigma_atom, generator)
        coord_score = self.coords.score(frac_t, batch.frac_coords, sigma_atom)
        lattice_t, lattice_score = self.lattice.sample_marginal(
            batch.lattice, t, batch.num_atoms, volume_per_atom, generator
        )
        classes0 = types_to_classes(batch.atomic_numbers)
        types_t = self.types.sample_marginal(classes0, t[atom_batch], generator)
        noisy = CrystalBatch(
            atomic_numbers=classes_to_types(types_t),
            frac_coords=frac_t,
            lattice=lattice_t,
            num_atoms=batch.num_atoms,
        )
        return NoisyCrystals(
            batch=noisy,
            t=t,
            t_prev=t_prev,
            coord_sigma=sigma_atom,
            coord_score=coord_score,
            lattice_std=self.lattice_std(t, batch.num_atoms),
            lattice_score=lattice_score,
            classes0=classes0,
            types_t=types_t,
        )
