"""``crystalforge benchmark chemsys``: the tiny preset end to end (its systems in two
processes, ``--jobs 2``), its resume (in one process), its bad input, and the same benchmark
run by FireWorks workers.

The tiny preset's numbers mean nothing (a few candidates, 25 relaxation steps); what is
specified here is the protocol: three methods per system, RSS in two rounds with tuned
MINSEP, one combined hull per system at the final stage's level, and the tables and figures.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.store import ResultsStore

SYSTEMS = "Li-Pr-Te,Br-Pb-Rh"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def run(*args: str):
    return CliRunner().invoke(app, ["benchmark", "chemsys", *args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("benchmark")
    options = ["--systems", SYSTEMS, "--preset", "tiny", "--store", str(folder / "store")]
    options += ["--results", str(folder / "results")]
    first = run(*options, "--jobs", "2")
    assert first.exit_code == 0, first.output
    return {"folder": folder, "options": options, "output": first.output}


def test_jobs_runs_every_nth_system_in_its_own_process_and_scores_them_all_once(tiny):
    output = tiny["output"]
    assert "benchmark: 2 systems in 2 processes" in output
    assert re.search(r"^\[1/2\] benchmark: Li-Pr-Te mattergen", output, re.M)
    assert re.search(r"^\[2/2\] benchmark: Br-Pb-Rh mattergen", output, re.M)
    assert not re.search(r"^\[1/2\] benchmark: Br-Pb-Rh", output, re.M)
    # the parent scores both (stored() checks that only its document was saved)
    assert re.search(r"^benchmark: Li-Pr-Te scored", output, re.M)
    assert "2 of 2 systems scored" in output


def test_partition_gives_each_process_every_nth_system():
    from pipeline.benchmarks.processes import partition

    assert partition(["a", "b", "c", "d", "e"], 2) == [["a", "c", "e"], ["b", "d"]]
    assert partition(["a", "b"], 4) == [["a"], ["b"]]
    with pytest.raises(ValueError, match="at least 1"):
        partition(["a"], 0)


def stored(folder: Path) -> tuple[dict, list[dict]]:
    store = ResultsStore.embedded(folder / "store").connect()
    try:
        benchmarks = list(store.benchmarks.query({"systems": ["Li-Pr-Te", "Br-Pb-Rh"]}))
        assert len(benchmarks) == 1
        return benchmarks[0], store.list_campaigns()
    finally:
        store.close()


def test_every_system_gets_a_campaign_per_method_and_rss_two_rounds(tiny):
    document, campaigns = stored(tiny["folder"])
    assert {c["status"] for c in campaigns} == {"completed"}
    by_system = {}
    for campaign in campaigns:
        by_system.setdefault(campaign["chemsys"], []).append(campaign["config"])
    assert set(by_system) == {"Li-Pr-Te", "Br-Pb-Rh"}
    for configs in by_system.values():
        generators = sorted(c["generator"] for c in configs)
        assert generators == ["mattergen", "rss", "rss", "substitution"]
        assert {c["hull"] for c in configs} == {"same-level"}  # one level of theory
        rss = [c for c in configs if c["generator"] == "rss"]
        first, second = sorted(rss, key=lambda c: c["seed"])
        assert first["rss_minsep"] is None and second["seed"] == first["seed"] + 1
        assert second["rss_minsep"] and all(0.7 <= d <= 3.0 for d in second["rss_minsep"].values())
        substitution = next(c for c in configs if c["generator"] == "substitution")
        assert substitution["substitution_mode"] == "all"
        assert substitution["substitution_max_sites"] == 20  # the preset's, substitution only
        assert all(c["substitution_max_sites"] is None for c in configs if c is not substitution)
    assert [r["chemsys"] for r in document["results"]] == ["Li-Pr-Te", "Br-Pb-Rh"]
    assert document["pending"] == []


def test_each_system_is_judged_on_one_combined_hull_at_the_final_level(tiny):
    document, _ = stored(tiny["folder"])
    for result in document["results"]:
        assert result["level_of_theory"] == "mlff:sevennet-7net-0"
        assert "known hull phases" in result["coverage"]["label"]
        assert set(result["methods"]) == {"mattergen", "rss", "substitution"}
        for method in result["methods"].values():
            assert method["n_final"] <= 2  # top K = 2, RSS over both rounds
            assert method["n_sun"] <= method["n_unique"] <= method["n_final"]
        for verdict in result["verdicts"].values():
            # every final structure is part of the combined hull: never below it
            assert verdict["e_above_hull"] >= -1e-9
        vertices = {f"{p['source']}:{p['key']}" for p in result["hull_points"]}
        assert all(a in vertices and b in vertices for a, b in result["hull_edges"])


def test_the_table_and_figures_are_written(tiny):
    results = tiny["folder"] / "results"
    table = (results / "chemsys.md").read_text()
    assert re.search(r"^\| system \| group \| mattergen \| rss \| substitution \|", table, re.M)
    assert "| `Li-Pr-Te` | partially |" in table and "| `Br-Pb-Rh` | not |" in table
    for name in ("chemsys_groups", "chemsys_hull_Li-Pr-Te", "chemsys_hull_Br-Pb-Rh"):
        for suffix in (".png", ".svg"):
            assert (results / f"{name}{suffix}").stat().st_size > 1000
    data = json.loads((results / "chemsys.json").read_text())
    assert data["aggregate"]["n_elements"]["ternary"]["mattergen"]["sun_rate"]["n"] == 2


def test_running_again_reuses_every_campaign_and_gives_the_same_scores(tiny):
    again = run(*tiny["options"])
    assert again.exit_code == 0, again.output
    assert not re.search(r"^benchmark: \S+ (mattergen|rss|substitution)", again.output, re.M)
    document, _ = stored(tiny["folder"])
    first = json.loads((tiny["folder"] / "results" / "chemsys.json").read_text())
    assert [r["methods"] for r in document["results"]] == [r["methods"] for r in first["results"]]


def test_carry_takes_an_earlier_runs_scores_instead_of_running_those_systems(tiny, tmp_path):
    earlier = tiny["folder"] / "results" / "chemsys.json"
    first = json.loads(earlier.read_text())
    systems = ["--systems", SYSTEMS, "--preset", "tiny", "--results", str(tmp_path / "r")]
    carried = run(*systems, "--carry", str(earlier), "--store", str(tmp_path / "s"))
    assert carried.exit_code == 0, carried.output
    assert f"benchmark: Li-Pr-Te carried from {first['benchmark_id']}" in carried.output
    assert not re.search(r"^benchmark: \S+ (mattergen|rss|substitution)", carried.output, re.M)
    again = json.loads((tmp_path / "r" / "chemsys.json").read_text())
    assert [r["methods"] for r in again["results"]] == [r["methods"] for r in first["results"]]

    other = tmp_path / "laptop.json"
    other.write_text(json.dumps({**first, "preset": {**first["preset"], "name": "laptop"}}))
    for path, message in [
        (other, "its run used the laptop preset's budgets, not tiny's"),
        (tmp_path / "none.json", "No such file or directory"),
    ]:
        refused = run(*systems, "--carry", str(path), "--store", str(tmp_path / "new"))
        assert refused.exit_code == 2 and f"--carry {path}: {message}" in refused.output
        assert not (tmp_path / "new").exists()


def test_score_only_runs_nothing_and_scores_what_finished(tiny, tmp_path):
    systems = ["--systems", "Li-Pr-Te,Br-Pb-Rh,O-Sr-V", "--preset", "tiny"]
    store = ["--store", str(tiny["folder"] / "store"), "--results", str(tmp_path / "r")]
    result = run(*systems, *store, "--score-only")
    assert result.exit_code == 0, result.output
    assert "2 of 3 systems scored" in result.output
    assert "O-Sr-V not scored yet (mattergen: not run (--score-only)" in result.output
    assert "| `O-Sr-V`" not in (tmp_path / "r" / "chemsys.md").read_text()
    _, campaigns = stored(tiny["folder"])
    assert "O-Sr-V" not in {c["chemsys"] for c in campaigns}  # nothing ran
    missing = run(*systems, "--score-only", "--store", str(tmp_path / "none"))
    assert missing.exit_code == 2 and "no results store there" in missing.output
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--systems", "Xx-O"], "--systems Xx-O: 'Xx' is not an element symbol"),
        (["--systems", "table-d3:most"], "unknown group 'most'"),
        (["--preset", "huge"], "--preset huge: unknown preset 'huge'"),
        (["--systems", "Am-O"], "Am-O (mattergen): Am in Am-O: no known elemental phase"),
        (["--jobs", "0"], "--jobs 0: must be at least 1"),
        (["--jobs", "2", "--score-only"], "--jobs 2: runs the systems here, so it cannot go"),
    ],
)
def test_bad_input_is_one_line_and_creates_no_store(tmp_path, options, message):
    store = tmp_path / "store"
    result = run(*options, "--store", str(store), "--results", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert message in result.output and result.output.count("error:") == 1
    assert not store.exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("budget: 9", "budget: Extra inputs are not permitted"),
        ("campaign: {top_k: 3}", "campaign: top_k: set by the benchmark, not the preset"),
        ("campaign: {engine: castep}", "engine: must be one of mlff, gpaw, vasp"),
    ],
)
def test_a_preset_file_with_a_setting_it_cannot_take_is_refused(tmp_path, extra, message):
    preset = tmp_path / "mine.yaml"
    preset.write_text(f"mattergen_samples: 4\nsubstitutions: 4\nrss_per_round: 4\n{extra}\n")
    result = run("--preset", str(preset), "--store", str(tmp_path / "s"))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_fireworks_workers_run_the_benchmark_in_three_submissions(tmp_path):
    """Submit → workers → submit (RSS round 2) → workers → score: the local run's numbers."""
    from tests.pipeline.test_fireworks import crystalforge, ok

    cache = Path(os.environ.get("CRYSTALFORGE_CACHE", tmp_path / "cache"))
    lp, store = f"embedded:{tmp_path / 'lp.json'}", str(tmp_path / "store")
    options = ["benchmark", "chemsys", "--systems", "Br-Pb-Rh", "--preset", "tiny"]
    options += ["--store", store, "--results", str(tmp_path / "results"), "--launchpad", lp]
    first = ok(crystalforge(*options, cwd=tmp_path, cache=cache))
    assert "rss round 2 waits for round 1" in first and "0 of 1 systems scored" in first

    def workers() -> None:
        for category in ("gpu", "cpu"):
            done = ok(crystalforge("worker", "rapidfire", "--launchpad", lp, "--category",
                                   category, cwd=tmp_path, cache=cache))  # fmt: skip
            assert "0 fizzled" in done

    workers()
    second = ok(crystalforge(*options, cwd=tmp_path, cache=cache))
    assert "Br-Pb-Rh rss round 2" in second and "0 of 1 systems scored" in second
    workers()
    third = ok(crystalforge(*options, cwd=tmp_path, cache=cache))
    assert "1 of 1 systems scored" in third
    assert (tmp_path / "results" / "chemsys_hull_Br-Pb-Rh.png").is_file()


