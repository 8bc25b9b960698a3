"""Diagnostic: has a checkpoint learned which elements go together?

    python benchmarks/type_recovery.py [--checkpoint CKPT (default: the shipped one)]
        [--dataset runs/dataset/dataset.pt] [--n-crystals 256]

Validation crystals are corrupted by the forward process at several steps (paper A14: each
atom type masked with probability t) and the network predicts the masked types from the rest.
Three numbers per step, over masked atoms:

* ``accuracy``: the argmax prediction is the true element;
* ``in_crystal``: the prediction is one of the crystal's own elements;
* ``nll``: mean −log p(true element), against the ``marginal`` entropy baseline (predicting the
  training set's element frequencies for every atom, which ignores the crystal).

The peer is the trivial predictor that copies the most common *unmasked* element of the same
crystal: a model that has learned chemistry beats it when most types are visible. Figures are
printed and written to ``benchmarks/results/type_recovery.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import json
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint
from model.data import CrystalTensors
from model.diagnostics import element_marginal, type_recovery

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "type_recovery.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from evaluation.paths import default_checkpoint

    parser.add_argument("--checkpoint", default=str(default_checkpoint()))
    parser.add_argument("--dataset", default=str(ROOT / "runs/dataset/dataset.pt"))
    parser.add_argument("--n-crystals", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    network = load_checkpoint(args.checkpoint).network.eval()
    data = CrystalTensors.load(args.dataset)
    _, validation = data.split(0.1)
    batch = data.batch(validation[: args.n_crystals])
    rows = type_recovery(network, batch, element_marginal(data.atomic_numbers), seed=args.seed)
    for r in rows:
        print(
            f"t={r['step'] / 1000:.1f}: masked {r['masked_atoms']:5d}  "
            f"accuracy {r['accuracy']:.3f} "
            f"(copy-visible baseline {r['copy_baseline_accuracy']:.3f})  in-crystal "
            f"{r['in_crystal']:.3f}  NLL {r['nll']:.2f} (marginal {r['marginal_nll']:.2f})"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
