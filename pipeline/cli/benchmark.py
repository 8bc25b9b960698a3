"""``crystalforge benchmark``: rerun the paper's discovery benchmarks.

``benchmark chemsys`` runs MatterGen, random structure search and substitution on the
chemical systems of Table D3 (Fig. 3); every system × method is a campaign in the results
store, so the benchmark resumes and runs on FireWorks (``--launchpad``) as well as here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.common import (
    DEFAULT_STORE,
    StoreOption,
    bad_input_errors,
    fail,
    launchpad_location,
    opened_store,
    output_folder,
)

benchmark_app = typer.Typer(
    help="Rerun the paper's discovery benchmarks (Fig. 3, Fig. 5g-h).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ResultsOption = Annotated[
    Path, typer.Option("--results", help="Folder for the tables (.md, .json) and figures.")
]


@benchmark_app.command("chemsys")
def benchmark_chemsys(
    systems: Annotated[
        str,
        typer.Option(
            help="table-d3 (the 27 systems), table-d3:well|partially|not, or a comma-separated "
            "list such as O-Sr-V,Li-Pr-Te."
        ),
    ] = "table-d3",
    preset: Annotated[
        str,
        typer.Option(help="Budgets: tiny (CI), laptop (2 cores, hours), paper, or a YAML file."),
    ] = "laptop",
    store: StoreOption = DEFAULT_STORE,
    results: ResultsOption = Path("benchmarks/results"),
    launchpad: Annotated[
        str | None,
        typer.Option(
            "--launchpad",
            help="Submit the campaigns to this FireWorks LaunchPad instead of running them "
            "here; run again after the workers finish to submit RSS round 2 and to score.",
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="MatterGen checkpoint (default: the preset's, else the shipped one)."),
    ] = None,
    score_only: Annotated[
        bool,
        typer.Option(
            "--score-only",
            help="Run and submit nothing: score the systems whose campaigns have all finished "
            "(e.g. while another process or FireWorks workers run the rest).",
        ),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            help="Run the systems in this many local processes at once (every N-th system "
            "each, one core each), then score them all.",
        ),
    ] = 1,
    carry: Annotated[
        Path | None,
        typer.Option(
            "--carry",
            help="chemsys.json of an earlier run of the same preset (another store, another "
            "day): take its scored systems as they are instead of running them again.",
        ),
    ] = None,
    no_document: Annotated[
        bool, typer.Option("--no-document", hidden=True, help="A --jobs child: save no report.")
    ] = False,
) -> None:
    """MatterGen vs random structure search vs substitution on Table D3's systems (Fig. 3)."""
    from evaluation.discovery.report import write_chemsys_report
    from evaluation.discovery.systems import benchmark_systems
    from pipeline.benchmarks.chemsys import (
        ScoreOnly,
        check_benchmark,
        fireworks_runner,
        local_runner,
        run_benchmark,
    )
    from pipeline.benchmarks.presets import load_preset

    try:  # everything is checked before the store is created
        chosen = benchmark_systems(systems)
    except ValueError as error:
        raise fail(f"--systems {systems}: {error}") from None
    try:
        settings = load_preset(preset)
    except ValueError as error:
        raise fail(f"--preset {preset}: {error}") from None
    if checkpoint is not None:
        campaign = {**settings.campaign, "checkpoint": str(checkpoint)}
        settings = settings.model_copy(update={"campaign": campaign})
    location = launchpad_location(launchpad) if launchpad else None
    carried = _carried(carry, settings) if carry else {}
    if jobs < 1:
        raise fail(f"--jobs {jobs}: must be at least 1")
    if jobs > 1 and (location or score_only):
        used = "--launchpad" if location else "--score-only"
        raise fail(f"--jobs {jobs}: runs the systems here, so it cannot go with {used}")
    output_folder(results, "--results")
    try:
        check_benchmark(chosen, settings, check_dft_here=location is None)
    except (ValueError, *bad_input_errors()) as error:
        raise fail(str(error)) from None
    from flows.progress import show_progress
    from pipeline.launchpad import LaunchPadError

    started = time.perf_counter()
    failed = []
    to_run = [s.name for s in chosen if s.name not in carried]
    if jobs > 1 and len(to_run) > 1:
        failed = _run_in_processes(to_run, jobs, preset, store, results, checkpoint)
        score_only = True  # the children ran every campaign; score them all here
    with show_progress(), opened_store(store, create=not score_only) as opened:
        if score_only:
            runner = ScoreOnly(opened)
        elif location:
            runner = fireworks_runner(opened, location)
        else:
            runner = local_runner(opened)
        try:
            document = run_benchmark(
                chosen,
                settings,
                opened,
                runner,
                typer.echo,
                save=not no_document,
                started=started,
                carried=carried,
            )
        except (ValueError, LaunchPadError, *bad_input_errors()) as error:
            raise fail(str(error)) from None
    if no_document:
        return
    written = write_chemsys_report(document, results)
    scored, pending = len(document["results"]), len(document["pending"])
    typer.echo(
        f"benchmark {document['benchmark_id']}: {scored} of {scored + pending} systems scored; "
        f"wrote {', '.join(str(p) for p in written[:2])} and {len(written) - 2} figures"
    )
    if pending:
        typer.echo("  run the same command again to resume the unscored systems")
    if failed:
        raise typer.Exit(code=1)


