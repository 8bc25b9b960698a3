"""Training the score network (paper D.1.1): Adam, ReduceLROnPlateau on the validation loss,
gradient clipping by value, periodic validation and checkpoints, exact resume, CPU or one GPU
(bf16 autocast on GPU when ``mixed_precision`` is set). The same loop fine-tunes (B.1, D.1.2):
given a conditional network and a :class:`ConditionSource`, each batch is scored under the
conditions the source draws for it. Imports torch only."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    same_architecture,
    save_checkpoint,
)
from model.config import ModelConfig
from model.data import CrystalTensors
from model.loss import loss_on_batch
from model.network.gemnet import ScoreNetwork
from model.properties import ConditionBatch

VALIDATION_SEED = 12345  # fixed noise for validation, so successive losses are comparable


@dataclass
class TrainResult:
    """Where the checkpoints went and how training ended."""

    last_checkpoint: Path
    best_checkpoint: Path | None
    step: int
    best_validation: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0
    wall_seconds: float = 0.0


class ConditionSource(Protocol):
    """What fine-tuning conditions each batch on (see :mod:`model.finetune`)."""

    def draw(self, indices: torch.Tensor, generator: torch.Generator) -> ConditionBatch:
        """Conditions of the crystals at ``indices`` of the data set (label dropout included)."""
        ...


def pick_device(requested: str | None = None) -> torch.device:
    """``requested``, else the GPU when there is one, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _epoch_batches(indices: torch.Tensor, batch_size: int, generator: torch.Generator):
    while True:
        order = indices[torch.randperm(indices.shape[0], generator=generator)]
        for start in range(0, order.shape[0] - batch_size + 1, batch_size):  # full batches
            yield order[start : start + batch_size]


@torch.no_grad()
def validation_loss(
    network: ScoreNetwork,
    data: CrystalTensors,
    indices: torch.Tensor,
    config: ModelConfig,
    device,
    conditions: ConditionSource | None = None,
) -> float:
    """Mean loss over the first ``validation_batches`` batches, with fixed noise (and fixed
    condition draws when fine-tuning)."""
    generator = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
    condition_generator = torch.Generator().manual_seed(VALIDATION_SEED)
    size = config.training.batch_size
    losses = []
    was_training = network.training
    network.eval()
    for start in range(0, min(indices.shape[0], size * config.training.validation_batches), size):
        chosen = indices[start : start + size]
        batch = data.batch(chosen).to(device)
        condition = _conditions(conditions, chosen, condition_generator, device)
        losses.append(float(loss_on_batch(network, batch, config.loss, generator, condition).total))
    network.train(was_training)
    finite = [x for x in losses if math.isfinite(x)]
    return sum(finite) / len(finite) if finite else float("nan")


