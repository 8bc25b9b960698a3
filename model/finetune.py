"""Fine-tuning the base model on property labels (paper B.1, D.1.2). Imports torch only.

The base (unconditional) network is rebuilt with one set of B44 adapters per property; its own
weights load unchanged and the zero-initialised mix-ins make the new network score exactly as
the base did. Training then uses the base objective, each crystal conditioned on its labels:

* **label dropout**: each property of each crystal is null with probability ``label_dropout``
  (and always when unlabelled), so one network gives both the conditional and the unconditional
  score that classifier-free guidance needs (B.2);
* **widened scalar labels** (:func:`model.properties.widen`): part of the time a scalar label is
  shown as an interval containing it, which teaches ranges and inequalities.

The checkpoint records its properties (kind, unit, level of theory, normalisation, categories,
atom counts per category) and the base it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import CheckpointError, load_checkpoint, read_payload
from model.config import ConfigError, ModelConfig, read_yaml_mapping
from model.data import CrystalTensors
from model.network.gemnet import ScoreNetwork
from model.properties import (
    ConditionBatch,
    PropertyKind,
    PropertySpec,
    Target,
    embed_conditions,
    widen,
)
from model.train import TrainResult, train


@dataclass
class FinetuneSettings:
    """Fine-tuning hyper-parameters (D.1.2: Adam, lr 6e-5, clipping by value 0.5, the base
    model's plateau schedule, batch 128 on GPUs; the CPU recipe uses a smaller batch).

    ``label_dropout`` (not stated in the paper) is the chance that a label is hidden;
    ``exact_probability``/``one_sided_probability`` shape the widened scalar labels;
    ``freeze_base`` trains the adapters alone.
    """

    learning_rate: float = 6e-5
    batch_size: int = 128
    max_steps: int = 32_000
    validate_every: int = 500
    checkpoint_every: int = 500
    plateau_patience: int = 100
    label_dropout: float = 0.2
    exact_probability: float = 0.5
    one_sided_probability: float = 0.25
    freeze_base: bool = False
    seed: int = 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FinetuneSettings:
        known = {f.name: f for f in fields(cls)}
        unknown = set(raw) - set(known)
        if unknown:
            raise ConfigError(
                f"unknown fine-tuning setting {sorted(unknown)[0]!r}; expected one of "
                + ", ".join(sorted(known))
            )
        values = {}
        for key, value in raw.items():
            default = getattr(cls(), key)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false, got {value!r}")
            if isinstance(default, float) and isinstance(value, int | float):
                value = float(value)
            elif not isinstance(value, type(default)):
                raise ConfigError(f"{key} must be {type(default).__name__}, got {value!r}")
            values[key] = value
        settings = cls(**values)
        for name in ("label_dropout", "exact_probability", "one_sided_probability"):
            if not 0 <= getattr(settings, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1]")
        if settings.one_sided_probability > 0.5:
            raise ConfigError("one_sided_probability must be at most 0.5 (two ends share it)")
        if settings.learning_rate <= 0 or settings.batch_size < 1 or settings.max_steps < 1:
            raise ConfigError("learning_rate, batch_size and max_steps must be positive")
        return settings


def load_finetune_settings(path: str | Path) -> FinetuneSettings:
    """Read ``configs/finetune/*.yaml``."""
    return FinetuneSettings.from_dict(read_yaml_mapping(path, "fine-tuning config"))


@dataclass
class PropertyLabels:
    """One property's spec and its label for every crystal of the data set (``None`` =
    unlabelled); scalar labels are plain numbers."""

    spec: PropertySpec
    values: list[float | frozenset | int | str | None]


class LabelledConditions:
    """The :class:`~model.train.ConditionSource` of fine-tuning: each crystal's labels, with
    label dropout and widened scalar labels (module docstring)."""

    def __init__(self, labels: Sequence[PropertyLabels], settings: FinetuneSettings) -> None:
        self.labels, self.settings = list(labels), settings
        self.specs = [item.spec for item in self.labels]

    def draw(self, indices: torch.Tensor, generator: torch.Generator) -> ConditionBatch:
        targets: dict[str, list[Target | None]] = {}
        for item in self.labels:
            per_crystal: list[Target | None] = []
            for index in indices.tolist():
                value = item.values[index]
                hidden = torch.rand(1, generator=generator).item() < self.settings.label_dropout
                if value is None or hidden:
                    per_crystal.append(None)
                elif item.spec.kind == PropertyKind.scalar:
                    per_crystal.append(
                        widen(
                            float(value),
                            item.spec,
                            generator,
                            self.settings.exact_probability,
                            self.settings.one_sided_probability,
                        )
                    )
                else:
                    per_crystal.append(value)
            targets[item.spec.name] = per_crystal
        return embed_conditions(self.specs, targets, len(indices))


def conditional_config(base: ModelConfig, specs: Sequence[PropertySpec]) -> ModelConfig:
    """The base config with one adapter set per property."""
    network = replace(base.network, condition_dim=0, condition_dims=[spec.dim for spec in specs])
    return replace(base, network=network)


def conditional_network(
    base_network: ScoreNetwork, base_config: ModelConfig, specs: Sequence[PropertySpec]
) -> tuple[ScoreNetwork, ModelConfig]:
    """A network with adapters for ``specs`` and every weight of ``base_network``; it scores
    exactly as the base does until the mix-ins are trained (B44)."""
    if base_network.condition_dims:
        raise CheckpointError(
            "the base checkpoint is already fine-tuned on properties; start from an "
            "unconditional base model"
        )
    config = conditional_config(base_config, specs)
    network = ScoreNetwork(config.network, config.diffusion, config.max_atoms)
    missing, unexpected = network.load_state_dict(base_network.state_dict(), strict=False)
    new = [key for key in missing if not key.startswith(("adapters.", "mixins."))]
    if new or unexpected:
        raise CheckpointError(f"base weights do not fit: missing {new}, unexpected {unexpected}")
    return network, config


def adapter_parameters(network: ScoreNetwork) -> list[torch.nn.Parameter]:
    """The adapters' and mix-ins' parameters (what ``freeze_base`` trains)."""
    return [*network.adapters.parameters(), *network.mixins.parameters()]


def specs_of(payload: dict[str, Any]) -> list[PropertySpec]:
    """The properties a checkpoint payload was fine-tuned on (empty for a base model)."""
    return [PropertySpec.from_dict(raw) for raw in payload.get("properties", [])]


def labelled_subset(
    data: CrystalTensors, labels: Sequence[PropertyLabels]
) -> tuple[CrystalTensors, list[PropertyLabels]]:
    """The crystals with at least one label, and their labels.

    With the base frozen, a crystal shown with every property null is scored by the base
    network alone and gives the adapters no gradient: training on it only costs time. For a
    sparse property (863 bulk moduli among 6,891 crystals) that is most of every batch.
    """
    keep = [i for i in range(len(data)) if any(item.values[i] is not None for item in labels)]
    if len(keep) == len(data):
        return data, list(labels)
    index = torch.tensor(keep, dtype=torch.long)
    subset = [PropertyLabels(item.spec, [item.values[i] for i in keep]) for item in labels]
    return data.subset(index), subset


def finetune(
    base: str | Path,
    data: CrystalTensors,
    labels: Sequence[PropertyLabels],
    out_dir: str | Path,
    settings: FinetuneSettings,
    resume: str | Path | None = None,
    max_steps: int | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Fine-tune the checkpoint ``base`` on ``labels`` (aligned with ``data``), writing
    ``last.pt``/``best.pt`` under ``out_dir`` as :func:`model.train.train` does."""
    for item in labels:
        if len(item.values) != len(data):
            raise ValueError(
                f"{item.spec.name}: {len(item.values)} labels for {len(data)} crystals"
            )
    if settings.freeze_base:
        total = len(data)
        data, labels = labelled_subset(data, labels)
        if len(data) < total:
            log(f"adapters only: training on the {len(data)} of {total} crystals with a label")
    loaded = load_checkpoint(base)
    specs = [item.spec for item in labels]
    network, config = conditional_network(loaded.network, loaded.config, specs)
    training = replace(
        config.training,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        max_steps=settings.max_steps,
        validate_every=settings.validate_every,
        checkpoint_every=settings.checkpoint_every,
        plateau_patience=settings.plateau_patience,
        seed=settings.seed,
    )
    config = replace(config, training=training)
    if resume is not None:
        stored = specs_of(read_payload(resume))  # train() loads the network itself
        if [s.to_dict() for s in stored] != [s.to_dict() for s in specs]:
            raise CheckpointError(
                f"{resume} was fine-tuned on other properties or labels "
                f"({', '.join(s.name for s in stored) or 'none'})"
            )
    payload = {
        "properties": [spec.to_dict() for spec in specs],
        "finetune": {
            "base_checkpoint": str(base),
            "base_step": loaded.step,
            "settings": asdict(settings),
        },
    }
    return train(
        config,
        data,
        out_dir,
        resume=resume,
        max_steps=max_steps,
        device=device,
        log=log,
        network=network,
        conditions=LabelledConditions(labels, settings),
        trainable=adapter_parameters if settings.freeze_base else None,
        payload=payload,
    )


def scalar_statistics(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation (floored, so a constant label still embeds) and span."""
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    std = float(tensor.std()) if len(values) > 1 else 1.0
    return {
        "mean": float(tensor.mean()),
        "std": max(std, 1e-3),
        "low": float(tensor.min()),
        "high": float(tensor.max()),
    }
