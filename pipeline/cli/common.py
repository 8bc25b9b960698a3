"""What every ``crystalforge`` command group shares: one-line errors, options, inputs, stores.

Every command turns bad input into one ``error:`` line on stderr and exit code
:data:`EXIT_BAD_INPUT`; the helpers here are how. Heavy modules (torch, pymatgen, the stores)
are imported inside the functions that need them, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from collections.abc import Callable

    from evaluation.records import ReadResult
    from model.data import CrystalTensors
    from model.train import TrainResult
    from pipeline.launchpad import LaunchPadLocation
    from pipeline.store import ResultsStore

#: The exit code of every bad-input error (click's usage errors use it too).
EXIT_BAD_INPUT = 2

DEFAULT_STORE = Path("crystalforge-store")
StoreOption = Annotated[
    Path,
    typer.Option(
        "--store", help="Embedded store folder (MontyDB/sqlite), or a YAML spec (MongoDB)."
    ),
]
LaunchPadOption = Annotated[
    str,
    typer.Option(
        "--launchpad",
        help="A FireWorks my_launchpad.yaml (MongoDB), or embedded:PATH (server-less, one "
        "process at a time).",
    ),
]
CountUnverifiedOption = Annotated[
    bool | None,
    typer.Option(
        "--count-unverified/--verified-only",
        help="Count 'unverified' novelty (a known MP composition whose structure the reference "
        "cannot confirm) as novel for S.U.N. (default: verified only).",
    ),
]


ExcludeSystemsOption = Annotated[
    str | None,
    typer.Option(
        "--exclude-systems",
        help="Hold these chemical systems out of the training data: table-d3-well-explored "
        "(the paper's choice, D.4.1) or a comma-separated list such as O-Sr-V,Mn-O-Se. A "
        "crystal whose elements are exactly one of them is removed.",
    ),
]


def held_out(tensors: CrystalTensors, spec: str | None) -> CrystalTensors:
    """``tensors`` (a ``CrystalTensors``) less the crystals of the systems ``--exclude-systems
    spec`` names; prints how many were removed. A bad spec exits 2."""
    if not spec:
        return tensors
    from pymatgen.core import Element

    from evaluation.discovery.systems import excluded_systems

    try:
        systems = excluded_systems(spec)
    except ValueError as error:
        raise fail(f"--exclude-systems {spec}: {error}") from None
    numbers = [frozenset(Element(el).Z for el in system) for system in systems]
    kept, removed = tensors.without_systems(numbers)
    shown = ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else "")
    typer.echo(
        f"--exclude-systems {spec}: removed {len(removed)} of {len(tensors)} crystals"
        + (f" ({shown})" if removed else "")
    )
    return kept


class HullOption(StrEnum):
    """Where MLFF energies go (``evaluation.hull.stability``)."""

    known_phases = "known-phases"
    same_level = "same-level"


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; the exit (code 2) for the caller to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=EXIT_BAD_INPUT)


def option_error(error: Exception, fields: dict[str, str] | None = None) -> typer.Exit:
    """A pydantic ``ValidationError`` of settings as one line naming the option.

    A field ``n_jobs`` is the option ``--n-jobs``; a check across fields names the options
    it mentions (``fields``: field -> option).
    """
    detail = error.errors()[0]
    message = detail["msg"].removeprefix("Value error, ")
    if detail["loc"]:
        field = "_".join(map(str, detail["loc"]))
        return fail(f"{(fields or {}).get(field, '--' + field.replace('_', '-'))}: {message}")
    for field, option in (fields or {}).items():
        if "_" in field:  # identifiers like top_k; plain words (input, seed) stay words
            message = re.sub(rf"\b{field}\b", option, message)
    return fail(message)


def output_folder(path: Path, option: str) -> Path:
    """Check, before any work, that ``path`` can be the output folder ``option`` names."""
    if path.exists() and not path.is_dir():
        raise fail(f"{option} {path}: exists and is not a folder")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise fail(f"{option} {path}: {parent} is a file, not a folder")
    return path


def bad_input_errors() -> tuple[type[Exception], ...]:
    """The exception types that mean 'the user's input is wrong', not 'a bug'."""
    # Imported on call: torch and pymatgen load with these modules, which --help need not pay.
    from evaluation.hull.core import LevelOfTheoryMismatch
    from evaluation.records import CrystalInputError
    from evaluation.relax.calculators import MLFFUnavailable
    from flows.dft.schema import DFTUnavailable

    return (CrystalInputError, LevelOfTheoryMismatch, MLFFUnavailable, DFTUnavailable)


