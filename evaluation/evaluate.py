"""``crystalforge evaluate``: S.U.N. evaluation of a set of crystals, as the paper defines it.

The stages, in order:

1. validity of each input structure (structure and SMACT composition);
2. optionally, MLFF relaxation (CHGNet by default) — RMSD to the relaxed structure (Eq. D47)
   and MLFF energies; failures are recorded for that structure only;
3. uniqueness within the set and novelty against the reference (StructureMatcher, ltol 0.2,
   stol 0.3, angle_tol 5, bucketed by reduced formula);
4. energy above hull at ONE level of theory: MLFF energies against the reference structures of
   the chemical system relaxed with the same MLFF and its own elemental references; or, for
   inputs that carry Materials Project-style DFT energies, MP2020-corrected formation energies
   against the composition-level MP reference. Nothing else is mixed.
5. stability (E_hull < threshold, and the strict E_hull ≤ 0), S.U.N., summary, files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymatgen.core import Structure

from evaluation.matching import MatcherSettings, ReferenceIndex, find_duplicates
from evaluation.metrics import (
    STABILITY_THRESHOLD,
    is_compositionally_valid,
    is_on_hull,
    is_stable,
    is_structurally_valid,
    rmsd,
)
from evaluation.records import CrystalInputError, CrystalRecord
from evaluation.report import (
    StructureEvaluation,
    summarize,
    write_plots,
    write_structures_csv,
    write_summary,
)

logger = logging.getLogger(__name__)


class MatcherTolerances(BaseModel):
    """pymatgen ``StructureMatcher`` tolerances (the paper: ltol 0.2, stol 0.3, angle_tol 5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ltol: float = Field(0.2, gt=0)
    stol: float = Field(0.3, gt=0)
    angle_tol: float = Field(5.0, gt=0)


class EvaluationSettings(BaseModel):
    """How to evaluate; loaded from ``configs/evaluation/*.yaml``, overridden by the CLI.

    Attributes
    ----------
    relax
        ``"none"`` or an MLFF name accepted by :func:`evaluation.mlff.load_calculator`
        (``"chgnet"``, ``"sevennet"``, ``"7net-l3i5"``, ...).
    stability_threshold
        E_hull (eV/atom) below which a structure is stable; the paper uses 0.1.
    disorder
        Use the ordered–disordered matcher for novelty (published paper, Supplementary D.4).
    n_jobs
        Worker processes for the MLFF relaxation and for matching.
    relax_fmax, relax_steps
        Force criterion (eV/Å) and step budget of the MLFF relaxation.
    hull_relax_fmax, hull_relax_steps
        The same for the reference compounds of MLFF hulls (default: as the samples). Energies
        cached by ``crystalforge data build`` at its settings are reused when these match.
    hull_reference
        A saved MLFF hull (``hull.json.gz`` of ``crystalforge data build``) to place MLFF
        energies on instead of relaxing the reference set's compounds; its level of theory
        must be the relaxing MLFF's.
    matcher
        StructureMatcher tolerances.
    """

    model_config = ConfigDict(extra="forbid")

    relax: str = "none"
    stability_threshold: float = STABILITY_THRESHOLD
    disorder: bool = False
    n_jobs: int = Field(1, ge=1)
    relax_fmax: float = Field(0.05, gt=0)
    relax_steps: int = Field(500, ge=1)
    hull_relax_fmax: float | None = Field(None, gt=0)
    hull_relax_steps: int | None = Field(None, ge=1)
    hull_reference: str | None = None
    matcher: MatcherTolerances = Field(default_factory=MatcherTolerances)

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

    def matcher_settings(self) -> MatcherSettings:
        """The :class:`~evaluation.matching.MatcherSettings` these tolerances describe."""
        return MatcherSettings(**self.matcher.model_dump())


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


def _validity_rows(records: Sequence[CrystalRecord]) -> list[StructureEvaluation]:
    rows = []
    for index, record in enumerate(records):
        structure = record.structure
        valid_structure = structure.is_ordered and is_structurally_valid(structure)
        valid_composition = is_compositionally_valid(structure.composition)
        rows.append(
            StructureEvaluation(
                index=index,
                id=record.id,
                source=record.source,
                formula=record.formula,
                chemsys=record.chemsys,
                n_atoms=len(structure),
                valid=valid_structure and valid_composition,
                valid_structure=valid_structure,
                valid_composition=valid_composition,
                unique=True,
                duplicate_of=None,
                novel=True,
                matched_reference=None,
            )
        )
    return rows


def _relax(
    records: Sequence[CrystalRecord], rows: list[StructureEvaluation], settings: EvaluationSettings
) -> list[Structure]:
    """Relax with the MLFF; returns the structures to judge (relaxed where it succeeded)."""
    from evaluation.parallel_relax import relax_parallel

    results = relax_parallel(
        [r.structure for r in records],
        settings.relax,
        settings.relax_fmax,
        settings.relax_steps,
        n_jobs=settings.n_jobs,
        desc=f"relax {settings.relax}",
    )
    judged = []
    for record, row, result in zip(records, rows, results, strict=True):
        row.relax_status = result.status
        row.relax_message = result.reason or ""
        if result.status in ("ok", "not_converged") and result.structure is not None:
            judged.append(result.structure)
            row.energy_per_atom = result.energy_per_atom
            row.level_of_theory = result.level_of_theory
            try:
                row.rmsd = rmsd(record.structure, result.structure)
            except ValueError as error:  # an MLFF never changes atoms; guard all the same
                row.relax_message = f"{row.relax_message} rmsd: {error}".strip()
        else:
            judged.append(record.structure)
    return judged


def _mlff_stability(
    judged: Sequence[Structure],
    rows: list[StructureEvaluation],
    reference: Sequence[CrystalRecord],
    settings: EvaluationSettings,
) -> None:
    """E_hull of MLFF energies against the same MLFF's hull of each chemical system, whose
    compounds are relaxed with the same settings as the structures."""
    from evaluation.mlff_reference import mlff_e_above_hull

    if settings.hull_reference:
        _saved_hull_stability(judged, rows, Path(settings.hull_reference))
        return
    results = mlff_e_above_hull(
        [
            (s, row.energy_per_atom, row.level_of_theory)
            for s, row in zip(judged, rows, strict=True)
        ],
        reference,
        settings.relax,
        fmax=settings.hull_relax_fmax or settings.relax_fmax,
        max_steps=settings.hull_relax_steps or settings.relax_steps,
        n_jobs=settings.n_jobs,
    )
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, str):
            row.hull_message = result
        else:
            _record_hull(row, result)


