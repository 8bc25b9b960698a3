"""``crystalforge campaign``: run, list, inspect and submit discovery campaigns.

``campaign run`` executes a campaign in this process (jobflow ``run_locally``); ``campaign
submit`` puts it on a FireWorks LaunchPad for ``crystalforge worker`` processes. Both take the
same options, which override the ``--config`` YAML; checks run before any store is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli.common import (
    DEFAULT_STORE,
    CountUnverifiedOption,
    HullOption,
    LaunchPadOption,
    StoreOption,
    bad_input_errors,
    fail,
    launchpad_location,
    opened_store,
    option_error,
)

if TYPE_CHECKING:
    from pipeline.campaign import CampaignConfig

campaign_app = typer.Typer(
    help="Run and inspect discovery campaigns.", no_args_is_help=True, rich_markup_mode=None
)


#: CampaignConfig's defaults for the flags that default to the config (help text only;
#: tests/pipeline/test_cli_errors.py checks they agree).
CAMPAIGN_DEFAULTS = {
    "generator": "rss",
    "num_candidates": 64,
    "top_k": 8,
    "engine": "mlff",
    "seed": 0,
    "max_steps": 300,
}


def campaign_default(field: str) -> str:
    """Help-text suffix naming the default of ``field`` (a key of :data:`CAMPAIGN_DEFAULTS`)."""
    return f"  [default: {CAMPAIGN_DEFAULTS[field]}, or --config's]"


# Options shared by `campaign run` and `campaign submit`.
ChemsysArgument = Annotated[str, typer.Argument(help="Chemical system, e.g. Li-Co-O.")]
GeneratorOption = Annotated[
    str | None,
    typer.Option(help="rss, substitution, file or mattergen." + campaign_default("generator")),
]
InputOption = Annotated[
    Path | None, typer.Option("--input", help="Crystal file for --generator file.")
]
NumCandidatesOption = Annotated[
    int | None, typer.Option(help="Candidates to generate." + campaign_default("num_candidates"))
]
TopKOption = Annotated[
    int | None, typer.Option(help="Candidates sent to the final stage." + campaign_default("top_k"))
]
EngineOption = Annotated[
    str | None,
    typer.Option(
        help="Final-stage engine: mlff, gpaw (DFT) or vasp (DFT)." + campaign_default("engine")
    ),
]
PropertiesOption = Annotated[
    str | None,
    typer.Option(help="DFT properties of the top-K, comma-separated: band_gap,bulk_modulus."),
]
ConfigOption = Annotated[
    Path | None, typer.Option(help="Campaign YAML (e.g. configs/campaign/demo.yaml).")
]
CampaignIdOption = Annotated[str | None, typer.Option(help="Reuse this id to resume a campaign.")]
SeedOption = Annotated[int | None, typer.Option(help="Generator seed." + campaign_default("seed"))]
MaxStepsOption = Annotated[
    int | None, typer.Option(help="Pre-relaxation step budget." + campaign_default("max_steps"))
]
ReferenceOption = Annotated[
    Path | None, typer.Option(help="Novelty/hull reference (default: the shipped set).")
]
CheckpointOption = Annotated[
    Path | None, typer.Option(help="Model checkpoint for --generator mattergen.")
]
ModelStepsOption = Annotated[
    int | None, typer.Option(help="Sampling steps T for --generator mattergen.")
]
HullCampaignOption = Annotated[
    HullOption | None,
    typer.Option(
        "--hull",
        help="Hull for MLFF energies: known-phases (DFT hull of MP-20's near-hull phases, "
        "MP2020 scale; default) or same-level (reference compounds relaxed with each MLFF).",
    ),
]
ReferenceCompleteOption = Annotated[
    bool | None,
    typer.Option(
        "--reference-complete/--reference-partial",
        help="Whether the novelty reference holds every known structure of its compositions "
        "(default: partial for the shipped set, complete for --reference).",
    ),
]


# The campaign options' parameter names (`campaign run`, `campaign submit`) -> config fields.
CAMPAIGN_OPTIONS = {
    "generator": "generator",
    "input_file": "input",
    "num_candidates": "num_candidates",
    "top_k": "top_k",
    "engine": "engine",
    "properties": "properties",
    "seed": "seed",
    "max_steps": "max_steps",
    "reference": "reference",
    "checkpoint": "checkpoint",
    "model_steps": "model_steps",
    "hull": "hull",
    "reference_complete": "reference_complete",
    "count_unverified": "count_unverified",
}


#: Config fields -> the flags that set them, for error messages.
CAMPAIGN_FLAGS = {
    field: "--" + ("input" if name == "input_file" else name.replace("_", "-"))
    for name, field in CAMPAIGN_OPTIONS.items()
}


def campaign_settings(config: Path | None, options: dict[str, Any]) -> CampaignConfig:
    """The campaign YAML (if any) overridden by the command's ``options`` (its arguments by
    parameter name; those in :data:`CAMPAIGN_OPTIONS` are used); bad values exit 2 naming
    the flag."""
    import yaml
    from pydantic import ValidationError

    from pipeline.campaign import CampaignConfig

    try:
        raw = yaml.safe_load(config.read_text()) if config else {}
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"cannot read config {config}: {error}") from None
    overrides = {field: options[name] for name, field in CAMPAIGN_OPTIONS.items()}
    overrides["hull"] = overrides["hull"].value if overrides["hull"] else None
    properties = overrides.pop("properties", None)
    if properties:
        overrides["properties"] = [p.strip() for p in properties.split(",") if p.strip()]
    try:
        settings = CampaignConfig.model_validate(
            (raw or {})
            | {
                k: str(v) if isinstance(v, Path) else v
                for k, v in overrides.items()
                if v is not None
            }
        )
    except ValidationError as error:
        raise option_error(error, CAMPAIGN_FLAGS) from None
    # absolute paths: the jobs may run in another folder (launch directories, cluster nodes)
    files = ("reference", "input", "checkpoint", "vasp_hull_entries")
    return settings.model_copy(
        update={
            name: str(Path(getattr(settings, name)).expanduser().resolve())
            for name in files
            if getattr(settings, name)
        }
    )


@campaign_app.command("run")
def campaign_run(
    chemsys: ChemsysArgument,
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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also print jobflow's log lines.")
    ] = False,
) -> None:
    """Generate, pre-relax, filter, hull, select and score candidates for a chemical system."""
    from pipeline.campaign import check_campaign, run_campaign

    settings = campaign_settings(config, locals())
    try:  # everything checkable is checked before the store is created
        check_campaign(chemsys, settings)
    except (ValueError, *bad_input_errors()) as error:
        raise fail(str(error)) from None
    from flows.progress import show_progress

    with show_progress(), opened_store(store, create=True) as results:
        try:
            document = run_campaign(chemsys, settings, results, campaign_id, verbose=verbose)
        except (ValueError, *bad_input_errors()) as error:
            raise fail(str(error)) from None
    _print_campaign(document)
    if document["status"] != "completed":
        raise typer.Exit(code=1)
    with opened_store(store) as results:
        scored = results.query_candidates(document["campaign_id"])
    best = [d for d in scored if d.get("e_above_hull") is not None][:5]
    if best:
        typer.echo("  best candidates (E_hull eV/atom, compared as, verdict):")
        for d in best:
            typer.echo(
                f"    {d['candidate_id']:<24} {d['formula']:<12} {d['e_above_hull']:8.3f}  "
                f"{d.get('hull_label') or d['level_of_theory']}  {d.get('verdict', '')}"
            )
    _warn_incomplete_hulls(document.get("summary", {}))


def _warn_incomplete_hulls(summary: dict) -> None:
    """One line when S.U.N. verdicts rest on a hull that misses known phases."""
    shaky = summary.get("n_sun", 0) - summary.get("n_sun_complete_hull", 0)
    coverage = summary.get("hull_coverage") or {}
    if shaky > 0:
        typer.secho(
            f"warning: {shaky} of {summary['n_sun']} S.U.N. verdicts rest on a hull that misses "
            f"known phases ({coverage.get('chemsys', '')}: {coverage.get('label', 'incomplete')}); "
            "pass --reference with complete DFT entries (e.g. Alex-MP-ICSD) for firm verdicts",
            err=True,
            fg=typer.colors.YELLOW,
        )


def _print_campaign(document: dict) -> None:
    from pipeline.campaign import effective_status

    summary = document.get("summary", {})
    status = effective_status(document)
    typer.echo(f"campaign {document['campaign_id']} ({document['chemsys']}): {status}")
    if document.get("failure"):
        typer.echo(f"  failure: {document['failure']}")
    if status == "interrupted":
        typer.echo("  its process is gone; run the same command again to resume it")
    for name, key in (
        ("generated", "generated"),
        ("relaxed", "relaxed"),
        ("passed filter", "passed_filter"),
        ("selected", "selected"),
        ("valid", "n_valid"),
        ("unique", "n_unique"),
        ("novel", "n_novel"),
        ("known", "n_known"),
        ("unverified", "n_unverified"),
        ("with E_hull", "n_with_e_above_hull"),
        ("stable", "n_stable"),
        ("S.U.N.", "n_sun"),
        ("S.U.N., full hull", "n_sun_complete_hull"),
        ("not converged", "n_not_converged"),
    ):
        if key in summary:
            typer.echo(f"  {name:<18} {summary[key]}")
    if summary.get("hull"):
        typer.echo(f"  hull               {summary['hull']}")
    coverage = summary.get("hull_coverage")
    if coverage:
        typer.echo(f"  hull coverage      {coverage['chemsys']}: {coverage['label']}")
    if summary.get("explanation"):
        typer.echo(f"  verdicts: {summary['explanation']}")
    timings = document.get("timings", {})
    reused = set(summary.get("reused_jobs") or [])
    if timings:  # a reused stage's seconds are the earlier run's: say so instead
        typer.echo(
            "  seconds: "
            + ", ".join(
                f"{k} reused" if k in reused or k.split("_")[0] in reused else f"{k} {v:.1f}"
                for k, v in timings.items()
            )
        )
    if summary.get("reused_jobs"):
        typer.echo("  reused finished jobs: " + ", ".join(summary["reused_jobs"]))


@campaign_app.command("list")
def campaign_list(store: StoreOption = DEFAULT_STORE) -> None:
    """All campaigns in the store: status, settings, candidates and S.U.N. count."""
    from pipeline.campaign import effective_status

    with opened_store(store) as results:
        documents = results.list_campaigns()
    typer.echo(
        f"{'campaign':<34}{'system':<10}{'status':<12}{'generator':<13}{'N':>5}{'top-K':>6} "
        f"{'engine':<7}{'hull':<13}{'S.U.N.':>7}  created"
    )
    for d in documents:
        config, summary = d.get("config") or {}, d.get("summary") or {}
        typer.echo(
            f"{d['campaign_id']:<34}{d['chemsys']:<10}{effective_status(d):<12}"
            f"{config.get('generator', '-'):<13}{config.get('num_candidates', '-'):>5}"
            f"{config.get('top_k', '-'):>6} {config.get('engine', '-'):<7}"
            f"{config.get('hull', '-'):<13}{summary.get('n_sun', '-'):>7}  "
            f"{(d.get('created_at') or '')[:16].replace('T', ' ')}"
        )
    typer.echo("N: candidates generated; all settings: crystalforge campaign status <campaign>")


@campaign_app.command("status")
def campaign_status(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Status, timings and summary of one campaign."""
    with opened_store(store) as results:
        document = results.campaign(campaign_id)
    if document is None:
        raise fail(f"no campaign {campaign_id!r} in {store}")
    _print_campaign(document)
    config = document.get("config") or {}
    typer.echo(
        "  settings: "
        + ", ".join(f"{k} {v}" for k, v in config.items() if v not in (None, [], {}, ""))
    )
    execution = document.get("execution") or {}
    if execution.get("manager") == "fireworks":  # per-stage progress from the LaunchPad
        from pipeline.launchpad import LaunchPadError, LaunchPadLocation
        from pipeline.progress import campaign_progress

        try:
            location = LaunchPadLocation.parse(execution["launchpad"])
            progress = campaign_progress(location, campaign_id)
        except LaunchPadError as error:
            raise fail(str(error)) from None
        typer.echo(f"  FireWorks Fireworks per stage ({location}):")
        typer.echo("\n".join(progress.lines()))


@campaign_app.command("submit")
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
    location = launchpad_location(launchpad)
    try:  # everything checkable is checked before the store is created
        check_campaign(chemsys, settings, check_dft_here=False)
    except (ValueError, *bad_input_errors()) as error:
        raise fail(str(error)) from None
    with opened_store(store, create=True) as results:
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
        except (ValueError, LaunchPadError, *bad_input_errors()) as error:
            raise fail(str(error)) from None
    typer.echo(f"campaign {submission.campaign_id}: {submission.message}")
    if submission.reused_jobs:
        typer.echo("  already finished in the store: " + ", ".join(submission.reused_jobs))
    if submission.added:
        typer.echo(
            f"  run workers:  crystalforge worker rapidfire --launchpad {location} "
            f"--category {generate_category or 'any'}  (then --category {category or 'any'})"
        )
