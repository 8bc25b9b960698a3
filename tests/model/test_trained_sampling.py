"""A small model trained for a minute on real perovskites samples valid crystals (D.1.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.io.crystals import read_crystals
from evaluation.paths import PROJECT_ROOT
from model.config import load_model_config
from model.sampler import SamplerSettings, sample
from model.structures import batch_to_structures, structures_to_tensors
from model.train import train

PEROVSKITES = PROJECT_ROOT.parent / "shared" / "data" / "structures" / "perov_5" / "val.csv"


@pytest.fixture(scope="module")
def trained_network(tmp_path_factory):
    path = PEROVSKITES if PEROVSKITES.exists() else None
    if path is None:
        pytest.skip("../shared/data/structures/perov_5/val.csv is not beside the repository")
    records = read_crystals(path, limit=64).records[:64]
    tensors = structures_to_tensors([(r.id, r.structure) for r in records], max_atoms=20).tensors
    config = load_model_config("configs/model/tiny.yaml")
    config.training.validate_every = 500
    config.training.checkpoint_every = 1000
    result = train(
        config, tensors, tmp_path_factory.mktemp("tiny"), max_steps=1000, log=lambda _: None
    )
    from model.checkpoint import load_checkpoint

    return load_checkpoint(result.last_checkpoint).network


def test_samples_of_a_trained_model_are_valid_crystals_of_the_requested_sizes(trained_network):
    sizes = torch.tensor([5] * 12 + [4] * 4)
    result = sample(
        trained_network,
        sizes,
        SamplerSettings(num_steps=100),
        generator=torch.Generator().manual_seed(0),
    )
    assert result.crystals.num_crystals + result.num_dropped == len(sizes)
    assert result.crystals.num_crystals >= len(sizes) // 2
    kept_sizes = sizes[result.sample_index]
    assert torch.equal(result.crystals.num_atoms, kept_sizes)
    for structure in batch_to_structures(result.crystals):
        distances = structure.distance_matrix + np.eye(len(structure)) * 1e3
        assert distances.min() >= 0.5
        assert structure.volume / len(structure) > 1.0
        assert all(1 <= site.specie.Z <= 100 for site in structure)


def test_a_trained_model_learns_the_training_set_species(trained_network):
    allowed = trained_network.statistics.allowed_classes()
    result = sample(
        trained_network,
        torch.tensor([5] * 8),
        SamplerSettings(num_steps=50),
        generator=torch.Generator().manual_seed(1),
    )
    classes = result.crystals.atomic_numbers - 1
    assert bool(allowed[classes].all())