# --- benchmark property ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def labelled_data(tmp_path_factory) -> Path:
    """A `data build`-shaped folder: 12 perovskites, 8 of them with an HHI label."""
    import pandas as pd

    from evaluation.io.crystals import read_crystals
    from model.property_compute import hhi
    from model.structures import structures_to_tensors
    from tests.conftest import PEROV_5_VAL

    folder = tmp_path_factory.mktemp("data")
    records = read_crystals(PEROV_5_VAL, limit=12).records
    tensors = structures_to_tensors(((r.label, r.structure) for r in records), max_atoms=20)
    tensors.tensors.save(folder / "dataset.pt")
    ids = tensors.tensors.ids
    labels = [hhi(r.structure).value if i < 8 else None for i, r in enumerate(records)]
    pd.DataFrame({"id": ids, "hhi": labels}).to_csv(folder / "properties.csv.gz", index=False)
    (folder / "properties.json").write_text(
        json.dumps({"properties": {"hhi": {"level_of_theory": "composition (USGS 2023 HHI)"}}})
    )
    return folder


def run_property(*args: str):
    return CliRunner().invoke(app, ["benchmark", "property", *args])


def test_the_property_benchmark_counts_hits_per_budget_for_each_method(labelled_data, tmp_path):
    options = ["--property", "hhi", "--threshold", "3000", "--budgets", "1,2", "--samples", "3"]
    options += ["--model-steps", "10", "--data", str(labelled_data)]
    options += ["--work", str(tmp_path / "work"), "--store", str(tmp_path / "store")]
    options += ["--results", str(tmp_path / "results")]
    result = run_property(*options)
    assert result.exit_code == 0, result.output
    store = ResultsStore.embedded(tmp_path / "store").connect()
    try:
        (document,) = list(store.benchmarks.query({"kind": "property"}))
    finally:
        store.close()
    assert document["level_of_theory"] == "composition (USGS 2023 HHI)"
    labels = pd_labels(labelled_data)
    assert document["methods"]["labelled data"] == {
        "hits": int((labels >= 3000).sum()),
        "outliers": 0,  # no plausible maximum for HHI
        "n_labelled": 8,
    }
    screening = document["methods"]["screening"]
    assert screening["n_pool"] == 4  # the unlabelled ones
    computed = next((tmp_path / "work").glob("screening-hhi-*/values.jsonl"))
    values = [json.loads(line)["value"] for line in computed.read_text().splitlines()]
    hits = sum(v >= 3000 for v in values[:2])
    assert screening["hits"]["2"] == {"hits": hits, "outliers": 0, "spent": 2}
    mattergen = document["methods"]["mattergen"]
    assert mattergen["n_samples"] == 3 and mattergen["n_sun"] <= mattergen["n_relaxed"] <= 3
    assert mattergen["hits"]["2"]["spent"] == min(2, mattergen["n_sun"])
    table = (tmp_path / "results" / "property_hhi_ge3000.md").read_text()
    assert "| mattergen |" in table and "| screening |" in table and "| labelled data |" in table
    assert (tmp_path / "results" / "property_hhi_ge3000.png").stat().st_size > 1000
    again = run_property(*options)  # everything cached: the same document
    assert again.exit_code == 0 and "computed" not in again.output


def pd_labels(folder: Path):
    import pandas as pd

    return pd.read_csv(folder / "properties.csv.gz")["hhi"].dropna()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--property", "space_group"], "--property space_group: not a scalar property"),
        (["--budgets", "0,5"], "budgets must be positive"),
        (["--budgets", "a,b"], "--budgets a,b: expected integers"),
        (["--data", "no-such-folder"], "--data no-such-folder: no dataset.pt"),
    ],
)
def test_property_benchmark_bad_input_is_one_line_and_creates_no_store(
    labelled_data, tmp_path, options, message
):
    base = {"--property": "hhi", "--threshold": "3000", "--data": str(labelled_data)}
    for flag, value in zip(options[::2], options[1::2], strict=True):
        base[flag] = value
    args = [item for pair in base.items() for item in pair]
    result = run_property(*args, "--store", str(tmp_path / "store"))
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("error:") == 1
    assert not (tmp_path / "store").exists()
