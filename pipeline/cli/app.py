"""The root ``crystalforge`` app: the command tree, ``--version`` and the console entry point.

This is the one module that knows every command group; the groups know only
:mod:`pipeline.cli.common`. Process-wide settings (thread counts, offline model hubs, warning
filters) are applied when a command runs, never on import.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pipeline.cli import (
    benchmark,
    campaign,
    data,
    dft,
    evaluate,
    explore,
    finetune,
    model,
    relax,
    results,
    worker,
)
from pipeline.cli.common import EXIT_BAD_INPUT
from pipeline.compat.typer import click_exceptions

#: ``crystalforge --help`` lists commands in the order a user meets them.
COMMAND_ORDER = (
    "campaign", "results", "generate", "evaluate", "relax", "data", "train", "finetune", "dft",
    "worker", "benchmark", "explore",
    "version",
)  # fmt: skip


class OrderedGroup(TyperGroup):
    """The top-level group, listing its commands in :data:`COMMAND_ORDER`."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: COMMAND_ORDER.index(n) if n in COMMAND_ORDER else 99)


app = typer.Typer(
    name="crystalforge",
    help=(
        "CrystalForge: generative materials discovery. Generate crystals with a MatterGen-style "
        "diffusion model, pre-relax them with MLFFs, and score them for stability, uniqueness "
        "and novelty (S.U.N.)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: wraps at the terminal width, never truncates an option
    cls=OrderedGroup,
)


def apply_process_defaults() -> None:
    """Set the environment defaults and warning filters every ``crystalforge`` command runs with.

    Commands import torch on call, so setting the variables here (before any command body)
    still comes before torch reads them; values the user set win.
    """
    # MLFF work on small machines: one thread per process is 4-8x faster than oversubscription,
    # and matgl/huggingface must never hang on a download.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # pymatgen orders formulas by electronegativity and warns for every noble-gas formula it
    # meets (He, Ne, Ar have none); harmless, and the reference set holds their polymorphs.
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")
    # jobflow's run_locally calls monty's deprecated ``cd`` once per job: not the user's concern.
    warnings.filterwarnings("ignore", message=r"cd is deprecated", category=FutureWarning)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version as package_version

        typer.echo(f"crystalforge {package_version('crystalforge')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    # Runs before every command, also when ``app`` is called directly (tests, worker helper
    # scripts) rather than through main(); the app's help is the Typer's.
    apply_process_defaults()


def version() -> None:
    """Print the CrystalForge version."""
    from importlib.metadata import version as package_version

    typer.echo(f"crystalforge {package_version('crystalforge')}")


# The command tree. Top-level commands are listed in COMMAND_ORDER whatever the order here;
# a group lists its commands in the order they are added.
app.command()(evaluate.evaluate)
app.command("relax")(relax.relax)
app.add_typer(data.data_app, name="data")
app.add_typer(campaign.campaign_app, name="campaign")
app.add_typer(results.results_app, name="results")
app.command()(version)
data.data_app.command("tensors")(model.data_tensors)  # after info, convert, build-reference
data.data_app.command("build")(model.data_build)
data.data_app.command("labels")(model.data_labels)
app.command("train")(model.train)
app.command("finetune")(finetune.finetune)
app.command("generate")(model.generate)
app.add_typer(dft.dft_app, name="dft")
app.add_typer(worker.worker_app, name="worker")
app.add_typer(benchmark.benchmark_app, name="benchmark")
app.command("explore")(explore.explore)


def main() -> None:
    """The console entry point: ``app`` with usage errors (unknown option, bad choice) as one
    ``error:`` line naming the option, like every other bad input."""
    apply_process_defaults()
    exceptions = click_exceptions()
    try:
        code = app(prog_name="crystalforge", standalone_mode=False)
    except exceptions.NoArgsIsHelpError as error:
        typer.echo(error.ctx.get_help() if error.ctx else str(error))
        code = 0
    except exceptions.UsageError as error:
        command = error.ctx.command_path if error.ctx else "crystalforge"
        message = " ".join(error.format_message().replace("Value error, ", "").split())
        typer.secho(f"error: {message} (see {command} --help)", err=True, fg=typer.colors.RED)
        code = EXIT_BAD_INPUT
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
