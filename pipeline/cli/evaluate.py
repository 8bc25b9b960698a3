"""``crystalforge evaluate``: score crystals for validity, uniqueness, novelty and stability.

The flags that default to the evaluation config say so in their help; the defaults come from
:class:`evaluation.report.evaluate.EvaluationSettings`, so a ``--config`` YAML and the flags
compose (flags win).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import (
    CountUnverifiedOption,
    HullOption,
    bad_input_errors,
    fail,
    option_error,
    output_folder,
    read_input,
)


class RelaxModel(StrEnum):
    """MLFFs that run offline out of the box (their weights ship with the package)."""

    none = "none"
    chgnet = "chgnet"
    sevennet = "sevennet"
    sevennet_l3i5 = "7net-l3i5"


#: EvaluationSettings' defaults for the flags that default to the config (help text only;
#: tests/pipeline/test_cli_errors.py checks they agree).
EVALUATE_DEFAULTS = {
    "relax": "none",
    "stability_threshold": 0.1,
    "n_jobs": 1,
    "relax_fmax": 0.05,
    "relax_steps": 500,
}


def evaluate_default(field: str) -> str:
    """Help-text suffix naming the default of ``field`` (a key of :data:`EVALUATE_DEFAULTS`)."""
    return f"  [default: {EVALUATE_DEFAULTS[field]}, or --config's]"


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
            + evaluate_default("relax")
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
            + evaluate_default("stability_threshold")
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
            help="Worker processes for relaxation and matching." + evaluate_default("n_jobs")
        ),
    ] = None,
    fmax: Annotated[
        float | None,
        typer.Option(help="Relaxation force criterion (eV/Å)." + evaluate_default("relax_fmax")),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(help="Relaxation step budget." + evaluate_default("relax_steps")),
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
            raise option_error(error, {"relax_fmax": "--fmax", "relax_steps": "--steps"}) from None
        output_folder(output, "--output")
        samples_read = read_input(samples)
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
    except bad_input_errors() as error:
        raise fail(str(error)) from None
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
