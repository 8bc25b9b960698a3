"""Benchmark: how well each hull choice places known phases, and how complete the hulls are.

    python benchmarks/hull_screening.py [--n-phases 150] [--models chgnet,7net-0]
        [--jobs 2] [--samples 256] [--seed 0] [--skip-samples]

1. ``scales``: which correction scheme each DFT source is on, from shared formulas:
   MP-20's formation energies against matbench_mp_e_form's (legacy), split by what MP2020 and
   the legacy scheme correct differently (oxides of U elements, other oxides, no correction).
2. ``screening``: ``--n-phases`` known near-hull phases with structures -- MP-20 near-hull
   phases whose MP structure ships in the reference set (``lemat/mp``) -- relaxed with each
   MLFF, then placed on each hull choice:

   * ``known-phases``: MLFF energy on the MP2020 scale, formation energy against MP's DFT
     elemental energies, on the DFT hull of the MP-20 near-hull phases (MatterGen's scheme);
   * ``known-phases/mlff-elements``: the same, but against the MLFF's own elemental energies;
   * ``same-level``: the MLFF hull of the shipped reference compounds of the system relaxed
     with the same MLFF, *the phase itself left out* (what a campaign sees when a candidate is
     a known phase the reference does not hold).

   The truth is each phase's DFT E_hull on the MP-20 hull (near 0: they are near-hull phases).
   Reported per model and hull: MAE and median of E_hull - E_hull(DFT), the fraction placed
   within 0.1 eV/atom of it, the fraction judged stable (E_hull <= 0.1), and the hull's
   coverage of the phases' systems.
3. ``coverage``: the fraction of generated samples whose chemical system has complete hull
   coverage, per hull choice: ``--samples`` samples of the shipped model (``crystalforge
   generate``) and as many RSS draws (the chemical system of a random reference crystal of at
   most 20 atoms and 2+ elements, as the quality benchmark draws RSS systems from the training
   data; coverage depends on the system only).

Writes ``benchmarks/results/hull_screening.json`` and prints the tables.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "hull_screening.json"
SHARED = ROOT.parent / "shared" / "data" / "reference"
U_ELEMENTS = {"V", "Cr", "Mn", "Fe", "Co", "Ni", "Mo", "W"}
CORRECTED = {"O", "F", "Cl", "Br", "I", "N", "S", "Se", "Te", "H", "Sb", "Si"}


def stage_scales() -> dict[str, Any]:
    """MP-20 (claimed MP2020) minus matbench_mp_e_form (legacy) on shared reduced formulas."""
    from pymatgen.core import Composition

    from evaluation.hull.mp_entries import mp_formation_energy_reference
    from evaluation.hull.screening import read_mp20_near_hull

    legacy = dict(mp_formation_energy_reference().rows())
    mp20: dict[str, float] = {}
    for formula, energy in read_mp20_near_hull().rows():
        mp20[formula] = min(energy, mp20.get(formula, np.inf))
    groups: dict[str, list[float]] = defaultdict(list)
    for formula in sorted(set(legacy) & set(mp20)):
        elements = {el.symbol for el in Composition(formula)}
        if "O" in elements and elements & U_ELEMENTS:
            group = "oxides of U elements (U corrections differ)"
        elif "O" in elements:
            group = "oxides without U elements (oxide correction -0.687 vs -0.702)"
        elif elements & (CORRECTED | U_ELEMENTS):
            group = "other corrected compounds"
        else:
            group = "no correction in either scheme"
        groups[group].append(mp20[formula] - legacy[formula])
    table = {
        group: {
            "n": len(values),
            "median_mp20_minus_legacy": float(np.median(values)),
            "mae": float(np.mean(np.abs(values))),
        }
        for group, values in groups.items()
    }
    examples = {
        f: {"mp20": mp20[f], "legacy": legacy[f]} for f in ("Fe2O3", "Co3O4", "Li2O", "NaCl")
    }
    return {"groups": table, "examples": examples}


def known_phases_with_structures(n: int, seed: int) -> list[Any]:
    """``n`` MP-20 near-hull phases whose MP structure is in the shipped reference set."""
    import csv
    import gzip

    from evaluation.hull.known_phases import MP20_NEAR_HULL_FILE
    from evaluation.hull.screening import read_mp20_near_hull  # noqa: F401 (file present)
    from evaluation.paths import reference_dir
    from evaluation.reference import load_reference

    with gzip.open(reference_dir() / MP20_NEAR_HULL_FILE, "rt") as handle:
        rows = {r["material_id"]: r for r in csv.DictReader(l for l in handle if l[0] != "#")}
    from evaluation.hull.mlff_reference import reference_elements
    from evaluation.hull.mp_entries import mp_elemental_energies

    # every element needs an MP DFT energy and polymorphs for the MLFF's own elemental energy
    known = set(mp_elemental_energies()) & reference_elements()
    records = [r for r in load_reference().records if r.source == "lemat/mp" and r.id in rows]
    records = [
        r
        for r in records
        if len(r.structure.composition.elements) > 1
        and {el.symbol for el in r.structure.composition} <= known
    ]
    random.Random(seed).shuffle(records)
    return [(record, float(rows[record.id]["e_form"])) for record in records[:n]]


def stage_screening(n_phases: int, models: list[str], jobs: int, seed: int) -> dict[str, Any]:
    from evaluation.hull.core import MP2020_CORRECTION, MP_GGA_LEVEL, EntryHullReference
    from evaluation.hull.mlff_reference import (
        HullCandidates,
        energy_cache_path,
        energy_key,
        mlff_elemental_energies,
        prefetch_reference_energies,
        read_energy_cache,
    )
    from evaluation.hull.screening import known_phase_hull, mp2020_energy_per_atom
    from evaluation.reference import load_reference
    from evaluation.relax.calculators import load_calculator
    from evaluation.relax.parallel import relax_parallel

    phases = known_phases_with_structures(n_phases, seed)
    hull = known_phase_hull()
    truth = [
        hull.dft.e_above_hull(
            r.structure.composition,
            e_form,
            level_of_theory=MP_GGA_LEVEL,
            correction=MP2020_CORRECTION,
        ).e_above_hull
        for r, e_form in phases
    ]
    candidates = HullCandidates(load_reference().records)
    fmax, steps = 0.05, 300
    report: dict[str, Any] = {"n_phases": len(phases), "fmax": fmax, "max_steps": steps}
    for model in models:
        started = time.perf_counter()
        relaxed = relax_parallel(
            [r.structure for r, _ in phases],
            model,
            fmax,
            steps,
            n_jobs=jobs,
            desc=f"phases {model}",
        )
        _, tag = load_calculator(model)
        systems = sorted({r.chemsys for r, _ in phases})
        prefetch_reference_energies(systems, candidates, model, fmax, steps, jobs)
        cached = read_energy_cache(energy_cache_path(tag))
        elements = sorted({el.symbol for r, _ in phases for el in r.structure.composition})
        mu_mlff = mlff_elemental_energies(elements, model, fmax=fmax, max_steps=steps)
        rows = []
        for (record, _), result, dft_e_hull in zip(phases, relaxed, truth, strict=True):
            if result.energy_per_atom is None or result.structure is None:
                continue
            structure, energy = result.structure, result.energy_per_atom
            row = {
                "id": record.id,
                "formula": record.formula,
                "dft": dft_e_hull,
                "status": result.status,
            }
            known = hull.e_above_hull(structure, energy, level_of_theory=tag)
            row["known-phases"] = known.e_above_hull
            row["coverage:known-phases"] = known.coverage.complete
            row["fraction:known-phases"] = known.coverage.fraction
            # the same DFT hull, formation energy against the MLFF's own elements
            corrected = mp2020_energy_per_atom(structure, energy, tag)
            composition = structure.composition
            e_form = corrected - sum(
                composition.get_atomic_fraction(el) * mu_mlff[el.symbol] for el in composition
            )
            row["known-phases/mlff-elements"] = hull.dft.e_above_hull(
                composition, e_form, level_of_theory=MP_GGA_LEVEL, correction=MP2020_CORRECTION
            ).e_above_hull
            # the same-level hull of the shipped compounds, this phase left out
            entries = []
            for other in candidates.within(record.chemsys):
                cached_row = cached.get(energy_key(other.structure, fmax, steps))
                if other.label == record.label or not cached_row or cached_row["energy"] is None:
                    continue
                if cached_row["status"] in ("ok", "not_converged"):
                    entries.append((other.structure.composition, float(cached_row["energy"])))
            same = EntryHullReference(
                entries, {el: mu_mlff[el] for el in record.chemsys.split("-")}, level_of_theory=tag
            )
            same_result = same.e_above_hull(composition, energy, level_of_theory=tag, kind="total")
            row["same-level"] = same_result.e_above_hull
            row["coverage:same-level"] = same_result.coverage.complete
            row["fraction:same-level"] = same_result.coverage.fraction
            rows.append(row)
        table = pd.DataFrame(rows)
        summary = {}
        for choice in ("known-phases", "known-phases/mlff-elements", "same-level"):
            error = table[choice] - table["dft"]
            summary[choice] = {
                "mae": float(error.abs().mean()),
                "median_error": float(error.median()),
                "min_error": float(error.min()),
                "p05_p95_error": [float(error.quantile(0.05)), float(error.quantile(0.95))],
                "within_0.1_of_dft": float((error.abs() <= 0.1).mean()),
                "judged_stable": float((table[choice] <= 0.1).mean()),
            }
            hull_name = choice.split("/")[0]
            summary[choice]["complete_coverage"] = float(table[f"coverage:{hull_name}"].mean())
            summary[choice]["mean_coverage"] = float(table[f"fraction:{hull_name}"].mean())
        worst = table.assign(error=table["known-phases"] - table["dft"]).sort_values("error")
        report[tag] = {
            "n_scored": len(table),
            "seconds": time.perf_counter() - started,
            "hulls": summary,
            "largest_known_phase_errors": worst[["id", "formula", "dft", "known-phases"]]
            .tail(5)
            .to_dict("records"),
        }
    return report


def stage_coverage(n_samples: int, seed: int) -> dict[str, Any]:

    from evaluation.hull.known_phases import known_phases
    from evaluation.hull.mlff_reference import HullCandidates
    from evaluation.hull.mp_entries import mp_formation_energy_reference  # noqa: F401
    from evaluation.hull.screening import known_phase_hull
    from evaluation.io.crystals import read_crystals
    from evaluation.reference import load_reference

    with tempfile.TemporaryDirectory() as folder:
        samples = Path(folder) / "samples.extxyz"
        command = [sys.executable, "-m", "pipeline", "generate", "--num-samples", str(n_samples)]
        command += ["--seed", str(seed), "--out", str(samples)]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        generated = [
            r.structure.composition.chemical_system for r in read_crystals(samples).records
        ]
    reference = load_reference().records
    pool = [
        r.chemsys
        for r in reference
        if len(r.structure) <= 20 and len(r.structure.composition.elements) > 1
    ]
    rss = random.Random(seed).choices(pool, k=n_samples)
    dft = known_phase_hull().dft
    candidates = HullCandidates(reference)
    table = known_phases()

    def complete(systems: list[str]) -> dict[str, float]:
        known, same = [], []
        for system in systems:
            elements = system.split("-")
            known.append(dft.coverage(elements))
            present = {r.formula for r in candidates.within(system)}
            same.append(table.coverage(elements, present))
        return {
            "complete:known-phases": float(np.mean([c.complete for c in known])),
            "complete:same-level": float(np.mean([c.complete for c in same])),
            "mean_fraction:known-phases": float(np.mean([c.fraction for c in known])),
            "mean_fraction:same-level": float(np.mean([c.fraction for c in same])),
            "no_known_hull_phase": float(np.mean([c.n_known == 0 for c in known])),
            "mean_elements": float(np.mean([len(s.split("-")) for s in systems])),
        }

    return {"n": n_samples, "mattergen": complete(generated), "rss": complete(rss)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-phases", type=int, default=150)
    parser.add_argument("--models", default="chgnet,7net-0")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-samples", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {"machine": f"{platform.node()} ({os.cpu_count()} cores)"}
    report["scales"] = stage_scales()
    print(json.dumps(report["scales"], indent=1))
    report["screening"] = stage_screening(
        args.n_phases, args.models.split(","), args.jobs, args.seed
    )
    print(json.dumps(report["screening"], indent=1))
    if not args.skip_samples:
        report["coverage"] = stage_coverage(args.samples, args.seed)
        print(json.dumps(report["coverage"], indent=1))
    report["seconds"] = time.perf_counter() - started
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
