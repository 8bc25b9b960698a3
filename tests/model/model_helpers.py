"""Helpers shared by the model tests: configs, random crystal batches and the perovskite data.

Everything here is deterministic (explicit ``torch.Generator`` seeds) and small enough that the
whole ``tests/model`` directory runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from model.config import ModelConfig, load_model_config
from model.crystal import CrystalBatch, symmetric_polar_form

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "model" / "tiny.yaml"
SMALL = REPO / "configs" / "model" / "small.yaml"
PEROVSKITES = Path("/work/shared/data/structures/perov_5/val.csv")


def tiny_config(**network_changes) -> ModelConfig:
    """A fresh copy of ``configs/model/tiny.yaml`` with some ``network`` fields changed."""
    config = load_model_config(TINY)
    for key, value in network_changes.items():
        setattr(config.network, key, value)
    return config


def random_rotation(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A random proper rotation (det = +1)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_batch(
    seed: int = 0,
    num_atoms: tuple[int, ...] = (2, 3, 5),
    dtype: torch.dtype = torch.float64,
    masked_fraction: float = 0.2,
) -> CrystalBatch:
    """Crystals with symmetric lattices from random cells of 4–6 Å, random positions and
    species (some atoms masked, ``Z = 0``)."""
    generator = torch.Generator().manual_seed(seed)
    lattices = []
    for _ in num_atoms:
        cell = torch.diag(4.0 + 2.0 * torch.rand(3, generator=generator, dtype=torch.float64))
        cell = cell + 0.4 * (torch.rand(3, 3, generator=generator, dtype=torch.float64) - 0.5)
        lattices.append(symmetric_polar_form(cell))
    lattice = torch.stack(lattices)
    lattice = 0.5 * (lattice + lattice.mT)
    total = sum(num_atoms)
    numbers = torch.randint(1, 101, (total,), generator=generator)
    masked = torch.rand(total, generator=generator) < masked_fraction
    numbers = torch.where(masked, torch.zeros_like(numbers), numbers)
    return CrystalBatch(
        atomic_numbers=numbers,
        frac_coords=torch.rand((total, 3), generator=generator, dtype=torch.float64),
        lattice=lattice,
        num_atoms=torch.tensor(num_atoms, dtype=torch.long),
    ).to("cpu", dtype)


def random_times(num_crystals: int, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * torch.rand(num_crystals, generator=generator, dtype=dtype)


def build_network(config: ModelConfig | Path = TINY, seed: int = 0, double: bool = True):
    """A randomly initialised score network with a fixed seed (float64 by default)."""
    import model

    torch.manual_seed(seed)
    network = model.build_score_network(config)
    network.eval()
    return network.double() if double else network


def assert_no_neighbor_ties(batch: CrystalBatch, config: ModelConfig, gap: float = 1e-6) -> None:
    """Precondition of the symmetry tests: no centre atom has two candidate edges of (nearly)
    equal length straddling its ``max_neighbors`` cut, so that float rounding under a
    rotation / permutation / translation cannot change which edges the graph keeps."""
    from model.network.graph import periodic_radius_graph

    network = config.network
    graph = periodic_radius_graph(batch, network.cutoff, 10_000, network.max_images)
    for centre in torch.unique(graph.center).tolist():
        lengths = torch.sort(graph.lengths[graph.center == centre]).values
        if lengths.shape[0] > network.max_neighbors:
            k = network.max_neighbors
            assert float(lengths[k] - lengths[k - 1]) > gap, "degenerate test configuration"


def uniform_ks_statistic(values: torch.Tensor) -> float:
    """``sqrt(n) · sup |F_n - F|`` against the uniform distribution on [0, 1)."""
    x = torch.sort(values.flatten().double()).values
    n = x.shape[0]
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum(ranks / n - x, x - (ranks - 1) / n).max()
    return float(d) * math.sqrt(n)
