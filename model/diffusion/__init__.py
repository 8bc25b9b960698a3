"""The joint forward process of (A, X, L) (paper A.4) and its three components."""

from model.diffusion.atom_types import AbsorbingTypeDiffusion
from model.diffusion.coordinates import WrappedNormalVE
from model.diffusion.joint import CrystalDiffusion, NoisyCrystals
from model.diffusion.lattice import SymmetricLatticeVP, symmetric_noise

__all__ = [
    "AbsorbingTypeDiffusion",
    "CrystalDiffusion",
    "NoisyCrystals",
    "SymmetricLatticeVP",
    "WrappedNormalVE",
    "symmetric_noise",
]