def _saved_hull_stability(
    judged: Sequence[Structure], rows: list[StructureEvaluation], path: Path
) -> None:
    """E_hull of MLFF energies on a saved hull of the same level (one hull, every system)."""
    from evaluation.hull import EntryHullReference, LevelOfTheoryMismatch, UnknownElementError

    try:
        hull = EntryHullReference.load(path)
    except (OSError, ValueError, KeyError) as error:
        raise CrystalInputError(f"hull reference {path}: {error}") from None
    for structure, row in zip(judged, rows, strict=True):
        if row.energy_per_atom is None or not row.level_of_theory:
            row.hull_message = "no MLFF energy (relaxation failed)"
            continue
        try:
            result = hull.e_above_hull(
                structure.composition,
                row.energy_per_atom,
                level_of_theory=row.level_of_theory,
                kind="total",
            )
        except UnknownElementError as error:
            row.hull_message = str(error)
            continue
        except LevelOfTheoryMismatch as error:
            raise CrystalInputError(str(error)) from None
        _record_hull(row, result)


def _record_hull(row: StructureEvaluation, result: Any) -> None:
    row.e_above_hull = result.e_above_hull
    row.formation_energy_per_atom = result.formation_energy_per_atom
    row.level_of_theory = result.level_of_theory
    row.hull_reference = result.reference
    row.correction = result.correction
    if result.correction_mismatch:
        row.hull_message = (
            f"{result.correction}-corrected energy against a {result.reference_correction} "
            "reference (same level of theory, different correction scheme)"
        )


