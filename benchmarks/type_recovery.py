"""Diagnostic: has a checkpoint learned which elements go together?

    python benchmarks/type_recovery.py [--checkpoint data/checkpoints/crystalforge-small-v1.pt]
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
import math
from collections import Counter
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint
from model.crystal import MASK_CLASS, types_to_classes
from model.data import CrystalTensors

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "type_recovery.json"


def copy_baseline(classes0: torch.Tensor, masked: torch.Tensor, atom_batch: torch.Tensor) -> float:
    """Accuracy of predicting each masked atom as its crystal's most common visible element."""
    hits, total = 0, 0
    for crystal in atom_batch.unique().tolist():
        atoms = atom_batch == crystal
        visible = classes0[atoms & ~masked].tolist()
        guess = Counter(visible).most_common(1)[0][0] if visible else -1
        hidden = classes0[atoms & masked]
        hits += int((hidden == guess).sum())
        total += len(hidden)
    return hits / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    checkpoint = ROOT / "data" / "checkpoints" / "crystalforge-small-v1.pt"
    parser.add_argument("--checkpoint", default=str(checkpoint))
    parser.add_argument("--dataset", default=str(ROOT / "runs/dataset/dataset.pt"))
    parser.add_argument("--n-crystals", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    network = load_checkpoint(args.checkpoint).network.eval()
    data = CrystalTensors.load(args.dataset)
    _, validation = data.split(0.1)
    batch = data.batch(validation[: args.n_crystals])
    classes0 = types_to_classes(batch.atomic_numbers)
    frequencies = torch.bincount(types_to_classes(data.atomic_numbers), minlength=MASK_CLASS + 1)
    marginal = frequencies[:MASK_CLASS].float() / frequencies[:MASK_CLASS].sum()
    rows = []
    for step in (100, 300, 500, 700, 900, 1000):
        steps = torch.full((batch.num_crystals,), step)
        with torch.no_grad():
            noisy = network.diffusion.corrupt(batch, steps, network.statistics.volume_per_atom)
            output = network(noisy.batch, noisy.t)
        logits = output.type_logits.clone()
        logits[:, MASK_CLASS] = -math.inf
        log_p = torch.log_softmax(logits, dim=-1)
        masked = noisy.types_t == MASK_CLASS
        truth = classes0[masked]
        predicted = log_p[masked].argmax(-1)
        same_crystal = [
            int(p) in set(classes0[batch.batch == batch.batch[i]].tolist())
            for p, i in zip(predicted, torch.nonzero(masked).squeeze(-1), strict=True)
        ]
        rows.append(
            {
                "step": step,
                "masked_atoms": int(masked.sum()),
                "accuracy": float((predicted == truth).float().mean()),
                "copy_baseline_accuracy": copy_baseline(classes0, masked, batch.batch),
                "in_crystal": sum(same_crystal) / len(same_crystal),
                "nll": float(-log_p[masked].gather(1, truth[:, None]).mean()),
                "marginal_nll": float(-marginal[truth].clamp_min(1e-12).log().mean()),
            }
        )
        r = rows[-1]
        print(
            f"t={step / 1000:.1f}: masked {r['masked_atoms']:5d}  accuracy {r['accuracy']:.3f} "
            f"(copy-visible baseline {r['copy_baseline_accuracy']:.3f})  in-crystal "
            f"{r['in_crystal']:.3f}  NLL {r['nll']:.2f} (marginal {r['marginal_nll']:.2f})"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
