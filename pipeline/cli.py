"""The ``crystalforge`` command line.

Every command turns bad input into one specific line on stderr and exit code 2; nothing that
was already written is touched when a command fails.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from pipeline.campaign import CampaignConfig
    from pipeline.store import ResultsStore

# MLFF work on small machines: one thread per process is 4-8x faster than oversubscription,
# and matgl/huggingface must never hang on a download. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pymatgen orders formulas by electronegativity and warns for every noble-gas formula it meets
# (He, Ne, Ar have none); harmless, and the reference set holds their elemental polymorphs.
warnings.filterwarnings("ignore", message="No Pauling electronegativity")
# jobflow's run_locally calls monty's deprecated ``cd`` once per job: not the user's concern.
warnings.filterwarnings("ignore", message=r"cd is deprecated", category=FutureWarning)

#: ``crystalforge --help`` lists commands in the order a user meets them.
COMMAND_ORDER = (
    "campaign", "results", "generate", "evaluate", "data", "train", "dft", "worker", "version"
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
    # the app's options; its help is the Typer's
    return None


data_app = typer.Typer(
    help="Inspect, convert and build crystal data sets.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")
campaign_app = typer.Typer(
    help="Run and inspect discovery campaigns.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(campaign_app, name="campaign")
results_app = typer.Typer(
    help="Query, show and export campaign results.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(results_app, name="results")

DEFAULT_STORE = Path("crystalforge-store")
StoreOption = Annotated[
    Path,
    typer.Option(
        "--store", help="Embedded store folder (MontyDB/sqlite), or a YAML spec (MongoDB)."
    ),
]

EXIT_BAD_INPUT = 2


class HullOption(StrEnum):
    """Where MLFF energies go (``evaluation.hull.stability``)."""

    known_phases = "known-phases"
    same_level = "same-level"


class RelaxModel(StrEnum):
    """MLFFs that run offline out of the box (their weights ship with the package)."""

    none = "none"
    chgnet = "chgnet"
    sevennet = "sevennet"
    sevennet_l3i5 = "7net-l3i5"


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=EXIT_BAD_INPUT)


def _option_error(error: Exception, fields: dict[str, str] | None = None) -> typer.Exit:
    """A pydantic ``ValidationError`` of settings as one line naming the option: a field
    ``n_jobs`` is the option ``--n-jobs``; a check across fields names the options it
    mentions (``fields``: field -> option)."""
    detail = error.errors()[0]
    message = detail["msg"].removeprefix("Value error, ")
    if detail["loc"]:
        field = "_".join(map(str, detail["loc"]))
        return _fail(f"{(fields or {}).get(field, '--' + field.replace('_', '-'))}: {message}")
    for field, option in (fields or {}).items():
        if "_" in field:  # identifiers like top_k; plain words (input, seed) stay words
            message = re.sub(rf"\b{field}\b", option, message)
    return _fail(message)


def _output_folder(path: Path, option: str) -> Path:
    """Check, before any work, that ``path`` can be the output folder ``option`` names."""
    if path.exists() and not path.is_dir():
        raise _fail(f"{option} {path}: exists and is not a folder")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise _fail(f"{option} {path}: {parent} is a file, not a folder")
    return path


def _bad_input_errors() -> tuple[type[Exception], ...]:
    """The exception types that mean 'the user's input is wrong', not 'a bug'."""
    # Imported on call: torch and pymatgen load with these modules, which --help need not pay.
    from evaluation.hull.core import LevelOfTheoryMismatch
    from evaluation.records import CrystalInputError
    from evaluation.relax.calculators import MLFFUnavailable
    from flows.dft.schema import DFTUnavailable

    return (CrystalInputError, LevelOfTheoryMismatch, MLFFUnavailable, DFTUnavailable)