def read_input(path: Path) -> ReadResult:
    """Read crystals from ``path`` (any supported format), reporting skipped ones on stderr.

    Raises the types of :func:`bad_input_errors` for unreadable input; callers turn them into
    one line.
    """
    from evaluation.io.crystals import read_crystals

    result = read_crystals(path)
    for problem in result.problems[:20]:
        typer.secho(f"skipped {problem}", err=True, fg=typer.colors.YELLOW)
    if result.n_skipped > 20:
        typer.secho(f"... and {result.n_skipped - 20} more", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"{path}: {result.summary_line()}", err=True)
    return result


@contextmanager
def opened_store(path: Path, *, create: bool = False) -> Iterator[ResultsStore]:
    """The results store at ``path``, connected for the block and closed after it.

    Only commands that write results pass ``create``: reading an embedded store that is not
    there is an error, never an empty new store.
    """
    from pipeline.store import ResultsStore

    if not create and path.suffix not in (".yaml", ".yml") and not path.is_dir():
        raise fail(f"--store {path}: no results store there (run a campaign into it first)")
    try:
        results = ResultsStore.open(path).connect()
    except (OSError, ValueError) as error:
        raise fail(f"cannot open store {path}: {error}") from None
    try:
        yield results
    finally:
        results.close()


def launchpad_location(text: str) -> LaunchPadLocation:
    """The LaunchPad that ``--launchpad text`` names; a bad one exits 2."""
    from pipeline.launchpad import LaunchPadError, LaunchPadLocation

    try:
        return LaunchPadLocation.parse(text)
    except LaunchPadError as error:
        raise fail(str(error)) from None


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


DeviceOption = Annotated[
    Device | None, typer.Option(help="cpu or cuda (default: the GPU when there is one).")
]


def chosen_device(requested: Device | None):
    """The torch device of a ``--device`` option; an unusable one exits 2."""
    from flows.generators.mattergen import resolve_device

    try:
        return resolve_device(requested.value if requested else None)
    except ValueError as error:
        raise fail(f"--device: {error}") from None


def write_json(path: Path, payload: dict) -> None:
    from evaluation.io.crystals import atomic_output

    with atomic_output(path) as handle:
        handle.write(json.dumps(payload, indent=2) + "\n")


def run_and_report(run: Callable[[], TrainResult], out: Path, about: dict) -> None:
    """Run a training (or fine-tuning) call, turning its errors into one line, then write
    ``out/history.json`` and print the summary (:func:`report_training`)."""
    from model.checkpoint import CheckpointError
    from model.config import ConfigError
    from model.data import DatasetError

    try:
        result = run()
    except (ConfigError, DatasetError, CheckpointError, ValueError) as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(f"cannot write to {out}: {error}") from None
    report_training(result, out, about)


def report_training(result: TrainResult, out: Path, about: dict) -> None:
    """Write ``out/history.json`` (``about`` + how training ended) and print a summary."""
    best = result.best_validation
    write_json(
        out / "history.json",
        {
            **about,
            "step": result.step,
            "best_validation": best,
            "skipped_steps": result.skipped_steps,
            "wall_seconds": result.wall_seconds,
            "last_checkpoint": str(result.last_checkpoint),
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "history": result.history,
        },
    )
    typer.echo(f"last checkpoint  {result.last_checkpoint}")
    typer.echo(f"best checkpoint  {result.best_checkpoint or 'none (no finite validation loss)'}")
    typer.echo(f"steps            {result.step} (skipped non-finite: {result.skipped_steps})")
    typer.echo(f"best validation  {'n/a' if best is None else f'{best:.4f}'}")
    typer.echo(f"wall time        {result.wall_seconds:.1f} s")
    typer.echo(f"history          {out / 'history.json'}")
