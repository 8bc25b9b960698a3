"""The training-set tensor file: crystals as flat tensors that ``torch.load(weights_only=True)``
reads with nothing but torch, so a GPU box needs no pymatgen to train.

Layout (a dict): ``format``; ``atomic_numbers`` Long[N]; ``frac_coords`` [N, 3];
``lattice`` [B, 3, 3] (rows, symmetric polar form, Niggli-reduced cell); ``num_atoms`` Long[B];
``ids`` list[str]; ``source`` str (what it was built from). Imports torch only (plus stdlib).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from model.crystal import CrystalBatch
from model.serialization import load_plain, save_atomically

TENSOR_FORMAT = "crystalforge-crystals-v1"


class DatasetError(ValueError):
    """A tensor file that is missing, corrupt, or not a CrystalForge crystal file."""


@dataclass
class CrystalTensors:
    """A whole data set of ``B`` crystals (see the module docstring for the fields)."""

    atomic_numbers: Tensor
    frac_coords: Tensor
    lattice: Tensor
    num_atoms: Tensor
    ids: list[str]
    source: str = ""

    def __post_init__(self) -> None:
        self.offsets = torch.cumsum(self.num_atoms, 0) - self.num_atoms
        if len(self.ids) != self.num_atoms.shape[0]:
            raise DatasetError("ids must have one entry per crystal")
        if int(self.num_atoms.sum()) != self.atomic_numbers.shape[0]:
            raise DatasetError("num_atoms does not add up to the number of atoms")

    def __len__(self) -> int:
        return self.num_atoms.shape[0]

    def batch(self, indices: Tensor) -> CrystalBatch:
        """The crystals at ``indices`` as one :class:`CrystalBatch`."""
        counts = self.num_atoms[indices]
        starts = self.offsets[indices]
        local = torch.arange(int(counts.sum())) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        atoms = torch.repeat_interleave(starts, counts) + local
        return CrystalBatch(
            atomic_numbers=self.atomic_numbers[atoms],
            frac_coords=self.frac_coords[atoms],
            lattice=self.lattice[indices],
            num_atoms=counts,
        )

    def subset(self, indices: Tensor) -> CrystalTensors:
        """The crystals at ``indices`` (in that order) as a data set of their own."""
        batch = self.batch(indices)
        return CrystalTensors(
            atomic_numbers=batch.atomic_numbers,
            frac_coords=batch.frac_coords,
            lattice=batch.lattice,
            num_atoms=batch.num_atoms,
            ids=[self.ids[i] for i in indices.tolist()],
            source=self.source,
        )

    def without_systems(
        self, systems: Collection[frozenset[int]]
    ) -> tuple[CrystalTensors, list[str]]:
        """The data set less every crystal whose set of atomic numbers is one of ``systems``
        (a held-out chemical system), and the ids removed."""
        held_out = set(systems)
        keep, removed = [], []
        for index, (start, count) in enumerate(
            zip(self.offsets.tolist(), self.num_atoms.tolist(), strict=True)
        ):
            elements = frozenset(self.atomic_numbers[start : start + count].tolist())
            (removed if elements in held_out else keep).append(index)
        if not removed:
            return self, []
        return self.subset(torch.tensor(keep, dtype=torch.long)), [self.ids[i] for i in removed]

    def split(self, validation_fraction: float) -> tuple[Tensor, Tensor]:
        """Deterministic train/validation indices by a hash of each crystal's id."""
        buckets = torch.tensor([zlib.crc32(i.encode()) % 10_000 for i in self.ids])
        is_validation = buckets < int(round(validation_fraction * 10_000))
        return torch.nonzero(~is_validation).squeeze(-1), torch.nonzero(is_validation).squeeze(-1)

    def save(self, path: str | Path) -> None:
        """Write atomically (a crash never leaves a half-written file)."""
        payload = {
            "format": TENSOR_FORMAT,
            "atomic_numbers": self.atomic_numbers,
            "frac_coords": self.frac_coords,
            "lattice": self.lattice,
            "num_atoms": self.num_atoms,
            "ids": list(self.ids),
            "source": self.source,
        }
        save_atomically(payload, path)

    @classmethod
    def load(cls, path: str | Path) -> CrystalTensors:
        """Read a tensor file written by :meth:`save`; anything else is a :class:`DatasetError`."""
        payload = load_plain(path, "tensor file", DatasetError)
        if not isinstance(payload, dict) or payload.get("format") != TENSOR_FORMAT:
            raise DatasetError(
                f"{path} is not a CrystalForge crystal tensor file ({TENSOR_FORMAT})"
            )
        try:
            return cls(
                atomic_numbers=payload["atomic_numbers"].long(),
                frac_coords=payload["frac_coords"].float(),
                lattice=payload["lattice"].float(),
                num_atoms=payload["num_atoms"].long(),
                ids=[str(i) for i in payload["ids"]],
                source=str(payload.get("source", "")),
            )
        except KeyError as error:
            raise DatasetError(f"{path} lacks the field {error.args[0]!r}") from None
