"""Budgets of the chemical-system benchmark (``configs/benchmark/chemsys-*.yaml``).

A preset says how many structures each method proposes per system and how every campaign of
the benchmark runs (the same protocol for every method: MLFF pre-relaxation, uniqueness, the
top-K by predicted E_hull, the final stage, the same-level hull). The paper's budgets
(D.4.1): 10,240 MatterGen samples, every unique substitution (15k–70k), 2 × 300,000 RSS
structures, K = 100, DFT final stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


#: Settings every campaign of the benchmark gets from the benchmark itself, not the preset.
SET_BY_THE_BENCHMARK = (
    "generator", "num_candidates", "top_k", "hull", "rss_minsep", "substitution_mode",
    "substitution_max_sites", "input",
)  # fmt: skip


class ChemsysPreset(BaseModel):
    """Budgets of one chemical-system benchmark run, and the campaign settings all its
    campaigns share (``campaign``: :class:`~pipeline.campaign.CampaignConfig` fields)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    mattergen_samples: int = Field(ge=1, description="MatterGen samples per system")
    substitutions: int = Field(ge=1, description="at most this many unique substitutions")
    substitution_max_sites: int | None = Field(
        None,
        ge=1,
        description="substitute only into source structures with at most this many sites "
        "(None: the generator's 100, the paper's prototypes)",
    )
    rss_per_round: int = Field(ge=1, description="RSS structures per round")
    rss_rounds: int = Field(2, ge=1, le=2, description="2: the second round tunes MINSEP")
    top_k: int = Field(100, ge=1, description="structures per method to the final stage")
    minsep_quantile: float = Field(
        0.25,
        gt=0,
        le=1,
        description="RSS round 2 tunes MINSEP on this lowest share (by predicted E_hull) of "
        "round 1's relaxed structures",
    )
    campaign: dict[str, Any] = Field(
        default_factory=dict,
        description="CampaignConfig settings of every campaign (engine, models, relaxation, "
        "seed, checkpoint, ...); the checkpoint defaults to HELD_OUT_CHECKPOINT",
    )

    @field_validator("campaign")
    @classmethod
    def _campaign_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        from pipeline.campaign import CampaignConfig

        fixed = sorted(set(value) & set(SET_BY_THE_BENCHMARK))
        if fixed:
            raise ValueError(f"{', '.join(fixed)}: set by the benchmark, not the preset")
        CampaignConfig(**value, num_candidates=1, top_k=1)  # unknown or bad settings fail here
        return value

    def shared(self) -> Any:
        """The campaign settings every method shares, as a ``CampaignConfig``."""
        from pipeline.campaign import CampaignConfig

        return CampaignConfig(**self.campaign, num_candidates=1, top_k=1)

    def campaign_budget(self, method: str) -> int:
        """Structures one campaign of ``method`` proposes (RSS: one round)."""
        return {
            "mattergen": self.mattergen_samples,
            "rss": self.rss_per_round,
            "substitution": self.substitutions,
        }[method]

    def rounds(self, method: str) -> int:
        """Campaigns of ``method`` per system (RSS: its rounds)."""
        return self.rss_rounds if method == "rss" else 1

    def budgets(self) -> dict[str, int]:
        """Structures each method proposes per system."""
        methods = ("mattergen", "rss", "substitution")
        return {m: self.campaign_budget(m) * self.rounds(m) for m in methods}


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
        message = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"preset {path}: {where}: {message}") from None
