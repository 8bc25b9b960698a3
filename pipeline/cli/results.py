"""``crystalforge results``: list, show and export a store's candidates.

Only reads the store. The terminal layouts (the ``list`` table, the ``show`` page) are
:mod:`pipeline.results_view`'s, imported on call since they load pymatgen.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import DEFAULT_STORE, StoreOption, fail, opened_store

results_app = typer.Typer(
    help="Query, show and export campaign results.", no_args_is_help=True, rich_markup_mode=None
)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


@results_app.command("list")
def results_list(
    campaign: Annotated[str | None, typer.Option(help="Campaign id (default: all).")] = None,
    sun_only: Annotated[bool, typer.Option(help="Only stable, unique, novel candidates.")] = False,
    max_ehull: Annotated[float | None, typer.Option(help="Only E_hull <= this (eV/atom).")] = None,
    converged_only: Annotated[
        bool, typer.Option(help="Only candidates whose ranked relaxation converged.")
    ] = False,
    charge_balanced: Annotated[
        bool, typer.Option(help="Only charge-balanced compositions.")
    ] = False,
    max_elements: Annotated[
        int | None, typer.Option(min=1, help="Only candidates with at most this many elements.")
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Candidates, lowest E_hull first."""
    from pipeline.results_view import FLAGS, select, table

    with opened_store(store) as results:
        if campaign is not None and results.campaign(campaign) is None:
            raise fail(f"--campaign {campaign}: no such campaign in {store}")
        documents = results.query_candidates(
            campaign, sun_only=sun_only, max_e_above_hull=max_ehull
        )
    documents = select(
        documents,
        converged_only=converged_only,
        charge_balanced_only=charge_balanced,
        max_elements=max_elements,
    )
    if output_format == OutputFormat.json:
        keys = (
            "candidate_id",
            "campaign_id",
            "formula",
            "e_above_hull",
            "level_of_theory",
            "hull_label",
            "hull_coverage",
            "hull_complete",
            "novelty",
            "known_composition",
            "valid_structure",
            "valid_composition",
            "duplicate_of",
            "selected",
            "flags",
            "verdict",
            "failure",
            *FLAGS,
        )
        typer.echo(json.dumps([{k: d.get(k) for k in keys} for d in documents], indent=2))
        return
    typer.echo("\n".join(table(documents, with_campaign=campaign is None)))


@results_app.command("show")
def results_show(
    candidate_id: Annotated[str, typer.Argument(help="Candidate id (or campaign/candidate).")],
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="table (a readable page) or json.")
    ] = OutputFormat.table,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """One candidate: formula, symmetry, verdict, every stage's E_hull and provenance."""
    from pipeline.results_view import page

    with opened_store(store) as results:
        document = results.candidate(candidate_id)
    if document is None:
        raise fail(f"no candidate {candidate_id!r} in {store}")
    document.pop("_id", None)
    if output_format == OutputFormat.json:
        typer.echo(json.dumps(document, indent=2, default=str))
        return
    typer.echo("\n".join(page(document)))


class ExportFormat(StrEnum):
    cif = "cif"
    extxyz = "extxyz"


@results_app.command("export")
def results_export(
    campaign: Annotated[str, typer.Option(help="Campaign id.")],
    out: Annotated[Path, typer.Option(help="Output file: .zip (CIFs) or .extxyz.")],
    export_format: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="cif or extxyz (default: from --out's suffix)."),
    ] = None,
    symprec: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Write each CIF in its space group found at this tolerance (Å), e.g. 0.1 "
            "(default: P1).",
        ),
    ] = None,
    sun_only: Annotated[bool, typer.Option(help="Only S.U.N. candidates.")] = False,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Export a campaign's candidates (their most relaxed structure) with energies, verdicts
    and provenance (in each CIF's data block and in metadata.csv)."""
    from pymatgen.core import Structure

    from evaluation.io.crystals import write_cif_zip, write_extxyz
    from evaluation.records import CrystalRecord
    from pipeline.results_view import ranked_stage

    suffixes = {ExportFormat.cif: (".zip",), ExportFormat.extxyz: (".extxyz", ".xyz")}
    by_suffix = next((f for f, ends in suffixes.items() if out.suffix.lower() in ends), None)
    if export_format is None and by_suffix is None:
        raise fail(f"--out {out}: end it in .zip (CIFs) or .extxyz, or give --format")
    export_format = export_format or by_suffix
    if out.suffix.lower() not in suffixes[export_format]:
        raise fail(
            f"--format {export_format.value} writes {' or '.join(suffixes[export_format])}, "
            f"not {out.name}"
        )
    if symprec is not None and export_format != ExportFormat.cif:
        raise fail("--symprec applies to CIF output (--format cif)")
    if out.is_dir():
        raise fail(f"--out {out} is a folder")
    with opened_store(store) as results:
        if results.campaign(campaign) is None:
            raise fail(f"--campaign {campaign}: no such campaign in {store}")
        documents = results.query_candidates(campaign, sun_only=sun_only)
    if not documents:
        raise fail(f"no candidates for campaign {campaign!r} in {store}")
    records = []
    for d in documents:
        stage = ranked_stage(d)
        structure = Structure.from_dict(stage.get("structure") or d["structure"])
        properties = {
            "campaign": campaign,
            "formula": d["formula"],
            "stage": "final" if stage is d.get("final") else "prerelax",
            "energy_per_atom": stage.get("energy_per_atom"),
            "e_above_hull": d.get("e_above_hull"),
            "level_of_theory": d.get("level_of_theory"),
            "hull_label": d.get("hull_label"),
            "hull_coverage": d.get("hull_coverage"),
            "relaxation": stage.get("status"),
            "novelty": d.get("novelty"),
            "sun": d.get("sun"),
            "novel": d.get("novel"),
            "verdict": d.get("verdict"),
            **{f"provenance_{k}": v for k, v in (d.get("provenance") or {}).items()},
        }
        records.append(CrystalRecord(structure, d["candidate_id"], campaign, properties))
    if export_format == ExportFormat.cif:
        write_cif_zip(records, out, symprec=symprec, data_items=True)
    else:
        write_extxyz(records, out)
    typer.echo(f"wrote {len(records)} candidates to {out}")
