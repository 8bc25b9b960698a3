"""Release a fine-tuned checkpoint (``crystalforge finetune``): strip its training state and write
it under data/checkpoints/, where ``generate --condition`` finds it by its properties.

    python scripts/release_finetuned.py --run runs/ft-chemsys --name crystalforge-small-v3-chemsys
        [--type-temperature 0.7] [--hardware "..."]

Its model-card section is written by hand in ``scripts/model_card_notes.md`` from
``benchmarks/conditioning.py``'s results.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "data" / "checkpoints"
MAX_MEGABYTES = 25


def main() -> None:
    from model.checkpoint import export_checkpoint, read_payload
    from model.finetune import specs_of

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--type-temperature", type=float, default=None)
    parser.add_argument("--hardware", default=f"{platform.machine()} CPU")
    parser.add_argument(
        "--out-dir", type=Path, default=CHECKPOINTS, help="e.g. data/checkpoints/benchmarks"
    )
    args = parser.parse_args()

    run = json.loads((args.run / "history.json").read_text())
    source = args.run / "best.pt"
    specs = specs_of(read_payload(source))
    provenance = {
        "name": args.name,
        "base": run["base"],
        "data": run["data"],
        "properties": [spec.name for spec in specs],
        "steps": int(run["step"]),
        "best_validation": run["best_validation"],
        "wall_seconds": float(run["wall_seconds"]),
        "hardware": args.hardware,
        "excluded_systems": run.get("excluded_systems"),
    }
    overrides = {}
    if args.type_temperature is not None:
        overrides["type_temperature"] = args.type_temperature
    args.out_dir.mkdir(parents=True, exist_ok=True)
    destination = args.out_dir / f"{args.name}.pt"
    export_checkpoint(source, destination, provenance, diffusion=overrides)
    size = destination.stat().st_size / 1e6
    if size > MAX_MEGABYTES:
        destination.unlink()
        raise SystemExit(f"{destination} is {size:.1f} MB, above {MAX_MEGABYTES} MB")
    labelled = ", ".join(f"{s.name} ({s.num_labels} labels, {s.level_of_theory})" for s in specs)
    print(f"released {destination} ({size:.2f} MB): {labelled}")


if __name__ == "__main__":
    main()
