"""A GPAW DFT run of one structure as a jobflow graph ending in a :class:`DFTResult`.

    relax → static ─┐
          → band gap ├→ summary (runs even when a task failed; records what did not finish)
          → elastic ─┘

Every task after ``relax`` starts from the relaxed structure (from the input one when no
relaxation is asked for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobflow import Flow, Job, Maker, OnMissing, job
from pymatgen.core import Structure

from flows.dft.gpaw import (
    GpawBandGapMaker,
    GpawElasticMaker,
    GpawRelaxMaker,
    GpawStaticMaker,
    align_for_elastic,
    read_task_tags,
)
from flows.dft.gpaw_settings import GpawInputSet
from flows.dft.schema import DFTResult, TaskOutcome, parse_tasks
from flows.dft.task_documents import elastic_result, field_of, structure_of

ENGINE = "gpaw"


def _energy_per_atom(task_doc: Any) -> float | None:
    energy = field_of(task_doc, "output", "energy")
    structure = structure_of(task_doc)
    if energy is None or structure is None:
        return None
    return float(energy) / len(structure)


def _not_finished(task: str) -> TaskOutcome:
    return TaskOutcome(
        status="failed",
        reason=f"{task} did not finish: its GPAW job failed (the error is in the worker's log)",
    )


def _outcome(task: str, document: Any) -> TaskOutcome:
    if document is None:
        return _not_finished(task)
    seconds, attempts = read_task_tags(field_of(document, "tags"))
    return TaskOutcome(status="ok", seconds=seconds, attempts=attempts)


@job
def summarise_gpaw_run(
    structure: Structure,
    tasks: list[str],
    settings: dict[str, Any],
    relax: Any = None,
    static: Any = None,
    band_gap: dict[str, Any] | None = None,
    elastic: Any = None,
) -> dict[str, Any]:
    """The run's :class:`DFTResult` (as a dict); a task whose job failed arrives as ``None``."""
    outcomes: dict[str, TaskOutcome] = {}
    if "relax" in tasks:
        outcomes["relax"] = _outcome("relax", relax)
    if "static" in tasks:
        outcomes["static"] = _outcome("static", static)
    if "band_gap" in tasks:
        outcomes["band_gap"] = (
            TaskOutcome(status="ok", seconds=band_gap["seconds"], attempts=band_gap["attempts"])
            if band_gap
            else _not_finished("band_gap")
        )
    elastic_values = elastic_result(elastic)
    if "elastic" in tasks:
        outcomes["elastic"] = (
            TaskOutcome(status="ok") if elastic_values else _not_finished("elastic")
        )
    final = structure_of(relax) if "relax" in tasks else structure
    # the static energy when there is one, else the relaxation's last energy
    energy = _energy_per_atom(static) if "static" in tasks else _energy_per_atom(relax)
    if energy is None and band_gap and "relax" not in tasks and "static" not in tasks:
        energy = band_gap["energy_per_atom"]
    failed = [name for name, outcome in outcomes.items() if outcome.status == "failed"]
    if energy is None or final is None:
        status, reason = "failed", "; ".join(outcomes[n].reason for n in failed) or "no energy"
    elif failed:
        status, reason = "partial", "; ".join(outcomes[n].reason for n in failed)
    else:
        status, reason = "ok", ""
    level = GpawInputSet(**settings).level_of_theory
    return DFTResult(
        engine=ENGINE,
        level_of_theory=level,
        status=status,
        reason=reason,
        structure=final.as_dict() if final is not None else None,
        energy_per_atom=energy,
        uncorrected_energy_per_atom=energy,
        band_gap=band_gap["band_gap"] if band_gap else None,
        is_gap_direct=band_gap["is_gap_direct"] if band_gap else None,
        elastic=elastic_values,
        tasks=outcomes,
        settings=settings,
    ).model_dump()


@dataclass
class GpawTasksMaker(Maker):
    """Relax, static, band gap and elastic of one structure with GPAW, as asked.

    Attributes
    ----------
    tasks
        Any of ``relax``, ``static``, ``band_gap``, ``elastic`` (run in that order).
    settings
        The input set shared by every task (and by the hull references of its level).
    """

    name: str = "gpaw"
    tasks: tuple[str, ...] = ("relax", "static")
    settings: GpawInputSet = field(default_factory=GpawInputSet)

    @property
    def level_of_theory(self) -> str:
        return self.settings.level_of_theory

    def make(self, structure: Structure) -> Flow:
        """The graph of the requested tasks; its output is the summary's DFTResult dict."""
        tasks = parse_tasks(self.tasks)
        jobs: list[Job | Flow] = []
        outputs: dict[str, Any] = {}
        current: Any = structure
        if "relax" in tasks:
            relax = GpawRelaxMaker(settings=self.settings).make(structure)
            jobs.append(relax)
            outputs["relax"] = relax.output
            current = relax.output.structure
        if "static" in tasks:
            static = GpawStaticMaker(settings=self.settings).make(current)
            jobs.append(static)
            outputs["static"] = static.output
        if "band_gap" in tasks:
            gap = GpawBandGapMaker(settings=self.settings).make(current)
            jobs.append(gap)
            outputs["band_gap"] = gap.output
        if "elastic" in tasks:
            elastic_relax = GpawRelaxMaker(
                name="GPAW elastic relax", settings=self.settings, relax_cell=False
            )
            aligned = align_for_elastic(current)  # Cartesian strains keep the most symmetry
            aligned.name = "GPAW elastic orientation"
            elastic = GpawElasticMaker(elastic_relax_maker=elastic_relax).make(aligned.output)
            jobs += [aligned, elastic]
            outputs["elastic"] = elastic.output
        summary = summarise_gpaw_run(structure, list(tasks), self.settings.model_dump(), **outputs)
        summary.name = "GPAW summary"
        # a failed task must reach the summary as None, not stop it
        summary.config.on_missing_references = OnMissing.NONE
        jobs.append(summary)
        return Flow(jobs, output=summary.output, name=f"{self.name} {structure.formula}")
