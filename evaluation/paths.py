"""Where CrystalForge finds the files it ships and where it caches derived data."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

#: The source checkout (for tests, scripts and benchmarks, which run from one). An installed
#: package finds its own files through :func:`data_dir`, which does not depend on this.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: The package the shipped ``data/`` folder installs as (``pyproject.toml``: package-dir).
DATA_PACKAGE = "crystalforge_data"


def data_dir() -> Path:
    """The folder of shipped data (``data/``), overridable with ``CRYSTALFORGE_DATA``."""
    override = os.environ.get("CRYSTALFORGE_DATA")
    if override:
        return Path(override)
    # Wheels install unzipped, so the resource root is a real folder (a Path): every reader of
    # shipped files (pandas, gzip, torch.load) needs one.
    return Path(str(files(DATA_PACKAGE)))


def reference_dir() -> Path:
    """The folder of the shipped reference set (``data/reference``)."""
    return data_dir() / "reference"


#: The generative-model checkpoint that ships with the project (see its model card).
DEFAULT_CHECKPOINT_NAME = "checkpoints/crystalforge-small-v3.pt"


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
