"""Where CrystalForge finds the files it ships and where it caches derived data."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the package is installed in editable mode by ``make``).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The folder of shipped data (``data/``), overridable with ``CRYSTALFORGE_DATA``."""
    return Path(os.environ.get("CRYSTALFORGE_DATA", PROJECT_ROOT / "data"))


def reference_dir() -> Path:
    """The folder of the shipped reference set (``data/reference``)."""
    return data_dir() / "reference"


#: The generative-model checkpoint that ships with the project (see its model card).
DEFAULT_CHECKPOINT_NAME = "checkpoints/crystalforge-small-v2.pt"


def default_checkpoint() -> Path:
    """The shipped checkpoint, or ``CRYSTALFORGE_CHECKPOINT`` when that is set."""
    override = os.environ.get("CRYSTALFORGE_CHECKPOINT")
    return Path(override) if override else data_dir() / DEFAULT_CHECKPOINT_NAME


def cache_dir() -> Path:
    """A writable folder for derived data (matcher indices, MLFF reference energies).

    ``CRYSTALFORGE_CACHE`` overrides it; the default is ``~/.cache/crystalforge``.
    """
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crystalforge"
    path = Path(os.environ.get("CRYSTALFORGE_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path