def _read(path: Path):
    from evaluation.io.crystals import read_crystals

    result = read_crystals(path)
    for problem in result.problems[:20]:
        typer.secho(f"skipped {problem}", err=True, fg=typer.colors.YELLOW)
    if result.n_skipped > 20:
        typer.secho(f"... and {result.n_skipped - 20} more", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"{path}: {result.summary_line()}", err=True)
    return result


#: EvaluationSettings' defaults for the flags that default to the config (help text only;
#: tests/pipeline/test_cli_errors.py checks they agree).
EVALUATE_DEFAULTS = {
    "relax": "none",
    "stability_threshold": 0.1,
    "n_jobs": 1,
    "relax_fmax": 0.05,
    "relax_steps": 500,
}


def _evaluate_default(field: str) -> str:
    return f"  [default: {EVALUATE_DEFAULTS[field]}, or --config's]"


@app.command()
def evaluate(
    samples: Annotated[
        Path, typer.Argument(help="Crystals to evaluate (CSV, CIF folder/zip, extxyz, JSON/JSONL).")
    ],
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Novelty/hull reference (any readable format). Default: the shipped set."
        ),
    ] = None,
    relax: Annotated[
        RelaxModel | None,
        typer.Option(
            help="Relax with this offline MLFF first; E_hull then uses its energies."
            + _evaluate_default("relax")
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option(help="Folder for summary.json, structures.csv and plots.")
    ] = Path("crystalforge-output"),
    config: Annotated[
        Path | None,
        typer.Option(help="Evaluation settings YAML (e.g. configs/evaluation/paper.yaml)."),
    ] = None,
    stability_threshold: Annotated[
        float | None,
        typer.Option(
            help="Stable means E_hull at most this (eV/atom; the paper's)."
            + _evaluate_default("stability_threshold")
        ),
    ] = None,
    disorder: Annotated[
        bool | None,
        typer.Option(
            "--disorder/--no-disorder",
            help="Ordered–disordered matcher: ordered approximants of a known alloy are not novel.",
        ),
    ] = None,
    n_jobs: Annotated[
        int | None,
        typer.Option(
            help="Worker processes for relaxation and matching." + _evaluate_default("n_jobs")
        ),
    ] = None,
    fmax: Annotated[
        float | None,
        typer.Option(help="Relaxation force criterion (eV/Å)." + _evaluate_default("relax_fmax")),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(help="Relaxation step budget." + _evaluate_default("relax_steps")),
    ] = None,
    hull_reference: Annotated[
        Path | None,
        typer.Option(help="Saved MLFF hull (hull.json.gz of `data build`) for E_hull."),
    ] = None,
    hull: Annotated[
        HullOption | None,
        typer.Option(
            help="Hull for MLFF energies: known-phases (DFT hull of MP-20's near-hull phases, "
            "MP2020 scale) or same-level (reference compounds relaxed with the MLFF)."
        ),
    ] = None,
    reference_complete: Annotated[
        bool | None,
        typer.Option(
            "--reference-complete/--reference-partial",
            help="Whether the reference holds every known structure of its compositions "
            "(default: partial for the shipped set, complete for --reference). A partial "
            "reference makes a known MP composition it cannot match 'unverified', not novel.",
        ),
    ] = None,
    count_unverified: CountUnverifiedOption = None,
) -> None:
    """Score crystals: validity, uniqueness, novelty, stability and S.U.N. rate."""
    from pydantic import ValidationError

    try:
        from evaluation.reference import load_reference
        from evaluation.report.evaluate import EvaluationSettings
        from evaluation.report.evaluate import evaluate as run_evaluation

        settings = EvaluationSettings.from_yaml(config) if config else EvaluationSettings()
        overrides = {
            "relax": relax.value if relax else None,
            "stability_threshold": stability_threshold,
            "disorder": disorder,
            "n_jobs": n_jobs,
            "relax_fmax": fmax,
            "relax_steps": steps,
            "hull_reference": str(hull_reference) if hull_reference else None,
            "hull": hull.value if hull else None,
            "reference_complete": reference_complete,
            "count_unverified": count_unverified,
        }
        try:
            settings = EvaluationSettings.model_validate(
                settings.model_dump() | {k: v for k, v in overrides.items() if v is not None}
            )
        except ValidationError as error:
            raise _option_error(error, {"relax_fmax": "--fmax", "relax_steps": "--steps"}) from None
        _output_folder(output, "--output")
        samples_read = _read(samples)
        reference_read = load_reference(reference)
        reference_name = str(reference) if reference else "shipped reference set"
        typer.echo(f"reference ({reference_name}): {reference_read.summary_line()}", err=True)
        result = run_evaluation(
            samples_read.records,
            reference_read.records,
            settings,
            reference_name=reference_name,
            user_reference=reference is not None,
        )
        result.summary["input"] = {"path": str(samples), "n_skipped": samples_read.n_skipped}
        written = result.write(output)
    except _bad_input_errors() as error:
        raise _fail(str(error)) from None
    _print_summary(result.summary)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


