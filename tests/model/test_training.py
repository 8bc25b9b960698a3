"""The training loss (A40–A43) and the training loop (D.1.1) on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import TINY, build_network, random_batch

from model.checkpoint import CheckpointError, load_checkpoint, read_payload
from model.config import load_model_config
from model.loss import loss_on_batch
from model.network.gemnet import ScoreNetwork
from model.train import train, validation_loss


def tiny_training_config(**training):
    config = load_model_config(TINY)
    config.training.validation_fraction = 0.0
    config.training.validate_every = 100
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


def test_the_loss_of_a_random_batch_is_finite_and_differentiable():
    network = build_network(TINY, seed=0)
    network.train()
    batch = random_batch(seed=1, num_atoms=(2, 3, 5, 1), masked_fraction=0.0)
    config = load_model_config(TINY)
    terms = loss_on_batch(network, batch, config.loss, torch.Generator().manual_seed(0))
    values = terms.as_floats()
    assert all(math.isfinite(v) for v in values.values()), values
    assert all(values[name] >= 0 for name in ("coord", "cell", "types")), values
    expected = (
        config.loss.coord * values["coord"]
        + config.loss.cell * values["cell"]
        + config.loss.types * values["types"]
    )
    assert values["total"] == pytest.approx(expected, rel=1e-9)
    terms.total.backward()
    gradients = [p.grad for p in network.parameters() if p.grad is not None]
    assert gradients and all(bool(torch.isfinite(g).all()) for g in gradients)
    assert any(float(g.abs().max()) > 0 for g in gradients)


def test_the_loss_is_reproducible_with_a_seeded_generator():
    network = build_network(TINY, seed=0)
    batch = random_batch(seed=1, num_atoms=(2, 3), masked_fraction=0.0)
    weights = load_model_config(TINY).loss
    first = loss_on_batch(network, batch, weights, torch.Generator().manual_seed(7)).as_floats()
    again = loss_on_batch(network, batch, weights, torch.Generator().manual_seed(7)).as_floats()
    assert first == again


def test_a_tiny_model_overfits_eight_perovskites(perovskite_tensors, tmp_path):
    config = tiny_training_config()
    torch.manual_seed(config.training.seed)
    untrained = ScoreNetwork(config.network, config.diffusion, config.max_atoms)
    untrained.statistics.fit(
        perovskite_tensors.atomic_numbers, perovskite_tensors.lattice, perovskite_tensors.num_atoms
    )
    everything = torch.arange(len(perovskite_tensors))
    initial = validation_loss(untrained, perovskite_tensors, everything, config, "cpu")

    result = train(
        config, perovskite_tensors, tmp_path, max_steps=600, device="cpu", log=lambda _: None
    )

    assert result.step == 600 and result.skipped_steps == 0
    assert [record["step"] for record in result.history] == [100, 200, 300, 400, 500, 600]
    first, last = result.history[0]["validation"], result.history[-1]["validation"]
    assert all(math.isfinite(record["validation"]) for record in result.history)
    assert last < 0.95 * first, [round(r["validation"], 3) for r in result.history]
    assert last < 0.75 * initial, (initial, last)
    assert result.best_validation == min(record["validation"] for record in result.history)
    assert result.last_checkpoint.is_file() and result.best_checkpoint is not None
    loaded = load_checkpoint(result.last_checkpoint)
    assert loaded.step == 600
    # the data statistics travel with the weights
    expected_volume = float(
        torch.linalg.det(perovskite_tensors.lattice.double()).abs().sum()
        / perovskite_tensors.num_atoms.sum()
    )
    assert float(loaded.network.statistics.volume_per_atom) == pytest.approx(expected_volume)
    assert loaded.payload["statistics"]["num_atoms_counts"][5] == 8


def test_resuming_from_last_pt_continues_the_step_count(perovskite_tensors, tmp_path):
    config = tiny_training_config()
    first = train(
        config, perovskite_tensors, tmp_path, max_steps=100, device="cpu", log=lambda _: None
    )
    assert first.step == 100 and read_payload(first.last_checkpoint)["step"] == 100
    resumed = train(
        config,
        perovskite_tensors,
        tmp_path,
        resume=first.last_checkpoint,
        max_steps=200,
        device="cpu",
        log=lambda _: None,
    )
    assert resumed.step == 200
    payload = read_payload(tmp_path / "last.pt")
    assert payload["step"] == 200
    assert [record["step"] for record in payload["history"]] == [100, 200]


def test_an_interrupted_and_resumed_run_matches_an_uninterrupted_one(perovskite_tensors, tmp_path):
    config = tiny_training_config(validate_every=5, checkpoint_every=5)
    straight = train(
        config,
        perovskite_tensors,
        tmp_path / "straight",
        max_steps=20,
        device="cpu",
        log=lambda _: None,
    )
    half = train(
        config,
        perovskite_tensors,
        tmp_path / "split",
        max_steps=10,
        device="cpu",
        log=lambda _: None,
    )
    resumed = train(
        config,
        perovskite_tensors,
        tmp_path / "split",
        resume=half.last_checkpoint,
        max_steps=20,
        device="cpu",
        log=lambda _: None,
    )
    a = read_payload(straight.last_checkpoint)
    b = read_payload(resumed.last_checkpoint)
    assert a["step"] == b["step"] == 20
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-6, atol=1e-7, msg=name)
    assert [r["validation"] for r in a["history"]] == pytest.approx(
        [r["validation"] for r in b["history"]], rel=1e-5
    )


def test_resuming_with_a_different_architecture_is_refused(perovskite_tensors, tmp_path):
    config = tiny_training_config()
    first = train(
        config, perovskite_tensors, tmp_path, max_steps=2, device="cpu", log=lambda _: None
    )
    other = tiny_training_config()
    other.network.hidden_dim = 16
    with pytest.raises(CheckpointError, match="different architecture"):
        train(
            other,
            perovskite_tensors,
            tmp_path / "other",
            resume=first.last_checkpoint,
            max_steps=4,
            device="cpu",
            log=lambda _: None,
        )
