"""The model's core runs on a GPU box with nothing but torch and numpy (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys

CORE_MODULES = [
    "model.crystal",
    "model.config",
    "model.diffusion",
    "model.network",
    "model.loss",
    "model.guidance",
    "model.sampler",
    "model.data",
    "model.checkpoint",
    "model.train",
]
FORBIDDEN = ["pymatgen", "jobflow", "atomate2", "maggma", "evaluation", "flows", "pipeline", "yaml"]


def test_the_core_imports_only_torch_and_numpy():
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in CORE_MODULES)
        + f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}))\n"
        + "print(','.join(bad))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == ""