def _print_summary(summary: dict) -> None:
    def pct(name: str) -> str:
        value = summary.get(name)
        return "n/a" if value is None else f"{100 * value:5.1f}%"

    rows = [
        ("structures", str(summary["n_structures"])),
        (
            "valid",
            f"{pct('frac_valid')}  (structure {pct('frac_valid_structure')}, "
            f"composition {pct('frac_valid_composition')})",
        ),
        ("unique", pct("frac_unique")),
        ("novel", pct("frac_novel")),
        ("unique & novel", pct("frac_unique_novel")),
    ]
    reference = summary["reference"]
    rows.insert(
        4,
        (
            "  novelty",
            f"known {summary['n_known']}, unverified {summary['n_unverified']} (known MP "
            f"compositions the {'complete' if reference['complete'] else 'partial'} reference "
            "cannot confirm)",
        ),
    )
    if summary.get("stability_evaluated"):
        threshold = summary["settings"]["stability_threshold"]
        rows += [
            (
                f"stable (<={threshold})",
                f"{pct('frac_stable')}   on hull (<=0) {pct('frac_on_hull')}",
            ),
            ("S.U.N.", f"{pct('frac_sun')}   S.U.N. on hull {pct('frac_sun_on_hull')}"),
            ("S.U.N., full hull", pct("frac_sun_complete_hull")),
            (
                "avg E_hull",
                f"{summary['avg_e_above_hull']:.3f} eV/atom  ({summary['level_of_theory']})",
            ),
            ("hull", summary["hull"]),
        ]
    elif summary.get("carried_energies"):
        rows.append(
            (
                "stability",
                f"not evaluated: none of the {summary['carried_energies']} carried energies "
                "could be placed on a hull (see hull_message in structures.csv)",
            )
        )
    else:
        rows.append(
            ("stability", "not evaluated: the samples carry no energies (use --relax chgnet)")
        )
    if summary.get("avg_rmsd") is not None:
        rows.append(
            (
                "avg RMSD to relaxed",
                f"{summary['avg_rmsd']:.3f} Å   failures {summary['n_relax_failed']}",
            )
        )
    typer.echo("\n".join(f"{name:<21}{value}" for name, value in rows))
    typer.echo(
        "shares of all structures. valid: every distance >= 0.5 Å and volume >= 0.1 Å³ "
        "(structure) and SMACT charge balance (composition); novel: matches no reference "
        "structure; stable: E_hull <= the threshold; S.U.N.: stable, unique and novel, validity "
        "not required (MatterGen's definition), so S.U.N. can exceed valid"
    )
    incomplete = summary.get("sun_on_incomplete_hulls") or []
    shaky = summary.get("n_sun", 0) - summary.get("n_sun_complete_hull", 0)
    if incomplete and shaky > 0:
        more = f"; +{len(incomplete) - 1} more systems" if len(incomplete) > 1 else ""
        typer.secho(
            f"warning: {shaky} of {summary['n_sun']} S.U.N. verdicts rest on hulls that miss "
            f"known phases ({incomplete[0]}{more}); pass --reference with complete DFT entries "
            "(e.g. Alex-MP-ICSD) for firm verdicts",
            err=True,
            fg=typer.colors.YELLOW,
        )


