"""The model's edge to pymatgen: structures in, tensors and structures out.

Training crystals are Niggli-reduced and rotated into the symmetric polar form of A27 before
they become tensors; samples come back as pymatgen ``Structure`` objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from model.crystal import MAX_ATOMIC_NUMBER, CrystalBatch, symmetric_polar_form, wrap
from model.data import CrystalTensors


def to_symmetric_lattice(structure: Structure) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Lattice rows ``[3, 3]`` (symmetric, positive definite), fractional coordinates ``[n, 3]``
    in ``[0, 1)`` and atomic numbers of the Niggli-reduced cell of ``structure`` (A27, A.8.2)."""
    reduced = structure.get_reduced_structure("niggli")
    lattice = reduced.lattice.matrix.copy()
    frac = reduced.frac_coords.copy()
    if np.linalg.det(lattice) < 0:  # (-L, -x) is the same crystal with a right-handed basis
        lattice, frac = -lattice, -frac
    symmetric = symmetric_polar_form(torch.from_numpy(lattice)).numpy()
    return 0.5 * (symmetric + symmetric.T), np.mod(frac, 1.0), [site.specie.Z for site in reduced]


@dataclass
class TensorBuild:
    """What :func:`structures_to_tensors` kept, and why it skipped the rest."""

    tensors: CrystalTensors
    skipped: dict[str, list[str]] = field(default_factory=dict)


def structures_to_tensors(
    items: Iterable[tuple[str, Structure]], max_atoms: int, source: str = ""
) -> TensorBuild:
    """Tensors of ``(id, structure)`` pairs; skips disordered, oversized, unsupported ones."""
    numbers, coords, lattices, sizes, ids = [], [], [], [], []
    skipped: dict[str, list[str]] = {}
    for identifier, structure in items:
        reason = None
        if not structure.is_ordered:
            reason = "disordered (partial occupancies)"
        elif len(structure) > max_atoms:
            reason = f"more than {max_atoms} atoms"
        elif any(site.specie.Z > MAX_ATOMIC_NUMBER for site in structure):
            reason = f"element beyond Z = {MAX_ATOMIC_NUMBER}"
        if reason is None:
            try:
                lattice, frac, species = to_symmetric_lattice(structure)
            except Exception as error:  # noqa: BLE001 - a degenerate cell is skipped, not fatal
                reason = f"Niggli reduction failed ({type(error).__name__})"
        if reason is not None:
            skipped.setdefault(reason, []).append(identifier)
            continue
        numbers.append(torch.tensor(species, dtype=torch.long))
        coords.append(wrap(torch.from_numpy(frac).float()))
        lattices.append(torch.from_numpy(lattice).float())
        sizes.append(len(species))
        ids.append(identifier)
    if not ids:
        raise ValueError(
            "no usable crystals: " + "; ".join(f"{k}: {len(v)}" for k, v in skipped.items())
        )
    tensors = CrystalTensors(
        atomic_numbers=torch.cat(numbers),
        frac_coords=torch.cat(coords),
        lattice=torch.stack(lattices),
        num_atoms=torch.tensor(sizes, dtype=torch.long),
        ids=ids,
        source=source,
    )
    return TensorBuild(tensors=tensors, skipped=skipped)


def batch_to_structures(batch: CrystalBatch) -> list[Structure]:
    """One pymatgen ``Structure`` per crystal of ``batch``."""
    batch = batch.to("cpu", torch.float64)
    structures = []
    start = 0
    for index, count in enumerate(batch.num_atoms.tolist()):
        species = batch.atomic_numbers[start : start + count].tolist()
        frac = batch.frac_coords[start : start + count].numpy()
        structures.append(Structure(Lattice(batch.lattice[index].numpy()), species, frac))
        start += count
    return structures


def structures_to_batch(structures: list[Structure]) -> CrystalBatch:
    """A :class:`CrystalBatch` of structures as they are (no reduction, no rotation)."""
    return CrystalBatch(
        atomic_numbers=torch.tensor(
            [site.specie.Z for s in structures for site in s], dtype=torch.long
        ),
        frac_coords=wrap(
            torch.tensor(np.concatenate([s.frac_coords for s in structures]), dtype=torch.float32)
        ),
        lattice=torch.tensor(np.stack([s.lattice.matrix for s in structures]), dtype=torch.float32),
        num_atoms=torch.tensor([len(s) for s in structures], dtype=torch.long),
    )