def _carried(path: Path, settings: Any) -> dict[str, dict[str, Any]]:
    """The scored systems of ``--carry path``; a bad file exits 2 naming it."""
    import json

    from pipeline.benchmarks.chemsys import carried_scores

    try:
        document = json.loads(path.read_text())
        return carried_scores(document, settings)
    except (OSError, ValueError, AttributeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise fail(f"--carry {path}: {reason}") from None


def _run_in_processes(
    names: list[str],
    jobs: int,
    preset: str,
    store: Path,
    results: Path,
    checkpoint: Path | None,
) -> list[str]:
    """Run ``benchmark chemsys`` on every ``jobs``-th system in ``jobs`` child processes on
    one store; returns one line per child that failed (its systems stay pending)."""
    from pipeline.benchmarks.processes import partition, run_processes

    with opened_store(store, create=True):
        pass  # created once here, not by two children at the same moment
    parts = partition(names, jobs)
    typer.echo(f"benchmark: {len(names)} systems in {len(parts)} processes")

    def argv_for(part: list[str]) -> list[str]:
        argv = ["benchmark", "chemsys", "--systems", ",".join(part), "--preset", preset]
        argv += ["--store", str(store), "--results", str(results), "--no-document"]
        return argv + (["--checkpoint", str(checkpoint)] if checkpoint else [])

    failed = [
        f"process {k + 1} ({','.join(ended.systems)}) exited with code {ended.returncode}"
        for k, ended in enumerate(run_processes(argv_for, parts, say=typer.echo))
        if ended.returncode != 0
    ]
    for line in failed:
        typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)
    return failed


@benchmark_app.command("property")
def benchmark_property(
    property: Annotated[
        str, typer.Option("--property", help="bulk_modulus, magnetic_density or hhi.")
    ],
    threshold: Annotated[float, typer.Option(help="The constraint: property >= threshold.")],
    budgets: Annotated[
        str, typer.Option(help="Property-calculation budgets, comma-separated.")
    ] = "20,60,180",
    samples: Annotated[int, typer.Option(min=1, help="MatterGen samples.")] = 64,
    data: Annotated[
        Path, typer.Option(help="The fine-tuning data: a `data build` folder with its labels.")
    ] = Path("runs/dataset-core"),
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint tuned on the property (default: the shipped one)."),
    ] = None,
    model_steps: Annotated[
        int | None, typer.Option(min=1, help="Sampling steps T (default: the model's).")
    ] = None,
    max_plausible: Annotated[
        float | None,
        typer.Option(
            help="Values above are outliers, not hits (default: the paper's, 600 GPa for bulk "
            "modulus, 0.3 for magnetic density)."
        ),
    ] = None,
    work: Annotated[
        Path, typer.Option(help="Folder for the cached samples and computed values.")
    ] = Path("crystalforge-benchmarks"),
    store: StoreOption = DEFAULT_STORE,
    results: ResultsOption = Path("benchmarks/results"),
) -> None:
    """S.U.N. structures meeting a property constraint per calculation budget: MatterGen vs
    screening vs the labelled data (Fig. 5g-h)."""
    from pydantic import ValidationError

    from pipeline.benchmarks.property import (
        PropertyBenchmarkSettings,
        check_settings,
        run_property_benchmark,
        write_property_report,
    )

    try:
        chosen = [int(b) for b in budgets.split(",") if b.strip()]
    except ValueError:
        raise fail(f"--budgets {budgets}: expected integers such as 20,60,180") from None
    try:
        settings = PropertyBenchmarkSettings(
            property=property,
            threshold=threshold,
            budgets=chosen,
            samples=samples,
            checkpoint=str(checkpoint) if checkpoint else None,
            data=str(data),
            model_steps=model_steps,
            max_plausible=max_plausible,
        )
    except ValidationError as error:
        raise fail(f"--budgets {budgets}: {error.errors()[0]['msg']}") from None
    output_folder(results, "--results")
    output_folder(work, "--work")
    try:
        checkpoint_file = check_settings(settings)
    except ValueError as error:
        raise fail(str(error)) from None
    with opened_store(store, create=True) as opened:
        document = run_property_benchmark(settings, opened, work, typer.echo, checkpoint_file)
    written = write_property_report(document, results)
    hits = document["methods"]
    line = ", ".join(
        f"B={b}: mattergen {hits['mattergen']['hits'][str(b)]['hits']}, "
        f"screening {hits['screening']['hits'][str(b)]['hits']}"
        for b in document["budgets"]
    )
    typer.echo(f"benchmark {document['benchmark_id']}: {line}; labelled data "
               f"{hits['labelled data']['hits']}")  # fmt: skip
    typer.echo(f"wrote {', '.join(str(p) for p in written)}")