@data_app.command("info")
def data_info(
    path: Annotated[Path, typer.Argument(help="A crystal file or folder in any supported format.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Counts, elements, atoms-per-cell histogram and properties of a crystal data set."""
    from evaluation.io.data_info import summarize as summarize_data

    try:
        result = _read(path)
    except _bad_input_errors() as error:
        raise _fail(str(error)) from None
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
        raise _fail(f"unknown output format for {destination}: use .extxyz, .zip or .jsonl[.gz]")
    try:
        result = _read(source)
        writer(result.records, destination)
    except _bad_input_errors() as error:
        raise _fail(str(error)) from None
    except ValueError as error:  # e.g. a disordered structure into extxyz
        raise _fail(str(error)) from None
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
        raise _fail(f"shared data folder not found: {shared}")
    manifest = build_reference_set(shared, out)
    typer.echo(json.dumps(manifest.get("counts", manifest), indent=2))


@contextmanager
def _opened_store(path: Path, *, create: bool = False) -> Iterator[ResultsStore]:
    """The results store at ``path``, connected for the block and closed after it.

    Only commands that write results pass ``create``: reading an embedded store that is not
    there is an error, never an empty new store.
    """
    from pipeline.store import ResultsStore

    if not create and path.suffix not in (".yaml", ".yml") and not path.is_dir():
        raise _fail(f"--store {path}: no results store there (run a campaign into it first)")
    try:
        results = ResultsStore.open(path).connect()
    except (OSError, ValueError) as error:
        raise _fail(f"cannot open store {path}: {error}") from None
    try:
        yield results
    finally:
        results.close()


#: CampaignConfig's defaults for the flags that default to the config (help text only;
#: tests/flows/test_campaign.py checks they agree).
CAMPAIGN_DEFAULTS = {
    "generator": "rss",
    "num_candidates": 64,
    "top_k": 8,
    "engine": "mlff",
    "seed": 0,
    "max_steps": 300,
}


def _default(field: str) -> str:
    return f"  [default: {CAMPAIGN_DEFAULTS[field]}, or --config's]"


# Options shared by `campaign run` and `campaign submit`.
ChemsysArgument = Annotated[str, typer.Argument(help="Chemical system, e.g. Li-Co-O.")]
GeneratorOption = Annotated[
    str | None, typer.Option(help="rss, substitution, file or mattergen." + _default("generator"))
]
InputOption = Annotated[
    Path | None, typer.Option("--input", help="Crystal file for --generator file.")
]
NumCandidatesOption = Annotated[
    int | None, typer.Option(help="Candidates to generate." + _default("num_candidates"))
]
TopKOption = Annotated[
    int | None, typer.Option(help="Candidates sent to the final stage." + _default("top_k"))
]
EngineOption = Annotated[
    str | None,
    typer.Option(help="Final-stage engine: mlff, gpaw (DFT) or vasp (DFT)." + _default("engine")),
]
PropertiesOption = Annotated[
    str | None,
    typer.Option(help="DFT properties of the top-K, comma-separated: band_gap,bulk_modulus."),
]
ConfigOption = Annotated[
    Path | None, typer.Option(help="Campaign YAML (e.g. configs/campaign/demo.yaml).")
]
CampaignIdOption = Annotated[str | None, typer.Option(help="Reuse this id to resume a campaign.")]
SeedOption = Annotated[int | None, typer.Option(help="Generator seed." + _default("seed"))]
MaxStepsOption = Annotated[
    int | None, typer.Option(help="Pre-relaxation step budget." + _default("max_steps"))
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
CountUnverifiedOption = Annotated[
    bool | None,
    typer.Option(
        "--count-unverified/--verified-only",
        help="Count 'unverified' novelty (a known MP composition whose structure the reference "
        "cannot confirm) as novel for S.U.N. (default: verified only).",
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
        raise _fail(f"cannot read config {config}: {error}") from None
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
        raise _option_error(error, CAMPAIGN_FLAGS) from None
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
    except (ValueError, *_bad_input_errors()) as error:
        raise _fail(str(error)) from None
    from flows.progress import show_progress

    with show_progress(), _opened_store(store, create=True) as results:
        try:
            document = run_campaign(chemsys, settings, results, campaign_id, verbose=verbose)
        except (ValueError, *_bad_input_errors()) as error:
            raise _fail(str(error)) from None
    _print_campaign(document)
    if document["status"] != "completed":
        raise typer.Exit(code=1)
    with _opened_store(store) as results:
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

    with _opened_store(store) as results:
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
    with _opened_store(store) as results:
        document = results.campaign(campaign_id)
    if document is None:
        raise _fail(f"no campaign {campaign_id!r} in {store}")
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
            raise _fail(str(error)) from None
        typer.echo(f"  FireWorks Fireworks per stage ({location}):")
        typer.echo("\n".join(progress.lines()))


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

    with _opened_store(store) as results:
        if campaign is not None and results.campaign(campaign) is None:
            raise _fail(f"--campaign {campaign}: no such campaign in {store}")
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

    with _opened_store(store) as results:
        document = results.candidate(candidate_id)
    if document is None:
        raise _fail(f"no candidate {candidate_id!r} in {store}")
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
        raise _fail(f"--out {out}: end it in .zip (CIFs) or .extxyz, or give --format")
    export_format = export_format or by_suffix
    if out.suffix.lower() not in suffixes[export_format]:
        raise _fail(
            f"--format {export_format.value} writes {' or '.join(suffixes[export_format])}, "
            f"not {out.name}"
        )
    if symprec is not None and export_format != ExportFormat.cif:
        raise _fail("--symprec applies to CIF output (--format cif)")
    if out.is_dir():
        raise _fail(f"--out {out} is a folder")
    with _opened_store(store) as results:
        if results.campaign(campaign) is None:
            raise _fail(f"--campaign {campaign}: no such campaign in {store}")
        documents = results.query_candidates(campaign, sun_only=sun_only)
    if not documents:
        raise _fail(f"no candidates for campaign {campaign!r} in {store}")
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


@app.command()
def version() -> None:
    """Print the CrystalForge version."""
    from importlib.metadata import version as package_version

    typer.echo(f"crystalforge {package_version('crystalforge')}")


def _click_exceptions() -> ModuleType:
    """Click's exception classes as typer raises them: typer >= 0.20 vendors click as the
    private ``typer._click`` (guarded; ``tests/pipeline/test_cli_errors.py`` checks the
    one-line usage errors), older typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - typer < 0.20
        from click import exceptions
    return exceptions


def main() -> None:
    """The console entry point: ``app`` with usage errors (unknown option, bad choice) as one
    ``error:`` line naming the option, like every other bad input."""
    exceptions = _click_exceptions()
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


# The model's commands (data tensors, train, generate) live in their own module.
from pipeline.model_cli import register as _register_model_commands  # noqa: E402

_register_model_commands(app, data_app)

# ``crystalforge dft run`` lives in its own module too.
from pipeline.dft_cli import register as _register_dft_commands  # noqa: E402

_register_dft_commands(app)

# ``crystalforge campaign submit`` and ``crystalforge worker`` (FireWorks) too.
from pipeline.fireworks_cli import register as _register_fireworks_commands  # noqa: E402

_register_fireworks_commands(app, campaign_app)
