"""``crystalforge data``: inspect, convert and rebuild crystal data sets.

The model's data commands (``data tensors``, ``data build``) live with the model's commands in
:mod:`pipeline.cli.model`; :mod:`pipeline.cli.app` adds them to this group after these.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import bad_input_errors, fail, read_input

data_app = typer.Typer(
    help="Inspect, convert and build crystal data sets.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@data_app.command("info")
def data_info(
    path: Annotated[Path, typer.Argument(help="A crystal file or folder in any supported format.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Counts, elements, atoms-per-cell histogram and properties of a crystal data set."""
    from evaluation.io.data_info import summarize as summarize_data

    try:
        result = read_input(path)
    except bad_input_errors() as error:
        raise fail(str(error)) from None
    summary = summarize_data(result)
    typer.echo(json.dumps(summary.to_dict(), indent=2) if as_json else summary.to_text())


@data_app.command("convert")
def data_convert(
    source: Annotated[Path, typer.Argument(help="Input crystals (any supported format).")],
    destination: Annotated[
        Path, typer.Argument(help="Output: .extxyz, .zip (CIFs), or .jsonl[.gz].")
    ],
) -> None:
    """Convert crystals between formats (extxyz, zip of CIFs, JSONL), keeping provenance."""
    from evaluation.io.crystals import write_cif_zip, write_extxyz, write_jsonl

    name = destination.name.lower()
    if name.endswith((".extxyz", ".xyz")):
        writer = write_extxyz
    elif name.endswith(".zip"):
        writer = write_cif_zip
    elif name.endswith((".jsonl", ".jsonl.gz")):
        writer = write_jsonl
    else:
        raise fail(f"unknown output format for {destination}: use .extxyz, .zip or .jsonl[.gz]")
    try:
        result = read_input(source)
        writer(result.records, destination)
    except bad_input_errors() as error:
        raise fail(str(error)) from None
    except ValueError as error:  # e.g. a disordered structure into extxyz
        raise fail(str(error)) from None
    typer.echo(f"wrote {len(result.records)} crystals to {destination}")


@data_app.command("build-reference")
def data_build_reference(
    shared: Annotated[
        Path, typer.Option(help="The shared data folder (structures/, reference/).")
    ] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="Where to write the reference set.")] = Path(
        "data/reference"
    ),
) -> None:
    """Rebuild the shipped reference set from the shared structures (reproducible)."""
    from evaluation.reference import build_reference_set

    if not shared.is_dir():
        raise fail(f"shared data folder not found: {shared}")
    manifest = build_reference_set(shared, out)
    typer.echo(json.dumps(manifest.get("counts", manifest), indent=2))
