"""Train a config on one GPU for a wall-clock budget (the device tool's ~15 minutes).

    python3 scripts/train_gpu.py --config configs/model/medium.yaml --data runs/dataset/dataset.pt
        --out $OUT/run --minutes 9 [--batch-size 256] [--learning-rate 1e-3] [--init CKPT]

Needs only torch, numpy and PyYAML (the model core), so it runs on the GPU machine's stock
Python. Trains in chunks of ``--chunk`` steps, resuming exactly from ``last.pt`` after each, until
the budget is spent; bf16 autocast follows the config's ``mixed_precision``. Prints and writes
``report.json``: steps, steps per second, crystals per second, the validation loss at each
validation, the best one, and the device. At the end ``best.pt`` and ``last.pt`` are replaced by
weights-only exports (``best-weights.pt``, ``last-weights.pt``: no optimizer state), which stay
within the device tool's 16 MB per returned file for configs of up to about 4 M parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import torch

    from model.checkpoint import export_checkpoint
    from model.config import load_model_config
    from model.data import CrystalTensors
    from model.train import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=9.0)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    config = load_model_config(args.config)
    if args.batch_size:
        config.training.batch_size = args.batch_size
    if args.learning_rate:
        config.training.learning_rate = args.learning_rate
    config.training.validate_every = min(config.training.validate_every, args.chunk)
    config.training.checkpoint_every = args.chunk
    data = CrystalTensors.load(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60
    started = time.perf_counter()
    step, resume, result = 0, None, None
    while time.perf_counter() - started < budget:
        chunk_started = time.perf_counter()
        result = train(
            config,
            data,
            args.out,
            resume=resume,
            max_steps=step + args.chunk,
            device=args.device,
            log=lambda line: print(line, flush=True),
        )
        step, resume = result.step, result.last_checkpoint
        per_chunk = time.perf_counter() - chunk_started
        if time.perf_counter() - started + per_chunk > budget:
            break  # the next chunk would overrun
    seconds = time.perf_counter() - started
    assert result is not None
    provenance = {
        "trained_by": "scripts/train_gpu.py",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        "data": str(args.data),
        "wall_seconds": time.perf_counter() - started,
    }
    for name in ("best.pt", "last.pt"):
        if (args.out / name).exists():
            weights = args.out / name.replace(".pt", "-weights.pt")
            export_checkpoint(args.out / name, weights, provenance)
            (args.out / name).unlink()  # with optimizer state it may not fit the way back
    report = {
        "config": str(args.config),
        "device": provenance["device"],
        "steps": step,
        "seconds": seconds,
        "steps_per_second": step / seconds,
        "crystals_per_second": step * config.training.batch_size / seconds,
        "batch_size": config.training.batch_size,
        "learning_rate": config.training.learning_rate,
        "mixed_precision": config.training.mixed_precision,
        "best_validation": result.best_validation,
        "history": result.history,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