def _dft_stability(records: Sequence[CrystalRecord], rows: list[StructureEvaluation]) -> None:
    """E_hull of inputs carrying Materials Project-style DFT energies (no relaxation asked).

    The entry is corrected with ``MaterialsProject2020Compatibility`` (as the paper does) and
    compared with the composition-level MP formation-energy reference; the MP2020 vs legacy
    correction difference is flagged on the row. Energies at any other level of theory have no
    shipped reference and are left unscored, with the reason.
    """
    import warnings

    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from evaluation.hull import (
        CorrectionMismatchWarning,
        apply_mp2020_compatibility,
        entry_e_above_hull,
        mp_formation_energy_reference,
    )

    carrying = [
        (rec, row) for rec, row in zip(records, rows, strict=True) if rec.energy is not None
    ]
    if not carrying:
        return
    hull = mp_formation_energy_reference()
    for record, row in carrying:
        row.energy_per_atom = record.energy / len(record.structure)
        metadata = record.energy_metadata
        parameters = metadata.get("parameters") or {}
        if parameters.get("run_type") not in ("GGA", "GGA+U"):
            row.hull_message = (
                "energy has no MP-style parameters (run_type GGA/GGA+U): no shipped reference "
                "at its level of theory; use --relax to score at an MLFF level"
            )
            continue
        entry = ComputedStructureEntry(
            record.structure,
            record.energy,
            parameters=parameters,
            data=dict(metadata.get("data") or {}),
            entry_id=record.id,
        )
        corrected = apply_mp2020_compatibility([entry])
        if not corrected:
            row.hull_message = "MaterialsProject2020Compatibility rejected this entry"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CorrectionMismatchWarning)  # flagged per row
                _record_hull(row, entry_e_above_hull(corrected[0], hull))
        except ValueError as error:
            row.hull_message = str(error)


def evaluate(
    records: Sequence[CrystalRecord],
    reference: Sequence[CrystalRecord],
    settings: EvaluationSettings | None = None,
    *,
    reference_name: str = "reference",
    reference_index: ReferenceIndex | None = None,
) -> EvaluationResult:
    """Evaluate ``records`` against ``reference`` (see the module docstring for the stages).

    Parameters
    ----------
    records
        The crystals to evaluate, in sampling order (uniqueness keeps the first of a kind).
    reference
        The novelty reference and the source of reference structures for MLFF hulls.
    settings
        :class:`EvaluationSettings`; defaults follow the paper.
    reference_name
        How the reference is named in the summary (a path or ``"shipped"``).
    reference_index
        A prebuilt index over ``reference`` (else one is built, cached on disk).
    """
    settings = settings or EvaluationSettings()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    rows = _validity_rows(records)
    timings["validity_s"] = time.perf_counter() - clock

    judged = [r.structure for r in records]
    if settings.relax != "none":
        clock = time.perf_counter()
        judged = _relax(records, rows, settings)
        timings["relax_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    duplicate_of = find_duplicates(
        judged, settings=settings.matcher_settings(), n_jobs=settings.n_jobs
    )
    for row, earlier in zip(rows, duplicate_of, strict=True):
        row.duplicate_of = earlier
        row.unique = earlier is None
    timings["uniqueness_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    index = reference_index or ReferenceIndex.build(
        reference, settings=settings.matcher_settings(), disorder=settings.disorder
    )
    matches = index.matches(judged, n_jobs=settings.n_jobs)
    for row, match in zip(rows, matches, strict=True):
        row.matched_reference = match
        row.novel = match is None
    timings["novelty_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if settings.relax != "none":
        _mlff_stability(judged, rows, reference, settings)
    else:
        _dft_stability(records, rows)
    for row in rows:
        row.stable = is_stable(row.e_above_hull, settings.stability_threshold)
        row.on_hull = is_on_hull(row.e_above_hull)
        row.sun = row.stable and row.unique and row.novel
        row.sun_on_hull = row.on_hull and row.unique and row.novel
    timings["hull_s"] = time.perf_counter() - clock

    summary = summarize(rows)
    levels = sorted({r.level_of_theory for r in rows if r.level_of_theory})
    summary["stability_evaluated"] = summary["n_with_energy"] > 0
    summary["level_of_theory"] = levels[0] if len(levels) == 1 else levels
    summary["reference"] = {"name": reference_name, "n_structures": len(reference)}
    summary["settings"] = settings.model_dump()
    summary["timings"] = timings
    return EvaluationResult(rows=rows, summary=summary)
