"""Static checks of the project's promises (Docker, FireWorks: test_deployment_files.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_the_distribution_script_packages_and_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "crystalforge"
    assert project["requires-python"] == ">=3.11"
    assert project["scripts"]["crystalforge"] == "pipeline.cli:main"  # one-line usage errors
    assert {"dev", "gpaw", "matgl"} <= set(project["optional-dependencies"])
    assert not any(dep.startswith(("mattersim", "torchvision")) for dep in project["dependencies"])
    assert not any("gpaw" in dep for dep in project["dependencies"])  # GPL engine stays optional


def test_constraints_pin_the_cpu_torch_wheel():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().split()


def test_notice_credits_every_shipped_data_file():
    notice = (ROOT / "NOTICE").read_text()
    shipped = [p for p in (ROOT / "data").rglob("*") if p.is_file()]
    for path in shipped:
        if path.suffix in {".py", ".pyc"}:
            continue  # data/__init__.py makes data/ the package crystalforge_data: code, not data
        if path.suffix in {".md", ".json"} and path.parent.name == "reference":
            continue  # SOURCES.md / manifest.json describe the data, they are not data
        if path.parent.name == "samples":
            assert "data/samples/" in notice
            continue
        assert path.name in notice, (
            f"{path.relative_to(ROOT)} is shipped but not credited in NOTICE"
        )


def test_shipped_files_stay_under_25_megabytes():
    for path in (ROOT / "data").rglob("*"):
        if path.is_file():
            assert path.stat().st_size <= 25 * 1024 * 1024, path


def test_readme_shows_the_two_commands_at_the_top():
    head = (ROOT / "README.md").read_text()[:1500]
    assert "make demo" in head and "make test" in head


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_model_core_and_evaluation_respect_the_import_direction():
    for package in ("evaluation", "model"):
        for source in (ROOT / package).rglob("*.py"):
            text = source.read_text()
            assert not re.search(r"^\s*(from|import)\s+(flows|pipeline)\b", text, re.M), source
    for source in ROOT.rglob("*.py"):
        if ".venv" in source.parts:
            continue
        assert not re.search(r"^\s*(from|import)\s+mattergen\b", source.read_text(), re.M), source


def test_every_package_folder_is_listed_for_the_wheel():
    """pyproject lists its packages (data/ installs renamed), so a new folder must be added."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("model", "evaluation", "flows", "pipeline")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found | {"crystalforge_data"} == listed


def test_an_installed_wheel_finds_the_shipped_data_without_the_source_tree(tmp_path):
    wheels, target = tmp_path / "wheel", tmp_path / "site"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, str(ROOT), "-w", str(wheels)], check=True, capture_output=True)
    (wheel,) = wheels.glob("crystalforge-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    subprocess.run([*install, str(target), str(wheel)], check=True, capture_output=True)
    code = (
        "from evaluation.paths import data_dir, default_checkpoint, reference_dir\n"
        "from evaluation.hull.known_phases import known_phases\n"
        "print(data_dir()); assert default_checkpoint().is_file()\n"
        "assert (reference_dir() / 'structures.jsonl.gz').is_file()\n"
        "assert known_phases().hull_phases(['Li', 'O'])\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "CRYSTALFORGE_DATA"}
    environment["PYTHONPATH"] = str(target)  # ahead of the editable install's finder
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(target / "crystalforge_data")


def test_no_other_installed_distribution_claims_our_top_level_names():
    """The import names stay the design card's folders (README: Architecture), so a clash with
    another installed distribution's ``model`` or ``pipeline`` would silently shadow ours."""
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    for name in ("model", "evaluation", "flows", "pipeline", "crystalforge_data"):
        assert set(owners.get(name, [])) == {"crystalforge"}, (name, owners.get(name))


def test_no_module_grows_past_600_lines_without_a_stated_reason():
    """A module over ~600 lines states why near its top (``# size: <reason>``), else it splits."""
    for top in ("model", "evaluation", "flows", "pipeline"):
        for source in (ROOT / top).rglob("*.py"):
            lines = source.read_text().splitlines()
            if len(lines) > 620:
                head = "\n".join(lines[:40])
                assert "# size:" in head, f"{source.relative_to(ROOT)}: {len(lines)} lines"
