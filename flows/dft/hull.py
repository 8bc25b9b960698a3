"""Hull references at a DFT engine's own level of theory.

* GPAW: computed on demand. The system's elements (MP's lowest-energy polymorphs) and the
  reference compounds of its subsystems with at most ``max_sites`` sites are relaxed and
  run statically with the *same* input set as the candidates, one DFT run per structure (so
  FireWorks spreads them over workers and a killed run resumes), then one job builds the hull.
  The job ids depend only on (system, level, reference set), so the hull is computed once per
  store and every later campaign reuses it.
* VASP: MP2020-compatible DFT entries supplied by the user (e.g. Alex-MP-ICSD), see
  :func:`flows.dft.vasp.vasp_hull_reference`.
"""

from __future__ import annotations

import time
from typing import Any

from jobflow import Flow, Job, Maker, OnMissing, Response, job
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Structure

from evaluation.hull.core import EntryHullReference, chemsys_elements
from evaluation.hull.mlff_reference import ELEMENT_REFS_FILE, HullCandidates, element_polymorphs
from evaluation.paths import reference_dir
from evaluation.reference import load_reference
from flows.contracts import HullFailure, HullOutcome, HullReferenceDoc, as_structure
from flows.dft.schema import run_past_failures
from flows.resume import finished_output, resumable, stable_uuid

#: Reference compounds larger than this are left out of on-demand DFT hulls (cost grows ~N³).
DFT_HULL_MAX_SITES = 8


def dft_reference_structures(
    chemsys: str,
    reference_path: str | None = None,
    *,
    max_sites: int = DFT_HULL_MAX_SITES,
    elemental_polymorphs: int = 1,
) -> list[tuple[str, Structure]]:
    """``(label, structure)`` of every structure a DFT hull of ``chemsys`` needs.

    Per element, the ``elemental_polymorphs`` lowest-energy MP polymorphs (the smallest cell
    is taken when none fits ``max_sites``); then the reference compounds within the system.

    Raises
    ------
    ValueError
        When an element has no MP polymorph.
    """
    elements = sorted(chemsys_elements(chemsys))
    polymorphs = element_polymorphs(str(reference_dir() / ELEMENT_REFS_FILE))
    chosen: list[tuple[str, Structure]] = []
    for element in elements:
        if element not in polymorphs:
            raise ValueError(f"no elemental polymorph of {element} to build a DFT hull with")
        structures = [Structure.from_dict(s) for _, s in polymorphs[element]]
        small = [s for s in structures if len(s) <= max_sites] or [min(structures, key=len)]
        chosen += [(f"{element} ref{i}", s) for i, s in enumerate(small[:elemental_polymorphs])]
    records = HullCandidates(load_reference(reference_path).records).within("-".join(elements))
    chosen += [(r.label, r.structure) for r in records if len(r.structure) <= max_sites]
    return chosen


@job(output_schema=HullOutcome)
def build_dft_hull(
    chemsys: str, labels: list[str], results: list[dict[str, Any]], started: float
) -> HullOutcome:
    """The hull reference of the reference runs (failed runs are skipped, with their labels
    listed), or a :class:`HullFailure` when an element has no energy."""
    levels = {r["level_of_theory"] for r in results if r and r.get("level_of_theory")}
    if len(levels) > 1:  # never one hull over several levels
        return HullFailure(error=f"reference runs at several levels: {sorted(levels)}")
    mu: dict[str, float] = {}
    entries: list[PDEntry] = []
    skipped: list[str] = []
    for label, result in zip(labels, results, strict=True):
        if not result or result.get("energy_per_atom") is None:
            skipped.append(label)
            continue
        composition = as_structure(result["structure"]).composition
        if len(composition.elements) == 1:
            symbol = composition.elements[0].symbol
            mu[symbol] = min(mu.get(symbol, float("inf")), result["energy_per_atom"])
        entries.append(
            PDEntry(composition, result["energy_per_atom"] * composition.num_atoms, name=label)
        )
    missing = sorted(chemsys_elements(chemsys) - set(mu))
    if missing or not levels:
        return HullFailure(error=f"no DFT energy for element(s) {missing} of {chemsys}: {skipped}")
    (level,) = levels
    reference = EntryHullReference(
        entries, mu, level_of_theory=level, name=f"{len(entries)} {level} runs in {chemsys}"
    )
    return HullReferenceDoc(**reference.to_dict(), skipped=skipped, seconds=time.time() - started)


@job
def keep_run(label: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """A reference run's result under a fixed job id (``{"label", "failed"}`` when it failed,
    so a resumed hull does not mistake a failure for work still to do)."""
    return result if result else {"label": label, "failed": True, "energy_per_atom": None}


@job  # no output_schema: a replacement's stored output is a reference (to build_dft_hull's)
def dft_hull_reference(
    chemsys: str, reference_path: str | None, tasks_maker: Maker, key: str
) -> Response:
    """Replace this job by one relax + static run per reference structure and the hull build.

    ``key`` (system, level and reference set) fixes the ids of the per-structure result
    jobs, so a hull whose build was interrupted reuses the runs that had finished (this job
    must be :func:`~flows.resume.resumable` for that; :func:`hull_reference_job` makes it so).
    """
    started = time.time()
    try:
        structures = dft_reference_structures(chemsys, reference_path)
    except ValueError as error:
        return Response(output=HullFailure(error=f"no DFT hull for {chemsys}: {error}"))
    jobs: list[Job | Flow] = []
    results: list[Any] = []
    for label, structure in structures:
        kept_uuid = stable_uuid(key, label)
        if (finished := finished_output(kept_uuid)) is not None:  # resumed: this run finished
            results.append(finished)
            continue
        run = run_past_failures(tasks_maker.make(structure))
        run.name = f"hull reference {label}"
        kept = keep_run(label, run.output)
        kept.set_uuid(kept_uuid)
        kept.config.on_missing_references = OnMissing.NONE  # a failed run is recorded, not fatal
        jobs += [run, kept]
        results.append(kept.output)
    build = build_dft_hull(chemsys, [label for label, _ in structures], results, started)
    return Response(replace=Flow([*jobs, build], output=build.output, name=f"DFT hull {chemsys}"))


def hull_reference_job(chemsys: str, reference_path: str | None, tasks_maker: Maker) -> Job:
    """The hull job of ``chemsys`` at ``tasks_maker``'s level, with its id fixed by (system,
    level, reference set): every campaign on the store shares it."""
    level = tasks_maker.level_of_theory
    key = stable_uuid("dft-hull-reference", chemsys, level, reference_path or "")
    hull = dft_hull_reference(chemsys, reference_path, tasks_maker, key)
    hull.name = f"hull reference {chemsys} {level}"
    resumable(hull, key)  # an interrupted hull reuses the reference runs that finished
    hull.config.pass_manager_config = False  # its runs keep their own (run_past_failures)
    return hull
