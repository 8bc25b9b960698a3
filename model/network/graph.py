"""Periodic neighbour lists and triplets for the score network, in torch.

An edge ``(i ← j, k)`` joins atom ``i`` in the home cell to the image of atom ``j`` displaced by
the integer lattice vector ``k`` (A.8.1): its fractional vector is ``d = x_j - x_i + k`` and its
Cartesian vector ``d̃ = d @ lattice``. Edges within ``cutoff`` are kept, at most
``max_neighbors`` nearest per centre atom (as GemNet does). Images are searched up to
``ceil(cutoff / plane spacing)`` cells along each axis, capped at ``max_images`` so that a
degenerate noisy cell cannot blow the search up; crystals are grouped by their reach so one small
cell does not widen the search for the whole batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from model.crystal import CrystalBatch


@dataclass
class PeriodicGraph:
    """Edges of a batch. Shapes: ``[E]`` for indices and lengths, ``[E, 3]`` for vectors."""

    center: Tensor
    neighbor: Tensor
    frac_vectors: Tensor
    vectors: Tensor
    lengths: Tensor
    crystal: Tensor

    @property
    def num_edges(self) -> int:
        return self.center.shape[0]


def _image_offsets(reach: int, device, dtype) -> Tensor:
    steps = range(-reach, reach + 1)
    return torch.tensor(list(itertools.product(steps, steps, steps)), device=device, dtype=dtype)


def _pairs(num_atoms: Tensor, first_atom: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """All ordered atom pairs within each crystal: (centre, neighbour, crystal) ``[P]``."""
    squares = num_atoms**2
    crystal = torch.repeat_interleave(
        torch.arange(num_atoms.shape[0], device=num_atoms.device), squares
    )
    start = torch.cumsum(squares, 0) - squares
    local = torch.arange(int(squares.sum()), device=num_atoms.device) - start[crystal]
    n = num_atoms[crystal]
    return first_atom[crystal] + local // n, first_atom[crystal] + local % n, crystal


#: Edges this close (Å) to the last one the neighbour cap admits belong to its shell.
SHELL_TOLERANCE = 0.01


def _nearest(center: Tensor, lengths: Tensor, max_neighbors: int, shells: bool = False) -> Tensor:
    """Boolean mask keeping the ``max_neighbors`` shortest edges of every centre atom.

    With ``shells`` the cap never splits a distance shell: every edge within
    :data:`SHELL_TOLERANCE` of the ``max_neighbors``-th shortest is kept too (ties are otherwise
    broken by sort order, which keeps, say, 2 of an ideal cubic cell's 6 equivalent images).
    """
    order = torch.argsort(lengths)
    order = order[torch.argsort(center[order], stable=True)]
    sorted_center = center[order]
    counts = torch.bincount(sorted_center)
    group_start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.shape[0], device=center.device) - group_start[sorted_center]
    admitted = rank < max_neighbors
    if shells:
        last = torch.full_like(counts, -1.0, dtype=lengths.dtype)  # the cap's last length
        at_cap = rank == max_neighbors - 1
        last[sorted_center[at_cap]] = lengths[order[at_cap]]
        bound = last[sorted_center]
        admitted |= (bound >= 0) & (lengths[order] <= bound + SHELL_TOLERANCE)
    keep = torch.zeros_like(lengths, dtype=torch.bool)
    keep[order[admitted]] = True
    return keep


def periodic_radius_graph(
    batch: CrystalBatch,
    cutoff: float,
    max_neighbors: int,
    max_images: int = 4,
    shells: bool = False,
) -> PeriodicGraph:
    """The periodic radius graph of ``batch`` (see the module docstring); ``shells`` keeps
    whole distance shells at the neighbour cap (:func:`_nearest`)."""
    lattice, frac = batch.lattice, batch.frac_coords
    device, dtype = lattice.device, lattice.dtype
    with torch.no_grad():
        reciprocal = torch.linalg.inv(lattice).mT  # rows: reciprocal vectors, |b| = 1 / spacing
        reach = torch.ceil(cutoff * reciprocal.norm(dim=-1)).amax(-1)
        reach = torch.nan_to_num(reach, nan=max_images).clamp(1, max_images).long()
    first_atom = torch.cumsum(batch.num_atoms, 0) - batch.num_atoms
    parts: list[tuple[Tensor, ...]] = []
    for value in torch.unique(reach).tolist():
        crystals = torch.nonzero(reach == value).squeeze(-1)
        center, neighbor, local = _pairs(batch.num_atoms[crystals], first_atom[crystals])
        crystal = crystals[local]
        offsets = _image_offsets(value, device, dtype)  # [M, 3]
        frac_vectors = (frac[neighbor] - frac[center])[:, None, :] + offsets[None]  # [P, M, 3]
        vectors = torch.einsum("pmi,pij->pmj", frac_vectors, lattice[crystal])
        lengths = vectors.norm(dim=-1)
        is_self = (center == neighbor)[:, None] & (offsets.abs().sum(-1) == 0)[None]
        within = (lengths < cutoff) & ~is_self
        pair_index, image_index = torch.nonzero(within, as_tuple=True)
        parts.append(
            (
                center[pair_index],
                neighbor[pair_index],
                frac_vectors[pair_index, image_index],
                vectors[pair_index, image_index],
                lengths[pair_index, image_index],
                crystal[pair_index],
            )
        )
    center, neighbor, frac_vectors, vectors, lengths, crystal = (
        torch.cat([part[i] for part in parts]) for i in range(6)
    )
    keep = _nearest(center, lengths.detach(), max_neighbors, shells)
    return PeriodicGraph(
        center=center[keep],
        neighbor=neighbor[keep],
        frac_vectors=frac_vectors[keep],
        vectors=vectors[keep],
        lengths=lengths[keep],
        crystal=crystal[keep],
    )


@dataclass
class Triplets:
    """Pairs of edges ``(k→j, j→i)`` sharing atom ``j``: ``inner`` is the edge centred on ``j``
    (``j ← k``), ``outer`` the edge centred on ``i`` (``i ← j``); ``cosines`` of the angle at
    ``j`` between ``j→i`` and ``j→k``. Shapes ``[T]``."""

    outer: Tensor
    inner: Tensor
    cosines: Tensor


def triplets(graph: PeriodicGraph) -> Triplets:
    """Every edge pair ``(j ← k, i ← j)`` except the immediate backtrack ``k = i`` (same image)."""
    device = graph.center.device
    if graph.num_edges == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Triplets(outer=empty, inner=empty, cosines=graph.lengths.new_zeros(0))
    order = torch.argsort(graph.center, stable=True)
    size = int(torch.maximum(graph.center.max(), graph.neighbor.max())) + 1
    counts = torch.bincount(graph.center, minlength=size)
    group_start = torch.cumsum(counts, 0) - counts
    per_outer = counts[graph.neighbor]  # edges centred on j, for every outer edge i ← j
    outer = torch.repeat_interleave(torch.arange(graph.num_edges, device=device), per_outer)
    slot = (
        torch.arange(int(per_outer.sum()), device=device)
        - (torch.cumsum(per_outer, 0) - per_outer)[outer]
    )
    inner = order[group_start[graph.neighbor[outer]] + slot]
    backtrack = (graph.neighbor[inner] == graph.center[outer]) & (
        (graph.frac_vectors[inner] + graph.frac_vectors[outer]).abs().sum(-1) < 1e-6
    )
    outer, inner = outer[~backtrack], inner[~backtrack]
    # angle at j between j→i (= -d_outer) and j→k (= d_inner)
    a, b = -graph.vectors[outer], graph.vectors[inner]
    cosines = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-9)
    return Triplets(outer=outer, inner=inner, cosines=cosines.clamp(-1.0, 1.0))
