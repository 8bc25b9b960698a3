"""Budgets of the chemical-system benchmark (``configs/benchmark/chemsys-*.yaml``).

A preset says how many structures each method proposes per system and how every campaign of
the benchmark runs (the same protocol for every method: MLFF pre-relaxation, uniqueness, the
top-K by predicted E_hull, the final stage, the same-level hull). The paper's budgets
(D.4.1): 10,240 MatterGen samples, every unique substitution (15k–70k), 2 × 300,000 RSS
structures, K = 100, DFT final stage.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evaluation.paths import PROJECT_ROOT, data_dir

PRESETS_DIR = PROJECT_ROOT / "configs" / "benchmark"
PRESETS = ("tiny", "laptop", "paper")
#: The benchmark's model (under ``data/``): the chemical-system + E_hull fine-tune trained
#: without Table D3's "well explored" systems (D.4.1). It sits in a subfolder so that campaigns
#: and ``generate`` keep picking the regular chemical-system checkpoint.
HELD_OUT_CHECKPOINT = (
    Path("checkpoints") / "benchmarks" / "crystalforge-small-v3-chemsys-heldout.pt"
)


def held_out_checkpoint() -> Path:
    """The shipped chemical-system checkpoint trained without the well-explored systems."""
    return data_dir() / HELD_OUT_CHECKPOINT


class ChemsysPreset(BaseModel):
    """Budgets and campaign settings of one chemical-system benchmark run."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    mattergen_samples: int = Field(ge=1, description="MatterGen samples per system")
    substitutions: int = Field(ge=1, description="at most this many unique substitutions")
    rss_per_round: int = Field(ge=1, description="RSS structures per round")
    rss_rounds: int = Field(2, ge=1, le=2, description="2: the second round tunes MINSEP")
    top_k: int = Field(100, ge=1, description="structures per method to the final stage")
    engine: str = "mlff"
    prerelax_model: str = "chgnet"
    final_model: str = "7net-l3i5"
    fmax: float = Field(0.05, gt=0)
    max_steps: int = Field(300, ge=1)
    final_fmax: float = Field(0.05, gt=0)
    final_max_steps: int = Field(300, ge=1)
    relax_jobs: int = Field(1, ge=1)
    shard_size: int = Field(32, ge=1)
    model_steps: int | None = Field(None, ge=1, description="MatterGen sampling steps T")
    checkpoint: str | None = Field(
        None,
        description="MatterGen checkpoint (default: the shipped chemical-system fine-tune "
        "trained without the well-explored systems, HELD_OUT_CHECKPOINT)",
    )
    seed: int = Field(0, ge=0)
    reference: str | None = None
    dft_settings: dict = Field(default_factory=dict, description="GPAW input-set overrides")
    vasp_hull_entries: str | None = Field(
        None, description="MP2020-compatible DFT entries (JSON) for engine vasp's hull"
    )
    minsep_quantile: float = Field(
        0.25,
        gt=0,
        le=1,
        description="RSS round 2 tunes MINSEP on this lowest share (by predicted E_hull) of "
        "round 1's relaxed structures",
    )

    def budgets(self) -> dict[str, int]:
        """Structures each method proposes per system."""
        return {
            "mattergen": self.mattergen_samples,
            "rss": self.rss_per_round * self.rss_rounds,
            "substitution": self.substitutions,
        }


def load_preset(name_or_path: str) -> ChemsysPreset:
    """A preset by name (``tiny``, ``laptop``, ``paper``) or from a YAML file.

    Raises
    ------
    ValueError
        For an unknown name, a missing file, or settings the preset does not take.
    """
    path = Path(name_or_path)
    if name_or_path in PRESETS:
        path = PRESETS_DIR / f"chemsys-{name_or_path}.yaml"
    elif not path.is_file():
        raise ValueError(
            f"unknown preset {name_or_path!r}: use {', '.join(PRESETS)} or a YAML file"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read preset {path}: {error}") from None
    try:
        return ChemsysPreset.model_validate({"name": path.stem.removeprefix("chemsys-"), **raw})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"preset {path}: {where}: {first['msg']}") from None
