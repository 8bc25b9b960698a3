"""Benchmark: what each change to the model does, on the same data, steps and seed.

    python benchmarks/model_ablation.py --data runs/lemat.pt [--perov runs/perov5.pt]
        [--steps 1500] [--perov-steps 1800] [--samples 96] [--variants baseline,ce,...]
        [--work runs/ablation]

Each variant is the v1 small recipe (``configs/model/small.yaml`` with every departure switched
off, :data:`V1_RECIPE`) with a few settings changed (:data:`VARIANTS`),
trained from scratch with the same seed and batch order for ``--steps`` steps on one CPU
thread, then measured:

* type recovery (``model.diagnostics``) at t = 0.1, 0.5 and 0.9 against the copy-visible and
  marginal baselines;
* ``--samples`` unconditional samples (the model's default sampling grid): elements per cell,
  the share with at most 4, P1 fraction, space groups, the share with an oxidation-state guess,
  minimum distances (``evaluation.metrics.chemistry``), and TV distances to the training data;
* with ``--perov``: the same variant trained on perov_5 for ``--perov-steps`` and sampled: the
  share of 5-atom samples with 2 cations and 3 anions, and the share that match the cubic
  perovskite prototype with the anions on its X sites.

Results go to ``benchmarks/results/model_ablation.json`` (one entry per variant, merged with
earlier runs, so variants can be added one at a time) and are printed as a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "model_ablation.json"
SMALL = ROOT / "configs" / "model" / "small.yaml"

#: small.yaml as v1 shipped it: the baseline every variant changes.
V1_RECIPE = {
    "network.crystal_context": False,
    "network.neighbor_shells": False,
    "network.smooth_outputs": False,
    "network.avg_neighbors": 0.0,
    "network.max_neighbors": 16,
    "network.cutoff": 5.0,
    "loss.cross_entropy": 0.01,
}
#: Variant -> changes to the v1 recipe ("section.key": value).
GRAPH_FIXES = {
    "network.neighbor_shells": True,
    "network.smooth_outputs": True,
    "network.max_neighbors": 48,
    "network.cutoff": 4.5,
    "network.avg_neighbors": 20.0,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "ce": {"loss.cross_entropy": 1.0},
    "context": {"network.crystal_context": True},
    "ce+context": {"loss.cross_entropy": 1.0, "network.crystal_context": True},
    "graph": GRAPH_FIXES,
    "all": {"loss.cross_entropy": 1.0, "network.crystal_context": True, **GRAPH_FIXES},
    "all+coord1": {
        "loss.cross_entropy": 1.0,
        "network.crystal_context": True,
        **GRAPH_FIXES,
        "loss.coord": 1.0,
    },
    "all+batch64": {
        "loss.cross_entropy": 1.0,
        "network.crystal_context": True,
        **GRAPH_FIXES,
        "training.batch_size": 64,
        "training.learning_rate": 6e-4,
    },
    "all+no-lattice-prior": {
        "loss.cross_entropy": 1.0,
        "network.crystal_context": True,
        **GRAPH_FIXES,
        "network.lattice_prior_score": False,
    },
    "all+sigma1": {
        "loss.cross_entropy": 1.0,
        "network.crystal_context": True,
        **GRAPH_FIXES,
        "diffusion.coord_sigma_max": 1.0,
    },
}
ANIONS = {"N", "O", "F", "S", "Cl", "Se", "Br", "Te", "I", "P", "As", "C", "H"}


def variant_config(name: str, steps: int):
    from model.config import load_model_config

    config = copy.deepcopy(load_model_config(SMALL))
    for key, value in {**V1_RECIPE, **VARIANTS[name]}.items():
        section, field = key.split(".")
        setattr(getattr(config, section), field, value)
    config.name = f"ablation-{name}"
    config.training.max_steps = steps
    config.training.validate_every = max(steps // 5, 1)
    config.training.checkpoint_every = steps
    return config


def train_variant(name: str, data_path: Path, steps: int, work: Path) -> tuple[Any, float]:
    """Train (or reuse) one variant; returns the network and the training wall time."""
    from model.checkpoint import load_checkpoint
    from model.data import CrystalTensors
    from model.train import train

    out = work / name
    last = out / "last.pt"
    timing = out / "seconds.json"
    if not last.exists():
        data = CrystalTensors.load(data_path)
        result = train(variant_config(name, steps), data, out, device="cpu", log=lambda _: None)
        timing.write_text(json.dumps({"seconds": result.wall_seconds}))
    loaded = load_checkpoint(last)
    loaded.network.final_losses = loaded.payload["history"][-1]  # the last validation record
    return loaded.network.eval(), json.loads(timing.read_text())["seconds"]


def draw(network, count: int, seed: int = 0):
    """``count`` unconditional samples as pymatgen structures (the model's sampling grid)."""
    from model.sampler import sample
    from model.structures import batch_to_structures

    generator = torch.Generator().manual_seed(seed)
    num_atoms = network.statistics.sample_num_atoms(count, generator)
    result = sample(network, num_atoms, generator=generator)
    return batch_to_structures(result.crystals)


def perovskite_checks(structures) -> dict[str, float]:
    """Shares of 5-atom, 2-cation + 3-anion samples and of cubic-perovskite matches."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.core.structure_matcher import StructureMatcher

    prototype = Structure(
        Lattice.cubic(4.0),
        ["Ba", "Ba", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    matcher = StructureMatcher(ltol=0.3, stol=0.4, angle_tol=8)
    roles, matches = 0, 0
    for structure in structures:
        anions = sum(site.specie.symbol in ANIONS for site in structure)
        if len(structure) == 5 and anions == 3:
            roles += 1
            decorated = structure.copy()
            decorated.replace_species(
                {el: ("O" if el.symbol in ANIONS else "Ba") for el in structure.composition}
            )
            matches += bool(matcher.fit(decorated, prototype))
    return {
        "two_cations_three_anions": roles / len(structures),
        "prototype": matches / len(structures),
    }


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from evaluation.metrics.chemistry import compare, describe
    from model.data import CrystalTensors
    from model.diagnostics import element_marginal, type_recovery
    from model.structures import batch_to_structures

    work = Path(args.work)
    network, seconds = train_variant(name, Path(args.data), args.steps, work)
    data = CrystalTensors.load(args.data)
    _, validation = data.split(0.1)
    rows = type_recovery(
        network,
        data.batch(validation[:256]),
        element_marginal(data.atomic_numbers),
        steps=(100, 500, 900),
    )
    started = time.perf_counter()
    samples = draw(network, args.samples)
    sampling_seconds = time.perf_counter() - started
    training = describe(batch_to_structures(data.batch(validation[:512])))
    profile = describe(samples)
    entry: dict[str, Any] = {
        "changes": VARIANTS[name],
        "steps": args.steps,
        "train_seconds": seconds,
        "parameters": sum(p.numel() for p in network.parameters()),
        "type_recovery": rows,
        "samples": {k: v for k, v in profile.items() if not isinstance(v, dict)},
        "tv_to_training": compare(profile, training),
        "training_data": {k: v for k, v in training.items() if not isinstance(v, dict)},
        "sampling_seconds": sampling_seconds,
        "final_losses": {
            k: v for k, v in network.final_losses.items() if k.startswith(("train_", "validation"))
        },
    }
    if args.perov:
        perov_network, perov_seconds = train_variant(
            name, Path(args.perov), args.perov_steps, work / "perov5"
        )
        entry["perov5"] = {
            "steps": args.perov_steps,
            "train_seconds": perov_seconds,
            **perovskite_checks(draw(perov_network, args.samples)),
            "p1_fraction": describe(draw(perov_network, args.samples, seed=1))["p1_fraction"],
        }
    return entry


def table(results: dict[str, Any]) -> str:
    lines = [
        "| variant | steps | s | recovery t=0.1 (copy) | in crystal | elements/cell | <=4 el. | P1 "
        "| d>=0.5 | coord | cell | perov ABX3 | perov proto |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        first = entry["type_recovery"][0]
        samples = entry["samples"]
        perov = entry.get("perov5", {})
        lines.append(
            f"| {name} | {entry['steps']} | {entry['train_seconds']:.0f} | "
            f"{first['accuracy']:.2f} ({first['copy_baseline_accuracy']:.2f}) | "
            f"{first['in_crystal']:.2f} | {samples['mean_elements_per_cell']:.2f} | "
            f"{samples['share_at_most_4_elements']:.2f} | {samples['p1_fraction']:.2f} | "
            f"{samples['share_min_distance_ok']:.2f} | "
            f"{entry.get('final_losses', {}).get('train_coord', float('nan')):.1f} | "
            f"{entry.get('final_losses', {}).get('train_cell', float('nan')):.2f} | "
            f"{perov.get('two_cations_three_anions', float('nan')):.2f} | "
            f"{perov.get('prototype', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--perov", default=None)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--perov-steps", type=int, default=1800)
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--variants", default="baseline,ce,context,ce+context,graph,all")
    parser.add_argument("--work", default=str(ROOT / "runs" / "ablation"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.variants.split(","):
        if name not in VARIANTS:
            parser.error(f"--variants: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    for name in args.variants.split(","):
        results[name] = measure(name, args)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(table({name: results[name]}), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