def train(
    config: ModelConfig,
    data: CrystalTensors,
    out_dir: str | Path,
    resume: str | Path | None = None,
    max_steps: int | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
    *,
    network: ScoreNetwork | None = None,
    conditions: ConditionSource | None = None,
    trainable: Callable[[ScoreNetwork], list[torch.nn.Parameter]] | None = None,
    payload: dict[str, Any] | None = None,
) -> TrainResult:
    """Train (or resume training) and write ``last.pt`` and ``best.pt`` under ``out_dir``.

    Fine-tuning passes ``network`` (the conditional network, base weights loaded),
    ``conditions`` (what each batch is conditioned on), ``trainable`` (the parameters to
    optimise, e.g. the adapters alone) and ``payload`` (entries stored in every checkpoint,
    e.g. the property list).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = pick_device(device)
    settings = config.training
    max_steps = settings.max_steps if max_steps is None else max_steps
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    noise_generator = torch.Generator(device=target).manual_seed(settings.seed + 1)

    train_idx, val_idx = data.split(settings.validation_fraction)
    if train_idx.numel() == 0:
        raise ValueError("the training split is empty; lower training.validation_fraction")
    fresh = network is None
    network = network or ScoreNetwork(config.network, config.diffusion, config.max_atoms)
    step, history, best = 0, [], None
    stored = None
    if resume is not None:
        loaded = load_checkpoint(resume)
        if not same_architecture(loaded.config, config):
            raise CheckpointError(
                f"{resume} was trained with a different architecture than this config"
            )
        network = loaded.network
        stored = loaded.payload
        step, history = loaded.step, list(stored.get("history", []))
        best = stored.get("best_validation")
    elif fresh:
        network.statistics.fit(data.atomic_numbers, data.lattice, data.num_atoms)
    network.to(target).train()
    parameters = trainable(network) if trainable else list(network.parameters())
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        factor=settings.plateau_factor,
        patience=settings.plateau_patience,
        min_lr=settings.min_learning_rate,
    )
    condition_generator = torch.Generator().manual_seed(settings.seed + 2)
    if stored is not None and "optimizer" in stored:
        optimizer.load_state_dict(stored["optimizer"])
        scheduler.load_state_dict(stored["scheduler"])
        generator.set_state(stored["rng"]["batches"])
        if "noise" in stored["rng"] and target.type == "cpu":
            noise_generator.set_state(stored["rng"]["noise"])
        if "conditions" in stored["rng"]:
            condition_generator.set_state(stored["rng"]["conditions"])
    use_amp = settings.mixed_precision and target.type == "cuda"
    batches = _epoch_batches(train_idx, min(settings.batch_size, train_idx.shape[0]), generator)
    monitor = val_idx if val_idx.numel() else train_idx
    best_path = out_dir / "best.pt"
    last_path = out_dir / "last.pt"
    skipped, started, running = 0, time.perf_counter(), []
    saved_step = None

    def state() -> dict:
        return {
            **(payload or {}),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "batches": generator.get_state(),
                "noise": noise_generator.get_state().cpu(),
                "conditions": condition_generator.get_state(),
            },
            "best_validation": best,
        }

    while step < max_steps:
        chosen = next(batches)
        batch = data.batch(chosen).to(target)
        condition = _conditions(conditions, chosen, condition_generator, target)
        with torch.autocast(device_type=target.type, dtype=torch.bfloat16, enabled=use_amp):
            terms = loss_on_batch(network, batch, config.loss, noise_generator, condition)
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(terms.total):
            skipped += 1  # a non-finite loss never reaches the weights
            step += 1
            continue
        terms.total.backward()
        torch.nn.utils.clip_grad_value_(parameters, settings.gradient_clip)
        optimizer.step()
        step += 1
        running.append(terms.as_floats())
        if step % settings.validate_every == 0 or step == max_steps:
            val = validation_loss(network, data, monitor, config, target, conditions)
            scheduler.step(val if math.isfinite(val) else float("inf"))
            mean = (
                {k: sum(r[k] for r in running) / len(running) for k in running[0]}
                if running
                else {}
            )
            record = {
                "step": step,
                "validation": val,
                "learning_rate": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - started,
                **{f"train_{k}": v for k, v in mean.items()},
            }
            history.append(record)
            running = []
            log(
                f"step {step}: train {mean.get('total', float('nan')):.4f} validation {val:.4f} "
                f"lr {record['learning_rate']:.2e}"
            )
            if math.isfinite(val) and (best is None or val < best):
                best = val
                save_checkpoint(best_path, network, config, step, history, state())
        if step % settings.checkpoint_every == 0 or step == max_steps:
            save_checkpoint(last_path, network, config, step, history, state())
            saved_step = step
    if saved_step != step:  # e.g. resumed at or beyond max_steps: nothing ran
        save_checkpoint(last_path, network, config, step, history, state())
    return TrainResult(
        last_checkpoint=last_path,
        best_checkpoint=best_path if best_path.exists() else None,
        step=step,
        best_validation=best,
        history=history,
        skipped_steps=skipped,
        wall_seconds=time.perf_counter() - started,
    )


def _conditions(
    source: ConditionSource | None, indices: torch.Tensor, generator: torch.Generator, device
) -> ConditionBatch | None:
    if source is None:
        return None
    return source.draw(indices, generator).to(device)
