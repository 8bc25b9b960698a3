"""Checkpoints: weights, config and data statistics in one file that loads with
``torch.load(weights_only=True)``; nothing in it is ever unpickled as an arbitrary object.

A checkpoint is a dict of plain containers and tensors: ``format``, ``config`` (the
:class:`~model.config.ModelConfig` as a dict), ``state_dict`` (including the data-statistics
buffers), ``step``, ``history``, ``statistics`` (a readable copy of the data statistics) and,
when training, ``optimizer``/``scheduler``/``rng`` states for an exact resume.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from model.config import ConfigError, DiffusionConfig, ModelConfig
from model.crystal import MASK_CLASS
from model.network.gemnet import ScoreNetwork
from model.serialization import load_plain, save_atomically

CHECKPOINT_FORMAT = "crystalforge-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, not ours, or does not fit its config."""


@dataclass
class LoadedCheckpoint:
    path: Path
    network: ScoreNetwork
    config: ModelConfig
    step: int
    payload: dict[str, Any]


def statistics_summary(network: ScoreNetwork) -> dict[str, Any]:
    """The data statistics as plain numbers: volume per atom, atom-count weights, elements."""
    stats = network.statistics
    counts = stats.element_counts[:MASK_CLASS]
    return {
        "volume_per_atom": float(stats.volume_per_atom),
        "num_atoms_counts": [int(c) for c in stats.num_atoms_counts.tolist()],
        "atomic_numbers": [int(z) + 1 for z in torch.nonzero(counts > 0).squeeze(-1).tolist()],
    }


def save_checkpoint(
    path: str | Path,
    network: ScoreNetwork,
    config: ModelConfig,
    step: int,
    history: list[dict[str, float]] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename)."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "step": int(step),
        "history": list(history or []),
        "statistics": statistics_summary(network),
        "torch_version": str(torch.__version__),
    }
    if training_state:
        payload.update(training_state)
    return save_atomically(payload, path)


def read_payload(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict; every failure becomes a one-line :class:`CheckpointError`."""
    payload = load_plain(path, "checkpoint", CheckpointError)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a CrystalForge checkpoint (expected {CHECKPOINT_FORMAT})"
        )
    for key in ("config", "state_dict", "step"):
        if key not in payload:
            raise CheckpointError(f"{path} lacks {key!r}; it is incomplete")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the network stored at ``path`` on ``device``."""
    payload = read_payload(path)
    try:
        config = ModelConfig.from_dict(payload["config"])
    except ConfigError as error:
        raise CheckpointError(f"{path} has an unusable config: {error}") from None
    network = ScoreNetwork(config.network, config.diffusion, config.max_atoms)
    try:
        network.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise CheckpointError(
            f"{path}: the weights do not fit the stored config ({detail})"
        ) from None
    network.to(device).eval()
    return LoadedCheckpoint(
        path=Path(path), network=network, config=config, step=int(payload["step"]), payload=payload
    )


def same_architecture(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two configs build interchangeable networks (training and sampling settings may
    differ)."""

    def forward(config: ModelConfig) -> DiffusionConfig:
        return replace(config.diffusion, sampling_steps=0, type_temperature=1.0)

    return (a.network, forward(a), a.max_atoms) == (b.network, forward(b), b.max_atoms)


#: Fields of the diffusion config that only change how a trained network is sampled.
SAMPLING_FIELDS = ("sampling_steps", "type_temperature")

#: What a released checkpoint keeps: enough to sample and to say where it came from.
RELEASE_KEYS = (
    "format",
    "config",
    "state_dict",
    "step",
    "history",
    "statistics",
    "torch_version",
    "properties",
    "finetune",
)


def export_checkpoint(
    source: str | Path,
    destination: str | Path,
    provenance: dict,
    diffusion: dict[str, int] | None = None,
) -> Path:
    """Write ``source`` without its training state (optimizer, scheduler, RNG), adding
    ``provenance`` (data, hardware, wall time); the result samples but cannot resume.

    ``diffusion`` may set sampling-only fields of the config (``SAMPLING_FIELDS``); anything
    that would change the trained network is refused.
    """
    payload = read_payload(source)
    released = {key: payload[key] for key in RELEASE_KEYS if key in payload}
    unknown = set(diffusion or {}) - set(SAMPLING_FIELDS)
    if unknown:
        raise ValueError(
            f"only {', '.join(SAMPLING_FIELDS)} can change at release, not {sorted(unknown)}"
        )
    if diffusion:
        config = dict(released["config"])
        config["diffusion"] = {**config["diffusion"], **diffusion}
        ModelConfig.from_dict(config)  # still a valid config
        released["config"] = config
    released["provenance"] = dict(provenance)
    return save_atomically(released, destination)
