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
    hull_label: str | None = Field(
        None, description="what E_hull compares, e.g. 'mlff:chgnet-0.3.0 vs dft:mp-gga-ggau'"
    )
    hull_coverage: dict[str, Any] | None = Field(
        None, description="known hull phases of the system the hull holds (HullCoverage)"
    )
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

    The verdicts are ``evaluation.metrics.sun``'s (defined there), judged on the last stage the
    candidate reached (``final`` if selected and it succeeded, else ``prerelax``):
    ``e_above_hull`` is that stage's, ``level_of_theory`` its energies' level and
    ``hull_label`` what they were compared with; ``hull_coverage`` how many of the system's
    known hull phases that hull holds. ``novelty`` is ``novel``, ``known`` or ``unverified``
    (a known MP composition whose structure the reference could not confirm); ``novel`` says
    whether it counts as novel for S.U.N. ``verdict`` says in one line why it is, or is not,
    S.U.N.
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
    valid: bool = Field(False, description="valid structure and charge balanced")
    valid_structure: bool = Field(False, description="distances >= 0.5 Å, volume >= 0.1 Å^3")
    valid_composition: bool = Field(False, description="SMACT charge balance")
    unique: bool = False
    duplicate_of: str | None = None
    novelty: Literal["novel", "known", "unverified"] = "novel"
    novel: bool = False
    matched_reference: str | None = None
    known_composition: str | None = Field(None, description="e.g. 'Li2O (mp-1960)'")
    selected: bool = False
    e_above_hull: float | None = None
    level_of_theory: str | None = None
    hull_label: str | None = None
    hull_coverage: str | None = Field(None, description="e.g. '5/6 known hull phases (...)'")
    hull_complete: bool | None = None
    stable: bool = False
    on_hull: bool = False
    sun: bool = False
    flags: list[str] = Field(default_factory=list, description="not_converged, incomplete_hull")
    verdict: str = Field("", description="why it is, or is not, S.U.N., in one line")
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
        description="local (with the host and PID running it), or fireworks with its LaunchPad "
        "and worker categories",
    )
    failure: str | None = Field(None, description="the job that failed and its error, if one did")
