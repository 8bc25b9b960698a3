"""One batched crystal state, :class:`CrystalBatch`, and the lattice algebra the model needs.

Conventions (read these before converting an equation of the paper)
-------------------------------------------------------------------
* ``lattice[b]`` holds the three lattice vectors of crystal ``b`` as **rows**, as pymatgen and
  ASE store them. The paper writes lattice vectors as **columns** (A1–A3), so its ``L`` is our
  ``lattice.mT``: the paper's ``X̃ = L X`` (A2) is ``cart = frac @ lattice`` here, and a
  fractional score is ``cartesian_score @ lattice.mT``. Symmetric lattices (A27), the form every
  training lattice and every diffused lattice takes, are the same matrix in both conventions.
* ``frac_coords`` lie in ``[0, 1)``; atom ``i`` belongs to crystal ``batch[i]``; atoms of a
  crystal are contiguous and crystals appear in order (``num_atoms`` gives the segment sizes).
* Atom types are atomic numbers ``Z`` (1–100); the diffusion's class index is ``Z - 1`` and the
  absorbing [MASK] state is class ``MASK_CLASS`` (A17).

Imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

MAX_ATOMIC_NUMBER = 100
MASK_CLASS = MAX_ATOMIC_NUMBER  # classes 0..99 are Z = 1..100, class 100 is [MASK]
NUM_CLASSES = MAX_ATOMIC_NUMBER + 1


@dataclass
class CrystalBatch:
    """A batch of ``B`` crystals with ``N`` atoms in all.

    Attributes
    ----------
    atomic_numbers
        ``LongTensor [N]``: ``Z`` of every atom (0 marks a masked atom during diffusion).
    frac_coords
        ``[N, 3]`` fractional coordinates in ``[0, 1)``.
    lattice
        ``[B, 3, 3]`` lattice vectors as rows (Å).
    num_atoms
        ``LongTensor [B]``: atoms per crystal.
    """

    atomic_numbers: Tensor
    frac_coords: Tensor
    lattice: Tensor
    num_atoms: Tensor

    def __post_init__(self) -> None:
        n_atoms, n_crystals = self.atomic_numbers.shape[0], self.lattice.shape[0]
        if self.frac_coords.shape != (n_atoms, 3):
            raise ValueError(
                f"frac_coords must be [{n_atoms}, 3], got {tuple(self.frac_coords.shape)}"
            )
        if self.lattice.shape != (n_crystals, 3, 3):
            raise ValueError(f"lattice must be [B, 3, 3], got {tuple(self.lattice.shape)}")
        if self.num_atoms.shape != (n_crystals,) or int(self.num_atoms.sum()) != n_atoms:
            raise ValueError("num_atoms must have one entry per crystal and sum to the atom count")

    @property
    def num_crystals(self) -> int:
        return self.lattice.shape[0]

    @property
    def batch(self) -> Tensor:
        """``LongTensor [N]``: the crystal index of every atom."""
        return torch.repeat_interleave(
            torch.arange(self.num_crystals, device=self.lattice.device), self.num_atoms
        )

    @property
    def cart_coords(self) -> Tensor:
        """``[N, 3]`` Cartesian positions (Å): ``frac @ lattice`` per crystal (paper A2)."""
        return torch.einsum("ni,nij->nj", self.frac_coords, self.lattice[self.batch])

    @property
    def volumes(self) -> Tensor:
        """``[B]`` cell volumes ``|det L|`` (Å³)."""
        return torch.linalg.det(self.lattice).abs()

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> CrystalBatch:
        """The same batch on ``device`` (floats cast to ``dtype`` when given)."""
        floats = {"dtype": dtype} if dtype is not None else {}
        return CrystalBatch(
            atomic_numbers=self.atomic_numbers.to(device),
            frac_coords=self.frac_coords.to(device, **floats),
            lattice=self.lattice.to(device, **floats),
            num_atoms=self.num_atoms.to(device),
        )

    def replace(self, **changes: Tensor) -> CrystalBatch:
        """A copy with some fields replaced (shapes are re-checked)."""
        return replace(self, **changes)

    def select(self, keep: Tensor) -> CrystalBatch:
        """The crystals where the boolean ``keep [B]`` is true."""
        atom_keep = keep[self.batch]
        return CrystalBatch(
            atomic_numbers=self.atomic_numbers[atom_keep],
            frac_coords=self.frac_coords[atom_keep],
            lattice=self.lattice[keep],
            num_atoms=self.num_atoms[keep],
        )


def types_to_classes(atomic_numbers: Tensor) -> Tensor:
    """Diffusion classes of atomic numbers: ``Z - 1``, and [MASK] for ``Z = 0``."""
    return torch.where(
        atomic_numbers > 0, atomic_numbers - 1, torch.full_like(atomic_numbers, MASK_CLASS)
    )


def classes_to_types(classes: Tensor) -> Tensor:
    """Atomic numbers of diffusion classes (``0`` for [MASK])."""
    return torch.where(classes == MASK_CLASS, torch.zeros_like(classes), classes + 1)


def concatenate(batches: list[CrystalBatch]) -> CrystalBatch:
    """One batch holding the crystals of ``batches`` in order."""
    return CrystalBatch(
        atomic_numbers=torch.cat([b.atomic_numbers for b in batches]),
        frac_coords=torch.cat([b.frac_coords for b in batches]),
        lattice=torch.cat([b.lattice for b in batches]),
        num_atoms=torch.cat([b.num_atoms for b in batches]),
    )


def symmetric_polar_form(lattice: Tensor) -> Tensor:
    """The symmetric positive-definite form of ``lattice [..., 3, 3]`` (rows), paper A27.

    Polar decomposition ``L = U L̃`` (paper, columns) becomes, with rows, ``lattice = L̃ Uᵀ``: a
    rigid rotation of the Cartesian frame turns ``lattice`` into ``L̃ = W Σ Wᵀ`` where
    ``lattice = W Σ Vᵀ`` is its SVD. Fractional coordinates are unchanged by a rotation. A
    left-handed lattice (det < 0) cannot be rotated into a positive-definite matrix; callers
    invert it first (see :func:`model.structures.to_symmetric_lattice`).
    """
    left, singular, _ = torch.linalg.svd(lattice)
    return left @ torch.diag_embed(singular) @ left.mT


def wrap(frac_coords: Tensor) -> Tensor:
    """Fractional coordinates mapped into ``[0, 1)`` (the torus of A18)."""
    wrapped = torch.remainder(frac_coords, 1.0)
    # remainder can return exactly 1.0 for tiny negative inputs in float32
    return torch.where(wrapped >= 1.0, wrapped - 1.0, wrapped)


def segment_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Sum of ``values [M, ...]`` into ``size`` segments given ``index [M]``."""
    out = values.new_zeros((size, *values.shape[1:]))
    return out.index_add_(0, index, values)
