"""The discovery campaign as one jobflow graph (DESIGN.md, "Campaign flow").

    generate → prerelax (MLFF, sharded) → filter (valid → unique → novel) → hull (prerelax
    level) → select top-K → final stage (engine) → final hull (final level) → score

Every job gets a UUID fixed by the campaign id and its stage, so rebuilding the graph of an
existing campaign gives the same jobs: the runner reuses those already in the store (resume).
Jobs pass typed outputs (:mod:`flows.contracts`); where a job needs only part of an output,
the flow references that field (``hull.output.hull``), which jobflow checks against the
output schema when the graph is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobflow import Flow, Job, Maker

from flows.dft.stage import DFTStageMaker
from flows.generate import Generator, RSSGeneratorMaker
from flows.relax import MLFFRelaxMaker
from flows.resume import resumable, stable_uuid
from flows.scoring import (
    filter_candidates,
    final_hull_stage,
    hull_reference,
    hull_spec,
    hull_stage,
    score_campaign,
    select_top_k,
)


def _named(job: Job, campaign_id: str, stage: str) -> Job:
    job.name = stage
    job.set_uuid(stable_uuid(campaign_id, stage))
    job.update_metadata({"stage": stage})  # also given to the jobs it creates at run time
    return job


@dataclass
class CampaignMaker(Maker):
    """A discovery campaign for one chemical system.

    Attributes
    ----------
    generator
        A :class:`~flows.generate.Generator` (``rss``, ``substitution``, ``file``,
        ``mattergen``); its ``category``, when not ``None``, becomes the generate job's
        FireWorks ``_category``.
    prerelax
        The pre-relaxation MLFF stage (CHGNet by default).
    final
        The final-stage engine: a second, more accurate MLFF (SevenNet ``7net-l3i5``) or a
        :class:`~flows.dft.stage.DFTStageMaker` (GPAW, VASP). Its energies get their own hull
        at their own level of theory.
    n_candidates, top_k
        Candidates to generate; how many go to the final stage (paper: K = 100).
    reference_path
        Novelty reference and hull reference structures (default: the shipped set); when it
        carries DFT energies, the hull MLFF energies go on.
    hull
        Where MLFF energies go: ``known-phases`` (DFT hull of MP-20's near-hull phases, MP2020
        scale) or ``same-level`` (the reference compounds relaxed with each stage's MLFF).
        A DFT final stage always uses a hull at its own level.
    sun_settings
        :class:`~evaluation.metrics.sun.SUNSettings` as a dict: what the verdicts mean.
    """

    name: str = "campaign"
    generator: Generator = field(default_factory=RSSGeneratorMaker)
    prerelax: MLFFRelaxMaker = field(default_factory=lambda: MLFFRelaxMaker(name="prerelax"))
    final: MLFFRelaxMaker | DFTStageMaker = field(
        default_factory=lambda: MLFFRelaxMaker(name="final", model="7net-l3i5")
    )
    n_candidates: int = 64
    top_k: int = 100
    reference_path: str | None = None
    hull: str = "known-phases"
    sun_settings: dict = field(default_factory=dict)

    def _hull_reference(self, chemsys: str, model: str) -> Job:
        """The same-level hull job of ``chemsys``; shared by every campaign on the store."""
        job = hull_reference(chemsys, self.reference_path, model)
        job.name = f"hull reference {chemsys} {model}"
        job.set_uuid(stable_uuid("hull-reference", chemsys, model, self.reference_path or ""))
        return job

    def _mlff_hull_spec(self, chemsys: str, model: str, references: list[Job]) -> dict:
        """The hull an MLFF stage's energies go on; a same-level hull adds its job."""
        if self.hull != "same-level":
            return hull_spec(self.hull, self.reference_path)
        job = self._hull_reference(chemsys, model)
        if all(job.uuid != other.uuid for other in references):  # one job per (system, model)
            references.append(job)
        return hull_spec("same-level", self.reference_path, job.output)

    def make(self, chemsys: str, campaign_id: str) -> Flow:
        """The campaign graph; its output is the ``score`` job's documents and summary."""
        generate = _named(self.generator.make(chemsys, self.n_candidates), campaign_id, "generate")
        if category := self.generator.category:  # FireWorks: workers of this category take it
            manager_config = {**generate.config.manager_config, "_category": category}
            generate.update_config({"manager_config": manager_config})
        prerelax = _named(self.prerelax.make(generate.output, campaign_id), campaign_id, "prerelax")
        filtered = _named(
            filter_candidates(
                generate.output, prerelax.output, self.reference_path, self.sun_settings
            ),
            campaign_id,
            "filter",
        )
        references: list[Job] = []
        prerelax_spec = self._mlff_hull_spec(chemsys, self.prerelax.model, references)
        hull = _named(
            hull_stage(prerelax.output, prerelax_spec, chemsys),
            campaign_id,
            "hull",
        )
        selected = _named(
            select_top_k(hull.output.hull, filtered.output.flags, self.top_k),
            campaign_id,
            "select",
        )
        final = _named(
            self.final.make(
                generate.output, campaign_id, previous=prerelax.output, only=selected.output
            ),
            campaign_id,
            "final",
        )
        if isinstance(self.final, DFTStageMaker):
            resumable(final)  # a resumed stage skips the candidates whose DFT finished
            # its per-candidate jobs keep their own FireWorks settings (run_past_failures)
            final.config.pass_manager_config = False
            final_reference = self.final.hull_reference_job(chemsys, self.reference_path)
            references.append(final_reference)
            final_spec = hull_spec("dft-engine", None, final_reference.output)
        else:
            final_spec = self._mlff_hull_spec(chemsys, self.final.model, references)
        final_hull = _named(
            final_hull_stage(final.output, selected.output, final_spec, chemsys),
            campaign_id,
            "final hull",
        )
        score = _named(
            score_campaign(
                generate.output,
                prerelax.output,
                filtered.output,
                hull.output,
                selected.output,
                final.output,
                final_hull.output,
                self.reference_path,
                self.sun_settings,
            ),
            campaign_id,
            "score",
        )
        for reference in references:
            reference.update_metadata({"stage": "hull reference"})
        jobs = [generate, prerelax, filtered, *references, hull, selected, final]
        jobs += [final_hull, score]
        flow = Flow(jobs, output=score.output, name=f"campaign {campaign_id} {chemsys}")
        # FireWorks copies job metadata into each Firework's spec: `campaign status` finds a
        # campaign's Fireworks, and their stage, by these keys.
        flow.update_metadata({"campaign_id": campaign_id})
        return flow
