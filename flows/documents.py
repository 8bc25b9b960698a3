"""The documents a campaign produces: one per candidate, one per campaign.

These are the store's schema (``pipeline.store`` indexes ``campaign_id``, the flags and
``e_above_hull``). Structures are pymatgen ``Structure.as_dict()`` payloads so any pymatgen
user can rebuild them; energies are eV and eV/atom; every E_hull names its level of theory.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

StageName = Literal["generate", "prerelax", "filter", "hull", "select", "final", "score"]


class StageResult(BaseModel):
    """What one relaxation stage did to a candidate."""

    status: str = Field(description="ok | not_converged | exploded | failed | skipped")
    reason: str = ""
    structure: dict[str, Any] | None = Field(None, description="relaxed Structure.as_dict()")
    energy_per_atom: float | None = None
    level_of_theory: str | None = None
    e_above_hull: float | None = None
    formation_energy_per_atom: float | None = None
    hull_reference: str | None = None
    hull_message: str = ""
    rmsd: float | None = Field(None, description="Eq. D47 RMSD to this stage's input (Å)")
    n_steps: int = 0
    dft_status: str | None = Field(None, description="DFT stages: ok | partial | failed")
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="DFT stages: band_gap (eV), is_gap_direct, bulk/shear_modulus_vrh (GPa)",
    )


class CandidateDoc(BaseModel):
    """One candidate of one campaign, with every stage it went through.

    ``e_above_hull`` and the ``stable``/``sun`` flags are those of the most accurate stage the
    candidate reached (``final`` if selected, else ``prerelax``); ``level_of_theory`` says which.
    """

    candidate_id: str
    campaign_id: str
    generator: str
    provenance: dict[str, Any] = Field(default_factory=dict)
    formula: str
    chemsys: str
    n_atoms: int
    structure: dict[str, Any] = Field(description="the generated structure")
    prerelax: StageResult | None = None
    final: StageResult | None = None
    valid: bool = Field(False, description="structurally valid (+ charge balanced if required)")
    valid_composition: bool = Field(False, description="SMACT charge balance")
    unique: bool = False
    duplicate_of: str | None = None
    novel: bool = False
    matched_reference: str | None = None
    selected: bool = False
    e_above_hull: float | None = None
    level_of_theory: str | None = None
    stable: bool = False
    on_hull: bool = False
    sun: bool = False
    failure: str | None = Field(None, description="why this candidate stopped, if it did")


class CampaignDoc(BaseModel):
    """One campaign: its configuration, progress, timings and summary."""

    campaign_id: str
    chemsys: str
    config: dict[str, Any]
    status: Literal["created", "running", "submitted", "completed", "failed"] = "created"
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage")
    summary: dict[str, Any] = Field(default_factory=dict)
    created_at: str
    updated_at: str
    execution: dict[str, Any] = Field(
        default_factory=lambda: {"manager": "local"},
        description="local, or fireworks with its LaunchPad and worker categories",
    )
