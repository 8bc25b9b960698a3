"""``crystalforge evaluate``: S.U.N. evaluation of a set of crystals, as the paper defines it.

The stages, in order:

1. optionally, MLFF relaxation (CHGNet by default) -- RMSD to the relaxed structure (Eq. D47)
   and MLFF energies; failures are recorded for that structure only;
2. energy above hull at one stated comparison (:mod:`evaluation.hull.stability`): MLFF energies on
   the DFT hull of the known phases (default), on a same-level MLFF hull, on a saved hull, or
   on the user's reference entries; energies the samples carry on the user's reference
   entries (MP2020 corrections applied to both, or to neither) or, for MP-style DFT entries,
   on the DFT hull of the known phases. Every E_hull names its comparison and coverage;
3. the S.U.N. verdicts of :mod:`evaluation.metrics.sun` (validity, uniqueness, novelty, stability),
   the same code and settings as a campaign's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pymatgen.core import Structure

from evaluation.hull.core import HullResult
from evaluation.hull.stability import HullChoice, ReferenceEntries
from evaluation.matching.index import ReferenceIndex
from evaluation.metrics.structure import rmsd
from evaluation.metrics.sun import Judged, MatcherTolerances, SUNSettings, judge
from evaluation.metrics.sun import summarize as count_verdicts
from evaluation.records import CrystalInputError, CrystalRecord
from evaluation.report.tables import (
    StructureEvaluation,
    summarize,
    write_plots,
    write_structures_csv,
    write_summary,
)

logger = logging.getLogger(__name__)

__all__ = ["EvaluationResult", "EvaluationSettings", "MatcherTolerances", "evaluate"]


class EvaluationSettings(SUNSettings):
    """How to evaluate; loaded from ``configs/evaluation/*.yaml``, overridden by the CLI.

    The S.U.N. fields (``stability_threshold``, ``disorder``, ``matcher``, ...) are those of
    :class:`~evaluation.metrics.sun.SUNSettings`, shared with campaigns.

    Attributes
    ----------
    relax
        ``"none"`` or an MLFF name accepted by :func:`evaluation.relax.calculators.load_calculator`
        (``"chgnet"``, ``"sevennet"``, ``"7net-l3i5"``, ...).
    hull
        Where MLFF energies go: ``known-phases`` (the DFT hull of the MP-20 near-hull phases,
        MP2020 scale) or ``same-level`` (the reference compounds relaxed with the MLFF). A
        ``--reference`` with energies, or ``hull_reference``, takes precedence.
    n_jobs
        Worker processes for the MLFF relaxation and for matching.
    relax_fmax, relax_steps
        Force criterion (eV/Å) and step budget of the MLFF relaxation.
    hull_relax_fmax, hull_relax_steps
        The same for the reference compounds of same-level hulls (default: as the samples).
    hull_reference
        A saved same-level MLFF hull (``hull.json.gz`` of ``crystalforge data build``).
    """

    relax: str = "none"
    hull: HullChoice = "known-phases"
    n_jobs: int = Field(1, ge=1)
    relax_fmax: float = Field(0.05, gt=0)
    relax_steps: int = Field(500, ge=1)
    hull_relax_fmax: float | None = Field(None, gt=0)
    hull_relax_steps: int | None = Field(None, ge=1)
    hull_reference: str | None = None

    @classmethod
    def from_yaml(cls, path: Path) -> EvaluationSettings:
        """Load settings from YAML; unknown keys and bad values are a ``CrystalInputError``."""
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
            return cls.model_validate(raw)
        except FileNotFoundError:
            raise CrystalInputError(f"config file not found: {path}") from None
        except (yaml.YAMLError, ValidationError) as error:
            first = str(error).splitlines()
            raise CrystalInputError(f"invalid config {path}: {' '.join(first[:3])}") from None


@dataclass
class EvaluationResult:
    """Rows, summary and the reference description of one evaluation."""

    rows: list[StructureEvaluation]
    summary: dict[str, Any]

    def write(self, output_dir: Path) -> list[Path]:
        """Write ``summary.json``, ``structures.csv`` and the plots into ``output_dir``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_structures_csv(self.rows, output_dir / "structures.csv")
        plots = write_plots(self.rows, output_dir, self.summary["settings"]["stability_threshold"])
        write_summary(self.summary, output_dir / "summary.json")
        return [output_dir / "summary.json", output_dir / "structures.csv", *plots]


@dataclass
class _Relaxed:
    """One structure after the (optional) relaxation."""

    structure: Structure
    status: str = "not_relaxed"
    message: str = ""
    energy_per_atom: float | None = None
    level_of_theory: str | None = None
    rmsd: float | None = None


def _relax(records: Sequence[CrystalRecord], settings: EvaluationSettings) -> list[_Relaxed]:
    """Relax with the MLFF; a failed relaxation keeps the input structure and its reason."""
    from evaluation.relax.parallel import relax_parallel

    results = relax_parallel(
        [r.structure for r in records],
        settings.relax,
        settings.relax_fmax,
        settings.relax_steps,
        n_jobs=settings.n_jobs,
        desc=f"relax {settings.relax}",
    )
    relaxed = []
    for record, result in zip(records, results, strict=True):
        if result.status in ("ok", "not_converged") and result.structure is not None:
            item = _Relaxed(
                result.structure,
                result.status,
                result.reason or "",
                result.energy_per_atom,
                result.level_of_theory,
            )
            try:
                item.rmsd = rmsd(record.structure, result.structure)
            except ValueError as error:  # an MLFF never changes atoms; guard all the same
                item.message = f"{item.message} rmsd: {error}".strip()
        else:
            item = _Relaxed(record.structure, result.status, result.reason or "")
        relaxed.append(item)
    return relaxed


def _mlff_hulls(
    relaxed: Sequence[_Relaxed],
    reference: Sequence[CrystalRecord],
    entries: ReferenceEntries | None,
    settings: EvaluationSettings,
) -> tuple[list[HullResult | str], str]:
    """E_hull of the MLFF energies, and a description of the hull they went on."""
    from evaluation.hull.core import EntryHullReference, LevelOfTheoryMismatch, UnknownElementError
    from evaluation.hull.screening import UnknownEnergyScale, known_phase_hull
    from evaluation.hull.stability import SameLevelHull

    if settings.hull_reference:
        try:
            hull: Any = SameLevelHull(EntryHullReference.load(settings.hull_reference))
        except (OSError, ValueError, KeyError) as error:
            raise CrystalInputError(
                f"--hull-reference {settings.hull_reference}: {error}"
            ) from None
        described = f"saved hull {settings.hull_reference}"
    elif entries is not None:
        hull, described = entries.dft_hull(), f"--reference entries {entries.name}"
    elif settings.hull == "known-phases":
        hull, described = known_phase_hull(), "DFT hull of the known phases (MP-20, MP2020)"
    else:
        return _same_level(relaxed, reference, settings), "same-level MLFF hull"
    results: list[HullResult | str] = []
    for item in relaxed:
        if item.energy_per_atom is None or not item.level_of_theory:
            results.append("no MLFF energy (relaxation failed)")
            continue
        try:
            results.append(
                hull.e_above_hull(
                    item.structure, item.energy_per_atom, level_of_theory=item.level_of_theory
                )
            )
        except LevelOfTheoryMismatch as error:
            raise CrystalInputError(str(error)) from None
        except UnknownEnergyScale as error:
            raise CrystalInputError(f"--relax {settings.relax}: {error}") from None
        except (UnknownElementError, ValueError) as error:
            results.append(str(error))
    return results, described


def _check_hull_before_work(settings: EvaluationSettings, entries: ReferenceEntries | None) -> None:
    """Refuse, before any relaxation, MLFF energies the chosen hull cannot take."""
    from evaluation.hull.screening import UnknownEnergyScale, model_energy_scale

    if settings.relax == "none" or settings.hull_reference:
        return
    if entries is not None:
        entries.dft_hull()  # raises for entries that are not MP-style DFT
    if entries is not None or settings.hull == "known-phases":
        try:
            model_energy_scale(settings.relax)
        except UnknownEnergyScale as error:
            raise CrystalInputError(f"--relax {settings.relax}: {error}") from None


def _same_level(
    relaxed: Sequence[_Relaxed], reference: Sequence[CrystalRecord], settings: EvaluationSettings
) -> list[HullResult | str]:
    """E_hull against the same MLFF's hull of each chemical system (reference compounds
    relaxed with the same settings as the structures)."""
    from evaluation.hull.mlff_reference import mlff_e_above_hull

    return mlff_e_above_hull(
        [(r.structure, r.energy_per_atom, r.level_of_theory) for r in relaxed],
        reference,
        settings.relax,
        fmax=settings.hull_relax_fmax or settings.relax_fmax,
        max_steps=settings.hull_relax_steps or settings.relax_steps,
        n_jobs=settings.n_jobs,
    )


def _carried_hulls(
    records: Sequence[CrystalRecord], entries: ReferenceEntries | None
) -> tuple[list[HullResult | str | None], str]:
    """E_hull of the energies the samples carry (``None`` where a sample carries none)."""
    from evaluation.hull.stability import place_carried_energy

    hull = entries.same_level_hull() if entries is not None else None
    results: list[HullResult | str | None] = [
        place_carried_energy(record, hull, entries) if record.energy is not None else None
        for record in records
    ]
    if entries is not None:
        return results, f"--reference entries {entries.name} ({entries.level_of_theory})"
    return results, "DFT hull of the known phases (MP-20, MP2020) for MP-style entries"


def _row(
    index: int,
    record: CrystalRecord,
    relaxed: _Relaxed,
    hull: HullResult | str | None,
    verdict: Any,
) -> StructureEvaluation:
    row = StructureEvaluation(
        index=index,
        id=record.id,
        source=record.source,
        formula=record.formula,
        chemsys=record.chemsys,
        n_atoms=len(record.structure),
        valid=verdict.valid,
        valid_structure=verdict.valid_structure,
        valid_composition=verdict.valid_composition,
        unique=verdict.unique,
        duplicate_of=None,
        novel=verdict.novel,
        matched_reference=verdict.matched_reference,
        novelty=verdict.novelty,
        known_composition=verdict.known_composition,
        e_above_hull=verdict.e_above_hull,
        stable=verdict.stable,
        on_hull=verdict.on_hull,
        sun=verdict.sun,
        sun_on_hull=verdict.sun and verdict.on_hull,
        energy_per_atom=relaxed.energy_per_atom,
        rmsd=relaxed.rmsd,
        relax_status=relaxed.status,
        relax_message=relaxed.message,
        level_of_theory=relaxed.level_of_theory,
        flags=";".join(verdict.flags),
        explanation=verdict.explanation,
    )
    if isinstance(hull, HullResult):
        row.formation_energy_per_atom = hull.formation_energy_per_atom
        row.level_of_theory = hull.level_of_theory
        row.hull_reference = hull.reference
        row.hull_label = hull.label
        row.correction = hull.correction
        if hull.coverage is not None:
            row.hull_coverage = hull.coverage.label()
            row.hull_complete = hull.coverage.complete
        if hull.correction_mismatch:
            row.hull_message = (
                f"{hull.correction}-corrected energy against a {hull.reference_correction} "
                "reference (same level of theory, different correction scheme)"
            )
    elif isinstance(hull, str):
        row.hull_message = hull
    return row


def evaluate(
    records: Sequence[CrystalRecord],
    reference: Sequence[CrystalRecord],
    settings: EvaluationSettings | None = None,
    *,
    reference_name: str = "reference",
    user_reference: bool = False,
    reference_index: ReferenceIndex | None = None,
) -> EvaluationResult:
    """Evaluate ``records`` against ``reference`` (see the module docstring for the stages).

    Parameters
    ----------
    records
        The crystals to evaluate, in sampling order (uniqueness keeps the first of a kind).
    reference
        The novelty reference; its compounds build same-level hulls, and its energies, when it
        carries them, are the hull every energy goes on.
    settings
        :class:`EvaluationSettings`; defaults follow the paper.
    reference_name
        How the reference is named in the summary (a path or ``"shipped"``).
    user_reference
        The reference is the user's (complete unless ``settings.reference_complete`` says not),
        not the shipped sample.
    reference_index
        A prebuilt index over ``reference`` (else one is built, cached on disk).

    Raises
    ------
    CrystalInputError
        For a reference whose entries mix levels, or energies that cannot share its hull.
    """
    settings = settings or EvaluationSettings()
    timings: dict[str, float] = {}
    entries = ReferenceEntries.from_records(reference, reference_name)
    _check_hull_before_work(settings, entries)

    clock = time.perf_counter()
    if settings.relax != "none":
        relaxed = _relax(records, settings)
        timings["relax_s"] = time.perf_counter() - clock
    else:
        relaxed = [_Relaxed(r.structure) for r in records]

    clock = time.perf_counter()
    hulls: list[HullResult | str | None]
    if settings.relax != "none":
        mlff_hulls, described = _mlff_hulls(relaxed, reference, entries, settings)
        hulls = list(mlff_hulls)
    else:
        hulls, described = _carried_hulls(records, entries)
    timings["hull_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    index = reference_index or ReferenceIndex.build(reference, settings=settings.matcher_settings())
    items = [
        Judged(
            record.label,
            record.structure,
            item.structure,
            item.status,
            hull if isinstance(hull, HullResult) else None,
        )
        for record, item, hull in zip(records, relaxed, hulls, strict=True)
    ]
    complete = settings.complete_reference(user_reference)
    verdicts = judge(items, index, settings, reference_complete=complete, n_jobs=settings.n_jobs)
    timings["sun_s"] = time.perf_counter() - clock

    position = {record.label: i for i, record in enumerate(records)}
    rows = []
    for i, (record, item, hull, verdict) in enumerate(
        zip(records, relaxed, hulls, verdicts, strict=True)
    ):
        row = _row(i, record, item, hull, verdict)
        row.duplicate_of = position.get(verdict.duplicate_of) if verdict.duplicate_of else None
        rows.append(row)

    summary = summarize(rows, count_verdicts(verdicts))
    labels = sorted({r.hull_label for r in rows if r.hull_label})
    summary["stability_evaluated"] = summary["n_with_e_above_hull"] > 0
    summary["level_of_theory"] = labels[0] if len(labels) == 1 else labels
    summary["hull"] = described
    summary["incomplete_hulls"] = sorted(
        {f"{r.chemsys}: {r.hull_coverage}" for r in rows if r.hull_complete is False}
    )
    summary["sun_on_incomplete_hulls"] = sorted(
        {f"{r.chemsys}: {r.hull_coverage}" for r in rows if r.sun and r.hull_complete is False}
    )
    summary["carried_energies"] = sum(r.energy is not None for r in records)
    summary["reference"] = {
        "name": reference_name,
        "n_structures": len(reference),
        "complete": complete,
        "n_entries": len(entries.entries) if entries else 0,
        "entries_skipped": dict(list(entries.skipped.items())[:50]) if entries else {},
    }
    summary["settings"] = settings.model_dump()
    summary["timings"] = timings
    return EvaluationResult(rows=rows, summary=summary)
