"""``crystalforge worker``: run the FireWorks jobs of submitted campaigns.

``--launchpad`` is a FireWorks ``my_launchpad.yaml`` (MongoDB) or ``embedded:PATH`` (a
server-less LaunchPad in one JSON file, one process at a time; see :mod:`pipeline.launchpad`).
Campaigns get there with ``crystalforge campaign submit`` (:mod:`pipeline.cli.campaign`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import LaunchPadOption, fail, launchpad_location

worker_app = typer.Typer(
    help="Run FireWorks jobs of submitted campaigns.", no_args_is_help=True, rich_markup_mode=None
)


class WorkerCategory(StrEnum):
    gpu = "gpu"
    cpu = "cpu"
    any = "any"


@worker_app.command("rapidfire")
def worker_rapidfire(
    launchpad: LaunchPadOption,
    category: Annotated[
        WorkerCategory, typer.Option(help="Run only Fireworks of this category.")
    ] = WorkerCategory.any,
    max_jobs: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many jobs (default: until done).")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Rocket threads in this process.")] = 1,
    idle_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for new work when none is ready.")
    ] = 0.0,
    lost_after: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds without a ping after which a running job counts as lost "
            "(default: at once on an embedded LaunchPad, FireWorks' 4 h on MongoDB).",
        ),
    ] = None,
    launch_dir: Annotated[
        Path, typer.Option(help="Folder for the jobs' launcher_* directories.")
    ] = Path("crystalforge-launches"),
) -> None:
    """Run jobs of submitted campaigns in this process until none is left (like rlaunch)."""
    from flows.progress import show_progress
    from pipeline.launchpad import LaunchPadError
    from pipeline.worker import WorkerSettings, run_worker

    location = launchpad_location(launchpad)
    settings = WorkerSettings(
        category="" if category == WorkerCategory.any else category.value,
        max_jobs=max_jobs,
        threads=threads,
        idle_timeout=idle_timeout,
        lost_after=lost_after,
        launch_root=launch_dir.resolve(),
    )
    try:
        with show_progress():
            report = run_worker(location, settings, log=typer.echo)
    except LaunchPadError as error:
        raise fail(str(error)) from None
    typer.echo(
        f"worker done: {len(report.launches)} jobs, {report.count('COMPLETED')} completed, "
        f"{report.count('FIZZLED')} fizzled; lost runs set to rerun: {len(report.lost_fw_ids)}"
    )
