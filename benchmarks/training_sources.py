"""Which structure sources belong in the training set? Measure each against MP-20.

The paper trains on MP-20 / Alex-MP-20: known, near-hull, mostly 2-4-element crystals of the whole
periodic table. Our shared sources are LeMaterial samples of MP, Alexandria and JARVIS (and
LeMat-Bulk), plus two generative-model benchmark sets: perov_5 (hypothetical ABX3 perovskites,
5-atom cells) and carbon_24 (carbon allotropes from random search). This script reads every source
as ``data build`` selects it (ordered, <= max atoms, elements the model covers; no duplicate
removal) and reports, per source and for candidate unions, how far the element-presence
distribution is from MP-20's (total variation, ``mp20_stats.json``), elements and atoms per cell
and each source's share of the set. Given a finished build (``--labels OUT/labels.csv.gz``), it
adds each source's share passing the E_hull cut and its share of the kept set.

Run::

    python benchmarks/training_sources.py ../shared/data/structures/lemat/mp ... \
        --labels runs/dataset-all/labels.csv.gz --out benchmarks/results/training_sources.json
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.io.crystals import read_crystals
from evaluation.metrics.chemistry import total_variation
from model.training_set import BuildSettings, _drop_reason, source_name, supported_elements

MP20_STATS = Path(__file__).resolve().parents[1] / "../shared/data/reference/mp20_stats.json"
RESULTS = Path(__file__).resolve().parent / "results" / "training_sources.json"
CORE_PREFIXES = ("lemat/", "lemat_bulk/")  # LeMaterial: MP, Alexandria, JARVIS, LeMat-Bulk


def source_profile(path: Path, max_atoms: int) -> dict[str, Any]:
    """Element presence counts, elements and atoms per cell of the crystals ``data build`` keeps."""
    elements = supported_elements()
    records = read_crystals(path, source=source_name(path)).records
    kept = [r.structure for r in records if _drop_reason(r, max_atoms, elements) is None]
    presence = Counter(el.symbol for s in kept for el in s.composition.elements)
    return {
        "n_read": len(records),
        "n_kept": len(kept),
        "presence": dict(presence),
        "sum_elements": sum(len(s.composition.elements) for s in kept),
        "sum_atoms": sum(len(s) for s in kept),
    }


def union(profiles: list[dict[str, Any]]) -> dict[str, Any]:
    presence: Counter = Counter()
    for p in profiles:
        presence.update(p["presence"])
    n = sum(p["n_kept"] for p in profiles)
    return {
        "n_kept": n,
        "presence": dict(presence),
        "sum_elements": sum(p["sum_elements"] for p in profiles),
        "sum_atoms": sum(p["sum_atoms"] for p in profiles),
    }


def summary(profile: dict[str, Any], mp20: dict[str, float]) -> dict[str, float]:
    n = max(profile["n_kept"], 1)
    total = sum(profile["presence"].values()) or 1
    presence = {el: c / total for el, c in profile["presence"].items()}
    return {
        "n": profile["n_kept"],
        "tv_element_presence_to_mp20": total_variation(presence, mp20),
        "mean_elements_per_cell": profile["sum_elements"] / n,
        "mean_atoms_per_cell": profile["sum_atoms"] / n,
        "carbon_presence_share": presence.get("C", 0.0),
    }


def label_pass_rates(labels: Path, e_hull_max: float) -> dict[str, dict[str, float]]:
    with gzip.open(labels, "rt") as handle:
        frame = pd.read_csv(handle)
    frame["source_name"] = frame["source"].astype(str)
    kept = frame["e_hull"] < e_hull_max
    out = {}
    for name, group in frame.groupby("source_name"):
        out[str(name)] = {
            "selected": int(len(group)),
            "labelled": int(group["e_hull"].notna().sum()),
            "passing_e_hull": float((group["e_hull"] < e_hull_max).mean()),
            "share_of_kept": float(kept[group.index].sum() / max(kept.sum(), 1)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path)
    parser.add_argument("--max-atoms", type=int, default=BuildSettings.max_atoms)
    parser.add_argument("--labels", type=Path, help="labels.csv.gz of a finished data build")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    stats = json.loads(MP20_STATS.read_text())
    total = sum(stats["element_counts"].values())
    mp20 = {el: c / total for el, c in stats["element_counts"].items()}
    profiles = {source_name(p): source_profile(p, args.max_atoms) for p in args.sources}
    core = [name for name in profiles if name.startswith(CORE_PREFIXES)]
    extra = [name for name in profiles if name not in core]
    sets = {"core (LeMaterial)": core}
    for name in extra:
        sets[f"core + {name}"] = core + [name]
    if len(extra) > 1:
        sets["core + " + " + ".join(extra)] = core + extra
    results: dict[str, Any] = {
        "sources": {name: summary(p, mp20) for name, p in profiles.items()},
        "unions": {
            label: summary(union([profiles[n] for n in names]), mp20)
            for label, names in sets.items()
        },
    }
    if args.labels:
        results["labels"] = label_pass_rates(args.labels, BuildSettings.e_hull_max)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| set | crystals | TV element presence vs MP-20 | elements/cell | atoms/cell | C |")
    print("|---|---|---|---|---|---|")
    for label, row in {**results["sources"], **results["unions"]}.items():
        print(
            f"| {label} | {row['n']} | {row['tv_element_presence_to_mp20']:.3f} | "
            f"{row['mean_elements_per_cell']:.2f} | {row['mean_atoms_per_cell']:.1f} | "
            f"{row['carbon_presence_share']:.3f} |"
        )
    for name, row in results.get("labels", {}).items():
        print(name, row)


if __name__ == "__main__":
    main()
