"""Benchmark: a campaign on FireWorks (embedded LaunchPad) against the same campaign run locally.

    python benchmarks/fireworks.py [--chemsys Li-Co-O] [--num-candidates 32] [--top-k 4]

The peer is ``crystalforge campaign run`` (jobflow's ``run_locally``). The same campaign
(``configs/campaign/demo.yaml``'s settings, a fresh store each) is then submitted to an
embedded LaunchPad and run by ``crystalforge worker rapidfire`` with one, then two rocket
threads. A first local run fills the MLFF reference cache, so every timed side starts warm.

Printed and written to ``benchmarks/results/fireworks.json``: wall time of each side (the
commands as a user runs them, process start included), the Fireworks run, the size of the
LaunchPad file and the time of one atomic save of it (paid after every LaunchPad change), and
whether each side's candidates (ids, E_hull to 1e-6 eV/atom, flags) equal the local run's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fireworks.json"


def crystalforge(*args: str, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run the CLI in a fresh process; (wall seconds, stdout)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"crystalforge {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started, result.stdout


def candidates(store: Path, campaign_id: str, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    _, listed = crystalforge(
        "results", "list", "--campaign", campaign_id, "--format", "json", "--store", str(store),
        cwd=cwd, env=env,
    )  # fmt: skip
    return {
        row["candidate_id"]: [
            None if row["e_above_hull"] is None else round(row["e_above_hull"], 6),
            row["valid"],
            row["unique"],
            row["novel"],
            row["sun"],
            row["selected"],
        ]  # fmt: skip
        for row in json.loads(listed)
    }


def save_seconds(launchpad: Path, cwd: Path, env: dict[str, str]) -> float:
    """Mean time of one atomic save of the embedded LaunchPad (a fresh process opens it)."""
    code = (
        "import time\n"
        "from pipeline.launchpad import LaunchPadLocation, open_launchpad\n"
        f"with open_launchpad(LaunchPadLocation.parse('embedded:{launchpad}')) as lp:\n"
        "    t = time.perf_counter()\n"
        "    for _ in range(20): lp.save()\n"
        "    print((time.perf_counter() - t) / 20)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chemsys", default="Li-Co-O")
    parser.add_argument("--num-candidates", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crystalforge-fw-bench-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "CRYSTALFORGE_CACHE": str(work / "cache")}  # fmt: skip
    options = [
        args.chemsys, "--config", str(ROOT / "configs" / "campaign" / "demo.yaml"),
        "--num-candidates", str(args.num_candidates), "--top-k", str(args.top_k),
        "--campaign-id", "bench",
    ]  # fmt: skip
    crystalforge("campaign", "run", *options, "--store", str(work / "warm"), cwd=work, env=env)

    sides: dict[str, dict[str, Any]] = {}
    wall, _ = crystalforge("campaign", "run", *options, "--store", str(work / "local"),
                           cwd=work, env=env)  # fmt: skip
    expected = candidates(work / "local", "bench", work, env)
    sides["campaign run (run_locally)"] = {"wall_s": wall}
    print(f"campaign run (run_locally): {wall:.1f} s, {len(expected)} candidates")
    for threads in (1, 2):
        store, launchpad = work / f"fw{threads}", work / f"lp{threads}.json"
        submit, _ = crystalforge(
            "campaign", "submit", *options, "--store", str(store),
            "--launchpad", f"embedded:{launchpad}", cwd=work, env=env,
        )  # fmt: skip
        worker, output = crystalforge(
            "worker", "rapidfire", "--launchpad", f"embedded:{launchpad}",
            "--threads", str(threads), "--launch-dir", str(work / f"launches{threads}"),
            cwd=work, env=env,
        )  # fmt: skip
        launches = sum(line.startswith("fw ") for line in output.splitlines())
        same = candidates(store, "bench", work, env) == expected
        name = f"submit + worker rapidfire --threads {threads}"
        sides[name] = {
            "wall_s": submit + worker,
            "submit_s": submit,
            "worker_s": worker,
            "fireworks_run": launches,
            "launchpad_bytes": launchpad.stat().st_size,
            "launchpad_save_s": save_seconds(launchpad, work, env),
            "same_results_as_run_locally": same,
        }
        print(
            f"{name}: {submit + worker:.1f} s (submit {submit:.1f}, worker {worker:.1f}), "
            f"{launches} Fireworks, LaunchPad {launchpad.stat().st_size / 1e3:.0f} kB, "
            f"save {1e3 * sides[name]['launchpad_save_s']:.1f} ms, same results: {same}"
        )
    local = sides["campaign run (run_locally)"]["wall_s"]
    for side in sides.values():
        side["vs_run_locally"] = side["wall_s"] / local
    report = {
        "campaign": {
            "chemsys": args.chemsys,
            "num_candidates": args.num_candidates,
            "top_k": args.top_k,
            "config": "configs/campaign/demo.yaml",
        },  # fmt: skip
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sides": sides,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
