"""CrystalForge's generative model: MatterGen's joint diffusion of atom types, fractional
coordinates and lattice, its GemNet-dT-style score network, training and predictor–corrector
sampling (paper Appendix A, D.1). The core imports torch and numpy only; pymatgen appears only
in :mod:`model.structures`, at the package edge."""

from __future__ import annotations

from pathlib import Path

from model.config import ConfigError, ModelConfig, load_model_config
from model.crystal import CrystalBatch
from model.network.gemnet import ScoreNetwork, ScoreOutput


def build_score_network(config_path: str | Path | ModelConfig) -> ScoreNetwork:
    """A randomly initialised :class:`ScoreNetwork` for a config file in ``configs/model/``."""
    config = config_path if isinstance(config_path, ModelConfig) else load_model_config(config_path)
    return ScoreNetwork(config.network, config.diffusion, config.max_atoms)


__all__ = [
    "ConfigError",
    "CrystalBatch",
    "ModelConfig",
    "ScoreNetwork",
    "ScoreOutput",
    "build_score_network",
    "load_model_config",
]
