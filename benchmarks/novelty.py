"""Benchmark: novelty of N structures against the reference set, index vs naive loop.

    python benchmarks/novelty.py [--n-queries 1000] [--n-jobs 2] [--naive-subset 100] [--seed 0]

Queries are a seeded mix built from the reference itself:

* ``known``: a reference structure rotated, its sites permuted, its origin moved and every atom
  displaced by up to 0.05 Å — must come out *not novel*;
* ``element_swap``: one element of a reference replaced everywhere by another element — novel
  unless that compound happens to be in the reference too;
* ``strained``: a reference stretched 20 % along one axis and compressed 20 % along another
  (a uniform strain would be undone by the matcher's volume scaling) — mostly novel.

The naive baseline is what the paper's definition literally says: ``StructureMatcher.fit``
against *every* reference, in reference order, stopping at the first match. It runs on a seeded
random subset of the queries (``--naive-subset``; the full set would take hours); its per-query
time is extrapolated to all queries and that is stated as an extrapolation. Verdicts (the first
matching label, or none) of index and naive loop are compared on that subset.

The index is timed cold (cache folder empty: fingerprint, sqlite write, then the queries, which
reduce the references of the buckets they touch and save them) and warm (a fresh Python process
reusing the cache file). Figures are
printed and written to ``benchmarks/results/novelty.json``.
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
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Element, Lattice, Structure

from evaluation.matching.index import MatcherSettings, ReferenceIndex, make_matcher
from evaluation.matching.store import payload_to_structure, structure_to_payload
from evaluation.records import CrystalRecord

RESULTS = Path(__file__).resolve().parent / "results" / "novelty.json"
SHARED = Path(os.environ.get("CRYSTALFORGE_SHARED", "/work/shared")) / "data" / "structures"
#: Elements an ``element_swap`` query may bring in (common, so swaps stay plausible).
SWAP_POOL = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Al", "Ga", "Sc", "Y", "La", "Ti", "Zr"]
SWAP_POOL += ["V", "Nb", "Cr", "Mo", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Sn", "Pb", "Bi", "S"]


# ---------------------------------------------------------------------------------------------
# reference and queries


def _parse_cif_text(item: tuple[str, str]) -> tuple[str, dict] | None:
    label, text = item
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return label, structure_to_payload(Structure.from_str(text, fmt="cif"))
        except Exception:  # a row the parser cannot use is skipped, as any reader would
            return None


def _fallback_reference(n_jobs: int) -> list[CrystalRecord]:
    """perov_5 + carbon_24 + LeMat samples from the shared data (until the shipped set exists)."""
    items: list[tuple[str, str]] = []
    for name in ("perov_5", "carbon_24"):
        frame = pd.read_csv(SHARED / name / "val.csv")
        items += [
            (f"{name}:{m}", cif) for m, cif in zip(frame["material_id"], frame["cif"], strict=True)
        ]
    for folder in sorted((SHARED / "lemat").glob("*")) + sorted((SHARED / "lemat_bulk").glob("*")):
        items += [(f"{folder.name}:{p.stem}", p.read_text()) for p in sorted(folder.glob("*.cif"))]
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        parsed = [p for p in pool.map(_parse_cif_text, items, chunksize=200) if p is not None]
    return [
        CrystalRecord(
            payload_to_structure(payload), id=label.split(":", 1)[1], source=label.split(":", 1)[0]
        )
        for label, payload in parsed
    ]


def load_references(n_jobs: int) -> tuple[str, list[CrystalRecord]]:
    """The shipped reference set when it is there, else the shared-data stand-in."""
    try:
        from evaluation.reference import load_reference

        loaded = load_reference()
        records = list(getattr(loaded, "records", loaded))  # a ReadResult (or a plain list)
        if records:
            return "shipped data/reference/structures.jsonl.gz", records
    except (ImportError, OSError, ValueError) as error:  # ValueError: CrystalInputError
        print(f"shipped reference unavailable ({type(error).__name__}: {error}); using stand-in")
    return "stand-in: perov_5 + carbon_24 + lemat + lemat_bulk CIFs", _fallback_reference(n_jobs)


def _disguise(structure: Structure, rng: np.random.Generator) -> Structure:
    """Rotated, sites permuted, origin moved, every atom displaced by up to 0.05 Å."""
    from scipy.spatial.transform import Rotation

    order = rng.permutation(len(structure))
    rotation = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
    lattice = Lattice(structure.lattice.matrix @ rotation.T)
    directions = rng.normal(size=(len(structure), 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    jitter = directions * rng.uniform(0, 0.05, size=(len(structure), 1))
    frac = structure.frac_coords[order] + rng.uniform(0, 1, size=3)
    frac += lattice.get_fractional_coords(jitter)
    return Structure(lattice, [structure[i].species for i in order], frac % 1.0)


def make_queries(
    references: list[CrystalRecord], n_queries: int, seed: int
) -> list[tuple[str, Structure]]:
    """The seeded query mix (module docstring): half known, a quarter each swapped / strained."""
    rng = np.random.default_rng(seed)
    ordered = [r for r in references if r.structure.is_ordered]
    queries: list[tuple[str, Structure]] = []
    for i in range(n_queries):
        base = ordered[int(rng.integers(len(ordered)))].structure
        if i % 4 in (0, 1):
            queries.append(("known", _disguise(base, rng)))
        elif i % 4 == 2:
            present = {str(e) for e in base.composition.elements}
            old = sorted(present)[int(rng.integers(len(present)))]
            new = str(rng.choice([e for e in SWAP_POOL if e not in present]))
            swapped = base.copy()
            swapped.replace_species({Element(old): Element(new)})
            queries.append(("element_swap", _disguise(swapped, rng)))
        else:
            strain = np.zeros(3)
            stretch, squeeze = rng.permutation(3)[:2]
            strain[stretch], strain[squeeze] = 0.2, -0.2
            strained = base.copy()
            strained.apply_strain(strain)
            queries.append(("strained", _disguise(strained, rng)))
    return queries


# ---------------------------------------------------------------------------------------------
# the two methods


def naive_first_match(query: Structure, references: list[CrystalRecord], matcher) -> str | None:
    """``StructureMatcher.fit`` against every reference in order, no bucketing."""
    for reference in references:
        if matcher.fit(query, reference.structure):
            return reference.label
    return None


def run_index(
    references: list[CrystalRecord], structures: list[Structure], cache: Path, n_jobs: int
) -> dict:
    start = time.perf_counter()
    index = ReferenceIndex.build(references, MatcherSettings(), cache=cache, n_jobs=n_jobs)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    labels = index.matches(structures, n_jobs=n_jobs)
    query_s = time.perf_counter() - start
    return {
        "cache_status": index.cache_status,
        "references_prepared": index.references_prepared,
        "cache_file_mb": index.path.stat().st_size / 1e6,
        "build_s": build_s,
        "query_s": query_s,
        "total_s": build_s + query_s,
        "labels": labels,
        "index": index,
    }


def _warm_worker(args: argparse.Namespace) -> None:
    """Entry point of the fresh process that times the warm cache (prints one JSON line)."""
    _, references = load_references(args.n_jobs)
    structures = [s for _, s in make_queries(references, args.n_queries, args.seed)]
    warm = run_index(references, structures, Path(args.warm_cache), args.n_jobs)
    index = warm.pop("index")
    start = time.perf_counter()
    serial_labels = index.matches(structures, n_jobs=1)
    warm["query_s_one_job"] = time.perf_counter() - start
    warm["one_job_same_labels"] = serial_labels == warm["labels"]
    print("WARM-RESULT " + json.dumps(warm))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--naive-subset", type=int, default=100, help="queries run naively")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--warm-cache", help=argparse.SUPPRESS)  # internal: warm subprocess
    args = parser.parse_args(argv)
    if args.warm_cache:
        _warm_worker(args)
        return {}

    clock = time.perf_counter()
    reference_name, references = load_references(args.n_jobs)
    queries = make_queries(references, args.n_queries, args.seed)
    structures = [s for _, s in queries]
    print(
        f"reference: {reference_name}: {len(references)} structures "
        f"(loaded in {time.perf_counter() - clock:.0f} s); queries: {len(queries)}; "
        f"n_jobs: {args.n_jobs}"
    )

    with tempfile.TemporaryDirectory(prefix="novelty-bench-") as folder:
        cache = Path(folder)
        cold = run_index(references, structures, cache, args.n_jobs)
        cold.pop("index")
        print(f"index cold: build {cold['build_s']:.1f} s + queries {cold['query_s']:.1f} s")
        command = [sys.executable, __file__, "--warm-cache", str(cache)]
        command += ["--n-queries", str(args.n_queries), "--n-jobs", str(args.n_jobs)]
        command += ["--seed", str(args.seed)]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        line = next(ln for ln in completed.stdout.splitlines() if ln.startswith("WARM-RESULT "))
        warm = json.loads(line.removeprefix("WARM-RESULT "))
        print(
            f"index warm (fresh process): open {warm['build_s']:.2f} s + queries "
            f"{warm['query_s']:.1f} s ({warm['cache_status']}); one job: "
            f"{warm['query_s_one_job']:.1f} s"
        )

    rng = np.random.default_rng(args.seed + 1)
    n_naive = min(args.naive_subset, len(queries))
    subset = sorted(rng.choice(len(queries), size=n_naive, replace=False).tolist())
    matcher = make_matcher()
    start = time.perf_counter()
    naive_labels = []
    for done, i in enumerate(subset, 1):
        naive_labels.append(naive_first_match(structures[i], references, matcher))
        if done % 10 == 0:
            elapsed = time.perf_counter() - start
            print(f"  naive: {done}/{n_naive} queries, {elapsed / done:.2f} s/query", flush=True)
    naive_s = time.perf_counter() - start
    naive_per_query = naive_s / n_naive
    naive_total = naive_per_query * len(queries)
    extrapolated = n_naive < len(queries)
    agree = [cold["labels"][i] for i in subset] == naive_labels

    kinds = sorted({kind for kind, _ in queries})
    per_kind = {
        kind: {
            "queries": sum(k == kind for k, _ in queries),
            "novel": sum(
                k == kind and lab is None
                for (k, _), lab in zip(queries, cold["labels"], strict=True)
            ),
        }
        for kind in kinds
    }
    warm_total = warm["build_s"] + warm["query_s"]
    results = {
        "reference": reference_name,
        "n_references": len(references),
        "n_queries": len(queries),
        "n_jobs": args.n_jobs,
        "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "naive": {
            "queries_run": n_naive,
            "seconds_run": naive_s,
            "seconds_per_query": naive_per_query,
            "seconds_all_queries": naive_total,
            "all_queries_is_extrapolation": extrapolated,
            "n_jobs": 1,
        },
        "index_cold": {k: v for k, v in cold.items() if k != "labels"},
        "index_warm": {k: v for k, v in warm.items() if k not in ("labels",)},
        "speedup_vs_cold_total": naive_total / cold["total_s"],
        "speedup_vs_warm_total": naive_total / warm_total,
        "speedup_query_only_warm": naive_total / warm["query_s"],
        "speedup_query_only_warm_one_job": naive_total / warm["query_s_one_job"],
        "throughput_structures_per_s": {
            "naive": 1 / naive_per_query,
            "index_cold_total": len(queries) / cold["total_s"],
            "index_warm_total": len(queries) / warm_total,
            "index_warm_query_only": len(queries) / warm["query_s"],
        },
        "verdicts": {
            "index_equals_naive_on_subset": agree,
            "subset_size": n_naive,
            "subset_not_novel": sum(lab is not None for lab in naive_labels),
            "warm_equals_cold": warm["labels"] == cold["labels"],
            "one_job_equals_n_jobs": warm["one_job_same_labels"],
            "per_kind": per_kind,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    naive_note = (
        f"EXTRAPOLATED from {n_naive} queries ({naive_s:.0f} s run)" if extrapolated else "measured"
    )
    print()
    print(
        f"naive loop, 1 process:    {naive_per_query:.2f} s/query -> {naive_total:.0f} s for "
        f"{len(queries)} queries ({naive_note})"
    )
    print(
        f"index cold (build+query): {cold['total_s']:.1f} s   speed-up "
        f"{results['speedup_vs_cold_total']:.0f}x"
    )
    print(
        f"index warm (open+query):  {warm_total:.1f} s   speed-up "
        f"{results['speedup_vs_warm_total']:.0f}x   (queries only: "
        f"{results['speedup_query_only_warm']:.0f}x with {args.n_jobs} jobs, "
        f"{results['speedup_query_only_warm_one_job']:.0f}x with 1)"
    )
    print(
        f"throughput: naive {1 / naive_per_query:.2f}/s, index warm "
        f"{len(queries) / warm_total:.0f}/s (queries only {len(queries) / warm['query_s']:.0f}/s)"
    )
    print(
        f"verdicts: index == naive on the {n_naive}-query subset: {agree}; warm == cold: "
        f"{warm['labels'] == cold['labels']}; novel by kind: "
        + ", ".join(f"{k} {v['novel']}/{v['queries']}" for k, v in per_kind.items())
    )
    print(f"written to {args.output}")
    if not agree:
        raise SystemExit("index and naive verdicts differ")
    return results


if __name__ == "__main__":
    main()
