"""Model configuration: diffusion, network, loss and training settings, read from YAML.

``configs/model/paper.yaml`` holds the paper's sizes (A.8, D.1.1); the smaller files train on a
CPU. Unknown keys are errors, so a typo in a config never silently falls back to a default.
The dataclasses import nothing but the standard library; YAML is read only by
:func:`load_model_config`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A model configuration that cannot be used (unknown key, bad value, unreadable file)."""


@dataclass
class DiffusionConfig:
    """Forward processes and the sampling grid (A.5–A.7, D.1.3)."""

    num_steps: int = 1000
    # Default predictor steps when sampling; 0 samples on the training grid (num_steps). A
    # continuous-time model can sample on a coarser grid: fewer steps, faster, a little worse.
    sampling_steps: int = 0
    # Default temperature of the type posterior when sampling (1 = the paper's sampler; a
    # measured, switchable departure: see the model card).
    type_temperature: float = 1.0
    coord_sigma_min: float = 0.01
    coord_sigma_max: float = 5.0
    lattice_beta_min: float = 0.1
    lattice_beta_max: float = 20.0
    lattice_limit_variance_per_atom: float = 0.25


@dataclass
class NetworkConfig:
    """GemNet-dT-style score network (A.8).

    ``condition_dims`` adds B44's adapters, one set per conditioning property (its embedding
    length each, in the order of the checkpoint's property list); ``condition_dim > 0`` is the
    same for a single property.

    Departures from the paper's network, each measured and off by default so older checkpoints
    load unchanged (``benchmarks/model_ablation.py``):

    * ``crystal_context``: before every layer, the per-crystal mean of the atom states passes
      through a small MLP and is added to every atom: a channel for the crystal's composition
      whatever the distance (local messages alone leave types to guess while positions are
      still noise);
    * ``neighbor_shells``: the ``max_neighbors`` cap keeps a whole distance shell (ties within
      0.01 Å) instead of splitting it arbitrarily, which broke symmetry;
    * ``smooth_outputs``: per-edge force and lattice outputs are weighted by the radial
      envelope, so an edge crossing the cutoff changes the scores continuously;
    * ``avg_neighbors``: messages are summed and scaled by ``1/sqrt(avg_neighbors)``, the
      typical neighbour count at this cutoff (0: ``max_neighbors``, the old scaling).
    """

    hidden_dim: int = 512
    num_layers: int = 4
    cutoff: float = 7.0
    max_neighbors: int = 50
    num_radial: int = 8
    num_spherical: int = 7
    triplet_dim: int = 64
    max_images: int = 4
    time_dim: int = 64
    condition_dim: int = 0
    condition_dims: list[int] = field(default_factory=list)
    lattice_prior_score: bool = True
    crystal_context: bool = False
    neighbor_shells: bool = False
    smooth_outputs: bool = False
    avg_neighbors: float = 0.0


@dataclass
class LossConfig:
    """Weights of A40 and A13 (D.1.1)."""

    coord: float = 0.1
    cell: float = 1.0
    types: float = 1.0
    cross_entropy: float = 0.01


@dataclass
class TrainingConfig:
    """Optimiser, schedule and bookkeeping (D.1.1)."""

    batch_size: int = 64
    learning_rate: float = 1e-4
    plateau_factor: float = 0.6
    plateau_patience: int = 100
    min_learning_rate: float = 1e-6
    gradient_clip: float = 0.5
    max_steps: int = 1_740_000
    validate_every: int = 500
    checkpoint_every: int = 500
    validation_fraction: float = 0.05
    validation_batches: int = 8
    seed: int = 0
    mixed_precision: bool = True


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored verbatim in each checkpoint."""

    name: str = "paper"
    max_atoms: int = 20
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """A config from nested dicts; unknown keys and wrongly typed values raise ConfigError."""
        if not isinstance(raw, dict):
            raise ConfigError(f"a model config must be a mapping, got {type(raw).__name__}")
        sections = {
            "diffusion": DiffusionConfig,
            "network": NetworkConfig,
            "loss": LossConfig,
            "training": TrainingConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                kwargs[key] = _section(sections[key], value, key)
            elif key in ("name", "max_atoms"):
                kwargs[key] = _typed(value, str if key == "name" else int, key)
            else:
                raise ConfigError(f"unknown model config key {key!r}")
        config = cls(**kwargs)
        _validate(config)
        return config


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}")
    return value


def _section(kind: type, raw: Any, name: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{name} must be a mapping")
    known = {f.name: f for f in fields(kind)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown key {name}.{key}; expected one of {sorted(known)}")
        values[key] = _typed(value, type(getattr(kind(), key)), f"{name}.{key}")
    return kind(**values)


def _validate(config: ModelConfig) -> None:
    checks = [
        (config.max_atoms >= 1, "max_atoms must be ≥ 1"),
        (config.diffusion.num_steps >= 1, "diffusion.num_steps must be ≥ 1"),
        (config.diffusion.sampling_steps >= 0, "diffusion.sampling_steps must be ≥ 0"),
        (config.diffusion.type_temperature > 0, "diffusion.type_temperature must be > 0"),
        (
            0 < config.diffusion.coord_sigma_min < config.diffusion.coord_sigma_max,
            "need 0 < diffusion.coord_sigma_min < diffusion.coord_sigma_max",
        ),
        (
            0 < config.diffusion.lattice_beta_min <= config.diffusion.lattice_beta_max,
            "need 0 < diffusion.lattice_beta_min ≤ diffusion.lattice_beta_max",
        ),
        (
            config.diffusion.lattice_limit_variance_per_atom > 0,
            "diffusion.lattice_limit_variance_per_atom must be > 0",
        ),
        (
            config.network.hidden_dim >= 1 and config.network.num_layers >= 1,
            "network.hidden_dim and network.num_layers must be ≥ 1",
        ),
        (config.network.cutoff > 0, "network.cutoff must be > 0"),
        (config.network.max_neighbors >= 1, "network.max_neighbors must be ≥ 1"),
        (config.network.max_images >= 1, "network.max_images must be ≥ 1"),
        (config.network.avg_neighbors >= 0, "network.avg_neighbors must be ≥ 0"),
        (
            all(isinstance(d, int) and d >= 1 for d in config.network.condition_dims),
            "network.condition_dims must be a list of positive integers",
        ),
        (
            not (config.network.condition_dims and config.network.condition_dim),
            "set network.condition_dims or network.condition_dim, not both",
        ),
        (config.training.batch_size >= 1, "training.batch_size must be ≥ 1"),
        (config.training.learning_rate > 0, "training.learning_rate must be > 0"),
        (
            0 <= config.training.validation_fraction < 1,
            "training.validation_fraction must be in [0, 1)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; ``what`` names it in errors ("model config")."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must be a mapping")
    return raw


def load_model_config(path: str | Path) -> ModelConfig:
    """Read a model config YAML file (``configs/model/*.yaml``)."""
    return ModelConfig.from_dict(read_yaml_mapping(path, "model config"))
