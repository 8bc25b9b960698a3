"""The ``crystalforge`` console command as users run it (a subprocess): usage errors are one
``error:`` line naming the option, outputs are checked before any work, ``--version`` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.paths import PROJECT_ROOT

SAMPLES = PROJECT_ROOT / "data" / "samples" / "demo_samples.extxyz"


def crystalforge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_version_prints_the_package_version(tmp_path):
    result = crystalforge("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("crystalforge ")


def test_no_arguments_show_the_help(tmp_path):
    result = crystalforge(cwd=tmp_path)
    assert result.returncode == 0 and "campaign" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["campaign", "run", "Li-O", "--bogus"], "No such option: --bogus"),
        (["evaluate", "x.cif", "--relax", "foo"], "Invalid value for '--relax': 'foo' is not"),
        (["results", "list", "--format", "csv"], "Invalid value for '--format': 'csv' is not"),
        (["evaluate", "x.cif", "--n-jobs", "0"], "--n-jobs: Input should be greater than"),
        (["evaluate", "x.cif", "--stability-threshold", "-5"], "--stability-threshold: Input"),
    ],
)
def test_usage_errors_are_one_line_naming_the_option(tmp_path, args, expected):
    assert expected in one_line_error(crystalforge(*args, cwd=tmp_path))


def test_evaluate_checks_its_output_before_any_work(tmp_path):
    existing = tmp_path / "existing"
    existing.write_text("keep me")
    result = crystalforge("evaluate", str(SAMPLES), "--output", str(existing), cwd=tmp_path)
    assert one_line_error(result).endswith("exists and is not a folder")
    assert "read" not in result.stdout  # failed before reading the samples
    assert existing.read_text() == "keep me"


def test_generate_refuses_cells_larger_than_the_model_was_trained_on(tmp_path):
    result = crystalforge("generate", "--num-atoms", "500", "--num-samples", "1", cwd=tmp_path)
    assert "--num-atoms 500: this model was trained on cells of at most" in one_line_error(result)
    assert not (tmp_path / "crystalforge-output").exists()


def test_help_states_the_defaults_that_come_from_the_settings():
    from evaluation.report.evaluate import EvaluationSettings
    from pipeline.campaign import CampaignConfig
    from pipeline.cli.campaign import CAMPAIGN_DEFAULTS
    from pipeline.cli.evaluate import EVALUATE_DEFAULTS

    campaign = CampaignConfig()
    assert {k: getattr(campaign, k) for k in CAMPAIGN_DEFAULTS} == CAMPAIGN_DEFAULTS
    evaluation = EvaluationSettings()
    assert {k: getattr(evaluation, k) for k in EVALUATE_DEFAULTS} == EVALUATE_DEFAULTS


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["campaign", "run"], "Candidates sent to the final stage. [default: 8, or --config's]"),
        (["evaluate"], "Worker processes for relaxation and matching. [default: 1, or"),
        (["relax"], "--model <chgnet|sevennet|7net-l3i5> The MLFF (its weights ship with the"),
    ],
)
def test_help_is_plain_text_within_80_columns_with_defaults(tmp_path, command, shown):
    result = crystalforge(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    assert "…" not in result.stdout and "╭" not in result.stdout  # nothing truncated or boxed
    assert shown in " ".join(result.stdout.split())


def test_top_level_help_lists_commands_in_the_order_a_user_meets_them(tmp_path):
    listed = crystalforge("--help", cwd=tmp_path).stdout.split("Commands:")[1].splitlines()
    names = [line.split()[0] for line in listed if line.startswith("  ") and line.strip()]
    assert names[:5] == ["campaign", "results", "generate", "evaluate", "relax"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["campaign", "list"], "no results store there"),
        (["results", "show", "x/y"], "no results store there"),
        (["campaign", "run", "Li-Xx-O"], "unknown element 'Xx'"),
        (["campaign", "run", "Li-O", "--generator", "foo"], "--generator: must be one of"),
        (["campaign", "run", "Li-O", "--generator", "file", "--input", "nope.cif"], "nope.cif"),
    ],
)
def test_commands_that_fail_or_only_read_never_create_a_store(tmp_path, args, expected):
    result = crystalforge(*args, "--store", "store", cwd=tmp_path)
    assert expected in one_line_error(result)
    assert not (tmp_path / "store").exists()
