"""The model on one GPU: mixed-precision training and sampling (run with ``-m gpu``)."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.config import load_model_config
from model.sampler import SamplerSettings, sample
from model.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_tiny_model_trains_with_bf16_autocast_and_samples_on_the_gpu(tmp_path, perovskite_tensors):
    config = load_model_config("configs/model/tiny.yaml")
    config.training.mixed_precision = True
    result = train(
        config, perovskite_tensors, tmp_path, max_steps=50, device="cuda", log=lambda _: None
    )
    assert result.skipped_steps == 0
    network = load_checkpoint(result.last_checkpoint, device="cuda").network
    generator = torch.Generator(device="cuda").manual_seed(0)
    samples = sample(
        network, torch.tensor([5] * 8), SamplerSettings(num_steps=20), generator=generator
    )
    assert samples.crystals.num_crystals + samples.num_dropped == 8
    assert samples.crystals.lattice.device.type == "cuda"
