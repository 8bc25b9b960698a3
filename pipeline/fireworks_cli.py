"""``crystalforge campaign submit`` and ``crystalforge worker rapidfire``: campaigns on FireWorks.

``--launchpad`` is a FireWorks ``my_launchpad.yaml`` (MongoDB) or ``embedded:PATH`` (a
server-less LaunchPad in one JSON file, one process at a time; see :mod:`pipeline.launchpad`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import (
    DEFAULT_STORE,
    CampaignIdOption,
    CheckpointOption,
    ChemsysArgument,
    ConfigOption,
    CountUnverifiedOption,
    EngineOption,
    GeneratorOption,
    HullCampaignOption,
    InputOption,
    MaxStepsOption,
    ModelStepsOption,
    NumCandidatesOption,
    PropertiesOption,
    ReferenceCompleteOption,
    ReferenceOption,
    SeedOption,
    StoreOption,
    TopKOption,
    _bad_input_errors,
    _fail,
    _opened_store,
    campaign_settings,
)

worker_app = typer.Typer(
    help="Run FireWorks jobs of submitted campaigns.", no_args_is_help=True, rich_markup_mode=None
)

LaunchPadOption = Annotated[
    str,
    typer.Option(
        "--launchpad",
        help="A FireWorks my_launchpad.yaml (MongoDB), or embedded:PATH (server-less, one "
        "process at a time).",
    ),
]


class WorkerCategory(StrEnum):
    gpu = "gpu"
    cpu = "cpu"
    any = "any"


def _location(text: str):
    from pipeline.launchpad import LaunchPadError, LaunchPadLocation

    try:
        return LaunchPadLocation.parse(text)
    except LaunchPadError as error:
        raise _fail(str(error)) from None


def campaign_submit(
    chemsys: ChemsysArgument,
    launchpad: LaunchPadOption,
    generator: GeneratorOption = None,
    input_file: InputOption = None,
    num_candidates: NumCandidatesOption = None,
    top_k: TopKOption = None,
    engine: EngineOption = None,
    properties: PropertiesOption = None,
    config: ConfigOption = None,
    store: StoreOption = DEFAULT_STORE,
    campaign_id: CampaignIdOption = None,
    seed: SeedOption = None,
    max_steps: MaxStepsOption = None,
    reference: ReferenceOption = None,
    checkpoint: CheckpointOption = None,
    model_steps: ModelStepsOption = None,
    hull: HullCampaignOption = None,
    reference_complete: ReferenceCompleteOption = None,
    count_unverified: CountUnverifiedOption = None,
    generate_category: Annotated[
        str, typer.Option(help="FireWorks category of the generate job ('' = any worker).")
    ] = "gpu",
    category: Annotated[
        str, typer.Option(help="FireWorks category of every other job ('' = any worker).")
    ] = "cpu",
    rerun_fizzled: Annotated[
        bool, typer.Option(help="Campaign already submitted: rerun its FIZZLED jobs.")
    ] = False,
) -> None:
    """Submit a campaign to a FireWorks LaunchPad; workers run it (`crystalforge worker`)."""
    from pipeline.campaign import check_campaign
    from pipeline.launchpad import LaunchPadError
    from pipeline.submit import Categories, submit_campaign

    settings = campaign_settings(config, locals())
    location = _location(launchpad)
    try:  # everything checkable is checked before the store is created
        check_campaign(chemsys, settings, check_dft_here=False)
    except (ValueError, *_bad_input_errors()) as error:
        raise _fail(str(error)) from None
    with _opened_store(store, create=True) as results:
        try:
            submission = submit_campaign(
                chemsys,
                settings,
                results,
                location,
                campaign_id,
                Categories(generate=generate_category, default=category),
                rerun_fizzled,
            )
        except (ValueError, LaunchPadError, *_bad_input_errors()) as error:
            raise _fail(str(error)) from None
    typer.echo(f"campaign {submission.campaign_id}: {submission.message}")
    if submission.reused_jobs:
        typer.echo("  already finished in the store: " + ", ".join(submission.reused_jobs))
    if submission.added:
        typer.echo(
            f"  run workers:  crystalforge worker rapidfire --launchpad {location} "
            f"--category {generate_category or 'any'}  (then --category {category or 'any'})"
        )


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

    location = _location(launchpad)
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
        raise _fail(str(error)) from None
    typer.echo(
        f"worker done: {len(report.launches)} jobs, {report.count('COMPLETED')} completed, "
        f"{report.count('FIZZLED')} fizzled; lost runs set to rerun: {len(report.lost_fw_ids)}"
    )


def register(app: typer.Typer, campaign_app: typer.Typer) -> None:
    """Add ``campaign submit`` and the ``worker`` commands."""
    campaign_app.command("submit")(campaign_submit)
    worker_app.command("rapidfire")(worker_rapidfire)
    app.add_typer(worker_app, name="worker")
