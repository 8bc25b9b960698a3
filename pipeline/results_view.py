"""How candidates read in a terminal: the ``results list`` table and the ``results show`` page.

A candidate document (``flows.documents.CandidateDoc``) carries one result per stage
(``prerelax``, ``final``), each with its level of theory and hull; the ranked E_hull is the most
refined stage's. Everything here only formats: a flag that was never checked prints ``-``, not
``no``, and every E_hull names the level of theory it was computed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evaluation.metrics.chemistry import SYMPREC

STAGES = ("prerelax", "final")
FLAGS = ("valid", "unique", "novel", "stable", "sun")


def ranked_stage(document: dict[str, Any]) -> dict[str, Any]:
    """The stage whose E_hull ranks the candidate: the final one when it ran, else prerelax."""
    final = document.get("final") or {}
    return final if final.get("status") else document.get("prerelax") or {}


def short_level(level: str | None) -> str:
    """``mlff:sevennet-7net-0`` -> ``7net-0``, ``mlff:chgnet-0.3.0`` -> ``chgnet``, DFT as is."""
    if not level:
        return "-"
    if level.startswith("mlff:"):
        model = level.removeprefix("mlff:")
        if model.startswith("sevennet-"):
            return model.removeprefix("sevennet-")
        return model.split("-")[0]
    return level


def mark(value: Any) -> str:
    """``yes``/``no``; ``-`` for a check that was not made (``None``)."""
    return "-" if value is None else ("yes" if value else "no")


def space_group(document: dict[str, Any]) -> str:
    """Space group symbol and number of the candidate's most relaxed structure (symprec 0.1)."""
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = (ranked_stage(document).get("structure")) or document.get("structure")
    if not structure:
        return "-"
    try:
        analyzer = SpacegroupAnalyzer(Structure.from_dict(structure), symprec=SYMPREC)
        return f"{analyzer.get_space_group_symbol()} ({analyzer.get_space_group_number()})"
    except Exception:  # noqa: BLE001 - spglib fails on broken cells; the table still prints
        return "?"


def select(
    documents: Sequence[dict[str, Any]],
    *,
    converged_only: bool = False,
    charge_balanced_only: bool = False,
    max_elements: int | None = None,
) -> list[dict[str, Any]]:
    """The documents that pass the ``results list`` filters."""
    kept = []
    for d in documents:
        if converged_only and ranked_stage(d).get("status") != "ok":
            continue
        if charge_balanced_only and not d.get("valid_composition"):
            continue
        if max_elements is not None and len((d.get("chemsys") or "").split("-")) > max_elements:
            continue
        kept.append(d)
    return kept


def table(documents: Sequence[dict[str, Any]], *, with_campaign: bool) -> list[str]:
    """The ``results list`` table: one line per candidate, a legend line at the end."""
    header = f"{'candidate':<22}{'formula':<14}{'space group':<16}{'E_hull':>8} {'at':<9}"
    header += f"{'relaxed':<19}{'hull':<7}{'novelty':<11}" + " ".join(f"{f:<6}" for f in FLAGS)
    lines = [(f"{'campaign':<24}" if with_campaign else "") + header]
    for d in documents:
        stage = ranked_stage(d)
        e_hull = "-" if d.get("e_above_hull") is None else f"{d['e_above_hull']:.3f}"
        coverage = d.get("hull_coverage") or "-"
        relaxed = f"{stage.get('status') or '-'}" + (
            f" {stage['n_steps']}" if stage.get("n_steps") is not None else ""
        )
        line = (f"{d['campaign_id']:<24}" if with_campaign else "") + (
            f"{d['candidate_id']:<22}{d['formula']:<14}{space_group(d):<16}{e_hull:>8} "
            f"{short_level(d.get('level_of_theory')):<9}{relaxed:<18} "
            f"{coverage.split(' known')[0]:<7}{d.get('novelty') or '-':<11}"
            + " ".join(f"{mark(d.get(f)):<6}" for f in FLAGS)
        )
        lines.append(line)
    lines.append(
        "E_hull: eV/atom above the hull, at the level of theory `at` (most refined stage), "
        "against the reference of `results show`; hull: known hull phases present/known; "
        "relaxed: status and steps; valid: structure and charge balance; '-': not checked"
    )
    return lines


