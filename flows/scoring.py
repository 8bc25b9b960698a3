"""Campaign stages after relaxation: filter, hull, select and score.

Each is a jobflow job over plain dicts; each reuses the evaluation core (validity, matching,
same-level MLFF hulls) rather than re-implementing it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from jobflow import job
from pymatgen.core import Structure

from evaluation.hull import EntryHullReference
from evaluation.matching import MatcherSettings, ReferenceIndex, find_duplicates
from evaluation.metrics import (
    STABILITY_THRESHOLD,
    is_compositionally_valid,
    is_on_hull,
    is_stable,
    is_structurally_valid,
)
from evaluation.mlff import MLFFUnavailable
from evaluation.mlff_reference import HullCandidates, mlff_hull_reference
from evaluation.reference import load_reference
from flows.relax import as_structure, as_structure_dict

Candidate = dict[str, Any]


def _by_id(stage_output: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {r["candidate_id"]: r for r in stage_output["results"]} if stage_output else {}


def _usable(result: dict[str, Any] | None) -> bool:
    """A relaxation that produced a structure and an energy (converged or not)."""
    return (
        result is not None
        and result["status"] in ("ok", "not_converged")
        and result["structure"] is not None
    )


@job
def filter_candidates(
    candidates: list[Candidate],
    prerelax: dict[str, Any],
    reference_path: str | None,
    require_charge_balance: bool = False,
) -> dict[str, Any]:
    """Validity → uniqueness among candidates → novelty against the reference.

    Validity is structural (distances ≥ 0.5 Å, volume ≥ 0.1 Å³) on the generated structure;
    SMACT charge balance is recorded as ``valid_composition`` and only gates the filter when
    ``require_charge_balance`` is set — the paper's chemical-system protocol keeps
    intermetallics and other non-ionic candidates. Uniqueness and novelty are judged on the
    pre-relaxed structure. A candidate whose pre-relaxation failed fails the filter, with the
    reason recorded.
    """
    started = time.perf_counter()
    relaxed = _by_id(prerelax)
    flags: dict[str, dict[str, Any]] = {}
    survivors: list[tuple[str, Structure]] = []
    for candidate in candidates:
        cid = candidate["candidate_id"]
        generated = as_structure(candidate["structure"])
        structurally_valid = is_structurally_valid(generated)
        charge_balanced = is_compositionally_valid(generated.composition)
        valid = structurally_valid and (charge_balanced or not require_charge_balance)
        result = relaxed.get(cid)
        flags[cid] = {
            "valid": valid,
            "valid_composition": charge_balanced,
            "unique": False,
            "novel": False,
            "failure": None,
        }
        if not _usable(result):
            reason = result["reason"] if result else "not relaxed"
            flags[cid]["failure"] = f"prerelax {result['status'] if result else ''}: {reason}"
        elif not valid:
            flags[cid]["failure"] = (
                "not charge balanced" if structurally_valid else "invalid structure"
            )
        else:
            survivors.append((cid, as_structure(result["structure"])))

    duplicate_of = find_duplicates([s for _, s in survivors])
    unique = []
    for (cid, structure), earlier in zip(survivors, duplicate_of, strict=True):
        flags[cid]["unique"] = earlier is None
        flags[cid]["duplicate_of"] = survivors[earlier][0] if earlier is not None else None
        if earlier is None:
            unique.append((cid, structure))
        else:
            flags[cid]["failure"] = f"duplicate of {survivors[earlier][0]}"

    reference = load_reference(reference_path).records
    index = ReferenceIndex.build(reference, settings=MatcherSettings())
    for (cid, _), match in zip(unique, index.matches([s for _, s in unique]), strict=True):
        flags[cid]["novel"] = match is None
        flags[cid]["matched_reference"] = match
        if match is not None:
            flags[cid]["failure"] = f"known: matches {match}"
    counts = {
        "generated": len(candidates),
        "relaxed": sum(_usable(relaxed.get(c["candidate_id"])) for c in candidates),
        "valid": sum(f["valid"] for f in flags.values()),
        "unique": sum(f["unique"] for f in flags.values()),
        "novel": sum(f["novel"] for f in flags.values()),
    }
    return {"flags": flags, "counts": counts, "seconds": time.perf_counter() - started}


@job
def hull_reference(chemsys: str, reference_path: str | None, model: str) -> dict[str, Any]:
    """The MLFF hull of ``chemsys``: its reference compounds and elements relaxed with ``model``.

    Its job id depends only on (chemsys, model, reference), not on the campaign, so every
    campaign on the same store reuses the first one's result. Returns
    :meth:`EntryHullReference.to_dict` output, or ``{"error": reason}`` when the system has no
    hull at this level (e.g. an element without a polymorph to relax).
    """
    started = time.perf_counter()
    records = HullCandidates(load_reference(reference_path).records).within(chemsys)
    try:
        reference = mlff_hull_reference(chemsys, records, model, progress=False)
    except (ValueError, KeyError, MLFFUnavailable) as error:
        return {"error": f"no hull for {chemsys} at {model}: {error}"}
    return {**reference.to_dict(), "seconds": time.perf_counter() - started}


def _hull_results(
    stage_output: dict[str, Any], ids: list[str], reference: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """E_hull of the stage's MLFF energies for ``ids`` against a same-level hull reference."""
    results = _by_id(stage_output)
    hull = EntryHullReference.from_dict(reference) if "error" not in reference else None
    scored: dict[str, dict[str, Any]] = {}
    for cid in ids:
        result = results.get(cid)
        if not _usable(result):
            scored[cid] = {"e_above_hull": None, "hull_message": "not relaxed"}
            continue
        if hull is None:
            scored[cid] = {"e_above_hull": None, "hull_message": reference["error"]}
            continue
        structure = as_structure(result["structure"])
        value = hull.e_above_hull(
            structure.composition,
            result["energy_per_atom"],
            level_of_theory=result["level_of_theory"],
            kind="total",
        )
        scored[cid] = {
            "e_above_hull": value.e_above_hull,
            "formation_energy_per_atom": value.formation_energy_per_atom,
            "hull_reference": value.reference,
            "level_of_theory": value.level_of_theory,
            "hull_message": "",
        }
    return scored


