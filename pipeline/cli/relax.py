"""``crystalforge relax``: relax every crystal of a file with an MLFF and write the results.

Every option, the output path and the input are checked before the model loads; the output
(extxyz, or a zip of CIFs) is written atomically and holds one entry per input, in input
order: the relaxed crystal, or the input one when its relaxation exploded or failed, each with
its status, reason, energy per atom, steps and level of theory.
"""

from __future__ import annotations

import math
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.common import bad_input_errors, fail, read_input

if TYPE_CHECKING:
    from evaluation.records import CrystalRecord
    from evaluation.relax.engine import RelaxResult


class RelaxMLFF(StrEnum):
    """MLFFs that run offline out of the box (their weights ship with the package)."""

    chgnet = "chgnet"
    sevennet = "sevennet"
    sevennet_l3i5 = "7net-l3i5"


ModelOption = Annotated[
    RelaxMLFF, typer.Option(help="The MLFF (its weights ship with the package; no download).")
]


class RelaxDevice(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


#: Output suffixes and the writer each selects.
EXTXYZ_SUFFIXES = (".extxyz", ".xyz")
ZIP_SUFFIXES = (".zip",)
#: The properties each output entry gets from its relaxation (replacing the input's).
RELAX_PROPERTIES = (
    "status",
    "reason",
    "energy_per_atom",
    "n_steps",
    "max_force",
    "level_of_theory",
)
#: How the summary line names each status, in the order it lists them.
STATUS_WORDS = {
    "ok": "converged",
    "not_converged": "not converged",
    "exploded": "exploded",
    "failed": "failed",
}


def relax(
    source: Annotated[
        Path, typer.Argument(help="Crystals to relax (CSV, CIF folder/zip, extxyz, JSON/JSONL).")
    ],
    destination: Annotated[
        Path, typer.Argument(help="Output: .extxyz/.xyz, or .zip (CIFs and metadata.csv).")
    ],
    model: ModelOption = RelaxMLFF.chgnet,
    fmax: Annotated[
        float, typer.Option(help="Converged when every force is below this (eV/Å).")
    ] = 0.05,
    steps: Annotated[int, typer.Option(help="At most this many FIRE steps per crystal.")] = 500,
    device: Annotated[
        RelaxDevice | None,
        typer.Option(help="cpu or cuda (default: the GPU when there is one and --jobs is 1)."),
    ] = None,
    jobs: Annotated[
        int, typer.Option(help="Worker processes, each with one CPU thread (CPU only).")
    ] = 1,
) -> None:
    """Relax crystals (positions and cell) with an MLFF and write the relaxed structures.

    One output entry per input, in input order: the relaxed crystal, or the input one when its
    relaxation exploded or failed, each with its status, reason, energy per atom, steps, max
    force and level of theory. Failures are recorded, never fatal.
    \f

    Parameters
    ----------
    source
        Any readable crystal file or folder.
    destination
        ``.extxyz``/``.xyz`` (energy as the frame's energy; ``status``, ``reason``,
        ``energy_per_atom``, ``n_steps``, ``max_force``, ``level_of_theory`` in its info) or
        ``.zip`` (one CIF per crystal with the same values as ``_crystalforge_*`` items, and a
        ``metadata.csv``).
    model
        The MLFF: ``chgnet`` (CHGNet 0.3.0), ``sevennet`` (7net-0) or ``7net-l3i5``.
    fmax, steps
        FIRE on positions and cell (Fréchet filter) until every atomic force and cell force is
        below ``fmax`` eV/Å, or for at most ``steps`` steps.
    device
        Where the MLFF runs; by default the GPU when there is one (and ``jobs`` is 1).
    jobs
        Worker processes relaxing chunks of the input on the CPU; 1 relaxes in this process.
    """
    writer = _check_options(destination, fmax, steps, jobs)
    target = _device(device, jobs)
    try:
        records = read_input(source).records
        if writer == "extxyz":
            _check_ordered(records, destination)
        started = time.perf_counter()
        results = _relax(records, model.value, fmax, steps, target, jobs)
        elapsed = time.perf_counter() - started
    except bad_input_errors() as error:
        raise fail(str(error)) from None
    relaxed = [_output_record(r, result) for r, result in zip(records, results, strict=True)]
    _write(relaxed, destination, writer)
    typer.echo(summary_line(results, model.value, elapsed, destination))


def _check_options(destination: Path, fmax: float, steps: int, jobs: int) -> str:
    """Check the numbers and the output path before any work; the writer (extxyz or zip)."""
    if not (fmax > 0 and math.isfinite(fmax)):
        raise fail(f"--fmax: must be greater than 0 eV/Å, got {fmax}")
    if steps < 1:
        raise fail(f"--steps: must be at least 1, got {steps}")
    if jobs < 1:
        raise fail(f"--jobs: must be at least 1, got {jobs}")
    name = destination.name.lower()
    if name.endswith(EXTXYZ_SUFFIXES):
        writer = "extxyz"
    elif name.endswith(ZIP_SUFFIXES):
        writer = "zip"
    else:
        raise fail(f"unknown output format for {destination}: use .extxyz, .xyz or .zip")
    if destination.is_dir():
        raise fail(f"{destination} is a folder; give a file name ending in .extxyz or .zip")
    existing = next((p for p in destination.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise fail(f"cannot write {destination}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise fail(f"cannot write {destination}: {existing} is not writable")
    return writer


def _device(requested: RelaxDevice | None, jobs: int) -> str:
    """The device to relax on: ``requested``, or the GPU when there is one and ``jobs`` is 1."""
    if requested is RelaxDevice.cpu or (requested is None and jobs > 1):
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if requested is None:
        return "cuda" if available else "cpu"
    if not available:
        raise fail("--device cuda: no CUDA device is available here (use --device cpu)")
    if jobs > 1:
        raise fail(f"--jobs {jobs}: worker processes relax on the CPU; use --jobs 1 with cuda")
    return "cuda"


def _check_ordered(records: list[CrystalRecord], destination: Path) -> None:
    """extxyz holds one element per site: refuse disordered input before relaxing anything."""
    disordered = [r.label for r in records if not r.structure.is_ordered]
    if disordered:
        more = f" and {len(disordered) - 1} more" if len(disordered) > 1 else ""
        raise fail(
            f"{disordered[0]}{more}: disordered (partial occupancies), which an MLFF cannot "
            f"relax and extxyz cannot hold; write a .zip instead of {destination}"
        )


def _relax(
    records: list[CrystalRecord], model: str, fmax: float, steps: int, device: str, jobs: int
) -> list[RelaxResult]:
    """One result per record, in order: in this process, or in ``jobs`` CPU workers."""
    label = f"relax {model}"
    if jobs > 1:
        from evaluation.relax.parallel import relax_parallel

        structures = [record.structure for record in records]
        return relax_parallel(structures, model, fmax, steps, n_jobs=jobs, desc=label)
    from evaluation.relax.run import relax as run_relax

    return run_relax(records, model, fmax, steps, device=device, progress=label)


def _write(records: list[CrystalRecord], destination: Path, writer: str) -> None:
    """Write ``records`` atomically (the writers replace ``destination`` only when done)."""
    from evaluation.io.crystals import write_cif_zip, write_extxyz

    try:
        if writer == "extxyz":
            write_extxyz(records, destination)
        else:
            write_cif_zip(records, destination, data_items=True)
    except (OSError, ValueError) as error:  # a full disk; a record a writer refuses
        raise fail(f"cannot write {destination}: {error}") from None


def _output_record(record: CrystalRecord, result: RelaxResult) -> CrystalRecord:
    """The output entry of one input: the relaxed crystal with its relaxation's values, or the
    input crystal (and no energy) when the relaxation exploded or failed."""
    from evaluation.records import CrystalRecord

    values = {
        "status": result.status,
        "reason": result.reason,
        "energy_per_atom": result.energy_per_atom,
        "n_steps": result.n_steps,
        "max_force": result.max_force,
        "level_of_theory": result.level_of_theory,
    }
    properties = {k: v for k, v in record.properties.items() if k not in RELAX_PROPERTIES}
    properties |= {k: v for k, v in values.items() if v is not None and v != ""}
    if result.ok and result.structure is not None:
        return CrystalRecord(
            result.structure,
            record.id,
            record.source,
            properties,
            result.energy,
            {"data": {"level_of_theory": result.level_of_theory}},
        )
    return CrystalRecord(record.structure, record.id, record.source, properties)


def summary_line(results: list[RelaxResult], model: str, seconds: float, destination: Path) -> str:
    """``relaxed 24 structures with mlff:chgnet-0.3.0 in 41 s: 22 converged, 1 not converged,
    1 exploded -> out.extxyz``: converged always, the other statuses when any."""
    level = next((r.level_of_theory for r in results if r.level_of_theory), model)
    counts = {status: sum(r.status == status for r in results) for status in STATUS_WORDS}
    parts = [
        f"{count} {STATUS_WORDS[status]}"
        for status, count in counts.items()
        if count or status == "ok"
    ]
    took = f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    noun = "structure" if len(results) == 1 else "structures"
    return (
        f"relaxed {len(results)} {noun} with {level} in {took}: {', '.join(parts)} -> {destination}"
    )
