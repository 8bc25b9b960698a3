"""Reading and writing the model's files safely: atomic writes, and loads that never unpickle
arbitrary objects (``torch.load(weights_only=True)``) with one-line errors for every failure.
Imports torch only."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch


def save_atomically(payload: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load_plain(path: str | Path, kind: str, error: type[Exception]) -> Any:
    """The object in ``path`` if it holds only tensors and plain containers.

    Raises ``error`` with one line naming ``kind`` (e.g. "checkpoint") when the file is
    missing, damaged, or holds any other object; such objects are never constructed.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"no {kind} at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as failure:
        foreign = [line for line in str(failure).splitlines() if "Unsupported global" in line]
        if not foreign:  # the unpickler choked on bytes, not on a foreign object
            raise error(f"{path} is corrupt or truncated (unreadable pickle data)") from None
        name = foreign[0].strip().split(" was not")[0]
        raise error(
            f"{path} contains objects other than tensors and plain containers; refusing to "
            f"unpickle it ({name})"
        ) from None
    except Exception as failure:  # torch raises RuntimeError / EOFError / zip errors on damage
        detail = " ".join(str(failure).split())[:200]
        raise error(f"{path} is corrupt or truncated: {type(failure).__name__}: {detail}") from None