def _row(name: str, value: Any) -> str:
    return f"{name:<15}{value}"


def stage_lines(document: dict[str, Any]) -> list[str]:
    lines = [
        f"  {'stage':<10}{'status':<15}{'steps':>6} {'E eV/atom':>10} {'E_hull':>8} "
        f"{'RMSD Å':>7}  E_hull compares"
    ]
    for name in STAGES:
        stage = document.get(name) or {}
        if not stage.get("status"):
            lines.append(f"  {name:<10}not run")
            continue

        def number(key: str, width: int, stage: dict[str, Any] = stage) -> str:
            value = stage.get(key)
            return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"

        steps = "-" if stage.get("n_steps") is None else str(stage["n_steps"])
        lines.append(
            f"  {name:<10}{stage['status']:<15}{steps:>6} {number('energy_per_atom', 10)} "
            f"{number('e_above_hull', 8)} {number('rmsd', 7)}  "
            f"{stage.get('hull_label') or stage.get('level_of_theory') or '-'}"
        )
        if stage.get("reason"):
            lines.append(f"  {'':<10}reason: {stage['reason']}")
        if stage.get("hull_message"):
            lines.append(f"  {'':<10}hull: {stage['hull_message']}")
    return lines


def provenance_line(provenance: dict[str, Any]) -> str:
    """Scalar provenance fields on one line; nested parameters by name only."""
    parts = [
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in provenance.items()
        if not isinstance(value, dict | list) and value is not None
    ]
    nested = [key for key, value in provenance.items() if isinstance(value, dict | list)]
    return ", ".join(parts) + (f" (also: {', '.join(nested)}; --format json)" if nested else "")


def page(document: dict[str, Any]) -> list[str]:
    """The ``results show`` page of one candidate."""
    stage = ranked_stage(document)
    reference = stage.get("hull_reference") or "-"
    lines = [
        f"{document['candidate_id']} (campaign {document['campaign_id']})",
        _row("formula", f"{document['formula']}, {document.get('n_atoms', '?')} atoms"),
        _row("space group", f"{space_group(document)} (symprec {SYMPREC}, most relaxed stage)"),
        _row("verdict", document.get("verdict") or "-"),
        _row("flags", ", ".join(document.get("flags") or []) or "-"),
        _row(
            "checks",
            f"valid structure {mark(document.get('valid_structure'))}, charge-balanced "
            f"{mark(document.get('valid_composition'))}, unique {mark(document.get('unique'))}"
            + _duplicate(document)
            + f", novelty {document.get('novelty') or '-'}"
            + (
                f" (matches {document['matched_reference']})"
                if document.get("matched_reference")
                else ""
            )
            + f", stable {mark(document.get('stable'))}, on hull {mark(document.get('on_hull'))}",
        ),
        _row("ranked E_hull", _ranked(document)),
        _row("hull", f"{reference}; {document.get('hull_coverage') or 'coverage unknown'}"),
        "stages (energies per atom in eV, E_hull in eV/atom, RMSD to the stage's input):",
        *stage_lines(document),
        _row("provenance", provenance_line(document.get("provenance") or {})),
    ]
    if document.get("failure"):
        lines.append(_row("failure", document["failure"]))
    lines.append(
        f"(all fields: crystalforge results show {document.get('candidate_key', '')} --format json)"
    )
    return lines


def _duplicate(document: dict[str, Any]) -> str:
    return f" (duplicate of {document['duplicate_of']})" if document.get("duplicate_of") else ""


def _ranked(document: dict[str, Any]) -> str:
    if document.get("e_above_hull") is None:
        return "none (no stage placed it on a hull)"
    return f"{document['e_above_hull']:.3f} eV/atom, {document.get('hull_label') or '-'}"