@job
def hull_stage(
    stage_output: dict[str, Any], filtered: dict[str, Any], reference: dict[str, Any]
) -> dict[str, Any]:
    """E_hull at the pre-relaxation level for candidates that passed the filter."""
    started = time.perf_counter()
    passed = [cid for cid, f in filtered["flags"].items() if f["novel"]]
    hull = _hull_results(stage_output, passed, reference)
    return {"hull": hull, "seconds": time.perf_counter() - started}


@job
def select_top_k(hull: dict[str, Any], top_k: int) -> list[str]:
    """The ``top_k`` candidates with the lowest predicted E_hull (paper: K = 100)."""
    scored = [
        (h["e_above_hull"], cid)
        for cid, h in hull["hull"].items()
        if h["e_above_hull"] is not None and math.isfinite(h["e_above_hull"])
    ]
    return [cid for _, cid in sorted(scored)[:top_k]]


@job
def final_hull_stage(
    final: dict[str, Any], selected: list[str], reference: dict[str, Any]
) -> dict[str, Any]:
    """E_hull of the final stage's energies against the final MLFF's own hull."""
    started = time.perf_counter()
    hull = _hull_results(final, selected, reference)
    return {"hull": hull, "seconds": time.perf_counter() - started}


@job
def score_campaign(
    candidates: list[Candidate],
    prerelax: dict[str, Any],
    filtered: dict[str, Any],
    prerelax_hull: dict[str, Any],
    selected: list[str],
    final: dict[str, Any],
    final_hull: dict[str, Any],
    stability_threshold: float = STABILITY_THRESHOLD,
) -> dict[str, Any]:
    """Per-candidate documents (without campaign fields) and the campaign summary counts."""
    prerelax_results, final_results = _by_id(prerelax), _by_id(final)
    documents = []
    for candidate in candidates:
        cid = candidate["candidate_id"]
        generated = as_structure(candidate["structure"])
        flags = filtered["flags"][cid]
        stage_pre = {**(prerelax_results.get(cid) or {}), **prerelax_hull["hull"].get(cid, {})}
        stage_final = None
        if cid in selected:
            stage_final = {**(final_results.get(cid) or {}), **final_hull["hull"].get(cid, {})}
        best = stage_final if stage_final and stage_final.get("e_above_hull") is not None else None
        best = best or stage_pre
        e_hull = best.get("e_above_hull")
        stable = is_stable(e_hull, stability_threshold)
        documents.append(
            {
                "candidate_id": cid,
                "generator": candidate["provenance"].get("generator", ""),
                "provenance": candidate["provenance"],
                "formula": generated.composition.reduced_formula,
                "chemsys": generated.composition.chemical_system,
                "n_atoms": len(generated),
                "structure": as_structure_dict(candidate["structure"]),
                "prerelax": _stage_doc(stage_pre),
                "final": _stage_doc(stage_final) if stage_final else None,
                "valid": flags["valid"],
                "valid_composition": flags["valid_composition"],
                "unique": flags["unique"],
                "duplicate_of": flags.get("duplicate_of"),
                "novel": flags["novel"],
                "matched_reference": flags.get("matched_reference"),
                "selected": cid in selected,
                "e_above_hull": e_hull,
                "level_of_theory": best.get("level_of_theory") if e_hull is not None else None,
                "stable": stable,
                "on_hull": is_on_hull(e_hull),
                "sun": stable and flags["unique"] and flags["novel"],
                "failure": flags.get("failure") or (best.get("hull_message") or None),
            }
        )
    summary = dict(filtered["counts"])
    summary["with_e_above_hull"] = sum(d["e_above_hull"] is not None for d in documents)
    summary["selected"] = len(selected)
    summary["stable"] = sum(d["stable"] for d in documents)
    summary["sun"] = sum(d["sun"] for d in documents)
    summary["sun_final"] = sum(d["sun"] and d["selected"] for d in documents)
    timings = {
        "prerelax": prerelax["seconds"],
        "filter": filtered["seconds"],
        "hull": prerelax_hull["seconds"],
        "final": final["seconds"],
        "final_hull": final_hull["seconds"],
    }
    return {"candidates": documents, "summary": summary, "timings": timings}


#: What a candidate document keeps of each relaxation stage (see ``StageResult``).
STAGE_FIELDS = (
    "status",
    "reason",
    "structure",
    "energy_per_atom",
    "level_of_theory",
    "e_above_hull",
    "formation_energy_per_atom",
    "hull_reference",
    "hull_message",
    "rmsd",
    "n_steps",
    "dft_status",
    "properties",
)


def _stage_doc(stage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stage or "status" not in stage:
        return None
    return {key: stage[key] for key in STAGE_FIELDS if key in stage}
