"""The checkpoint that ships in data/checkpoints/: small, documented, and the default sampler."""

from __future__ import annotations

import time

import pytest
import torch

from evaluation.paths import default_checkpoint
from flows.generators.mattergen import generate_structures
from model.checkpoint import load_checkpoint, read_payload

MAX_BYTES = 25 * 1024 * 1024


def test_the_shipped_checkpoint_is_small_weights_only_and_documented():
    path = default_checkpoint()
    assert path.exists(), f"{path} is missing"
    assert path.stat().st_size <= MAX_BYTES
    payload = read_payload(path)
    assert "optimizer" not in payload and "scheduler" not in payload  # released, not resumable
    provenance = payload["provenance"]
    assert provenance["dataset_level_of_theory"] == "mlff:chgnet-0.3.0"
    assert provenance["training_crystals"] > 1000
    card = (path.parent / "MODEL_CARD.md").read_text()
    for fact in ("Training data", "E_hull < 0.1", "## Evaluation", str(provenance["steps"])):
        assert fact in card
    assert (path.parent / f"{path.stem}-loss.png").exists()


def test_the_shipped_model_samples_crystals_of_its_training_elements():
    loaded = load_checkpoint(default_checkpoint())
    assert loaded.config.diffusion.sampling_steps > 0  # fast by default
    seen = loaded.network.statistics.allowed_classes()
    assert int(seen.sum()) > 50  # trained on most of the periodic table
    result = generate_structures(loaded, 4, batch_size=4, seed=0, num_steps=50)
    assert len(result.records) + result.num_dropped == 4
    for record in result.records:
        assert all(bool(seen[site.specie.Z - 1]) for site in record.structure)
        assert record.structure.volume / len(record.structure) > 2.0


def test_the_campaign_generator_defaults_to_the_shipped_checkpoint():
    from flows.generators.mattergen import check_checkpoint

    check_checkpoint(None)  # no exception: the default resolves and reads


@pytest.mark.slow
def test_64_samples_at_the_default_steps_take_under_two_minutes_on_two_cores():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        started = time.perf_counter()
        result = generate_structures(None, 64, batch_size=64, seed=0)
        elapsed = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    assert len(result.records) >= 48
    assert elapsed < 120, f"{elapsed:.0f} s"
