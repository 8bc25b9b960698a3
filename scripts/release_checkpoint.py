"""Release a trained checkpoint: strip its training state, write it under data/checkpoints/ and
write its model card (data, size, steps, wall time, hardware, loss curves, evaluation).

    python scripts/release_checkpoint.py --run runs/small-v2 --dataset runs/dataset
        [--quality benchmarks/results/generation_quality.json] [--notes NOTES.md]
        [--name crystalforge-small-v3]

Inputs: ``RUN/best.pt`` and ``RUN/history.json`` (``crystalforge train``), ``DATASET/report.json``
(``crystalforge data build``), the generation-quality results (benchmarks/generation_quality.py)
when they exist, and free-text notes (the goal analysis) to include verbatim.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "data" / "checkpoints"
#: The issue's bound on what ships in the repository.
MAX_MEGABYTES = 25


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    """Training terms and the validation loss against the step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, [h["train_total"] for h in history], label="train (mean since last point)")
    left.plot(steps, [h["validation"] for h in history], label="validation (fixed noise)")
    left.set(xlabel="step", ylabel="loss A40", title="total loss")
    left.legend()
    for key in sorted(k for k in history[0] if k.startswith("train_") and k != "train_total"):
        right.plot(steps, [h[key] for h in history], label=key.removeprefix("train_"))
    right.set(xlabel="step", ylabel="loss term (unweighted)", title="training terms", yscale="log")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _count_table(counts: dict[str, Any]) -> list[str]:
    lines = ["| step | count |", "|---|---|"]
    read = counts["read"]
    lines.append(f"| read ({len(read)} sources) | {sum(read.values())} |")
    for reason, n in counts["dropped"].items():
        lines.append(f"| dropped: {reason} | {n} |")
    lines.append(f"| selected and labelled | {sum(counts['selected'].values())} |")
    lines.append(f"| labelled: relaxation status | {counts['labelled']} |")
    lines.append(f"| with an E_hull | {counts['with_e_hull']} |")
    below = next(k for k in counts if k.startswith("e_hull_below_"))
    lines.append(f"| E_hull < {below.removeprefix('e_hull_below_')} eV/atom | {counts[below]} |")
    lines.append(f"| training / validation split | {counts['train']} / {counts['validation']} |")
    return lines


def model_card(
    name: str,
    checkpoint: Path,
    payload: dict[str, Any],
    run: dict[str, Any],
    dataset: dict[str, Any],
    quality: dict[str, Any] | None,
    quality_table: str | None,
    notes: str,
) -> str:
    config = payload["config"]
    network, diffusion, training = config["network"], config["diffusion"], config["training"]
    parameters = sum(t.numel() for t in payload["state_dict"].values())
    counts = dataset["counts"]
    hull = dataset["hull"]
    consistency = hull["mp_consistency"]
    history = payload["history"]
    best = min(history, key=lambda h: h["validation"])
    lines = [
        f"# {name}: model card",
        "",
        "The generative model that ships with CrystalForge: MatterGen's joint diffusion of atom "
        "types, fractional coordinates and lattice (the preprint's A17-A30) with a "
        "GemNet-dT-style score network, trained unconditionally on CrystalForge's own curated, "
        "CHGNet-labelled training set. It is the default of `crystalforge generate`; "
        "`crystalforge campaign run --generator mattergen` uses its fine-tuned chemical-system "
        "version when that ships (see the end of this card).",
        "",
        "## The file",
        f"- `data/checkpoints/{checkpoint.name}`: {checkpoint.stat().st_size / 1e6:.2f} MB, "
        f"sha256 `{_sha256(checkpoint)[:16]}...`; weights only (no optimizer state), loads with "
        "`torch.load(weights_only=True)`.",
        f"- Config `{config['name']}`: {network['num_layers']} message-passing layers, hidden "
        f"{network['hidden_dim']}, cutoff {network['cutoff']} Å, {network['max_neighbors']} "
        f"neighbours, {parameters / 1e6:.2f} M parameters (the paper's: 4 layers, hidden 512, "
        "about 10x more parameters).",
        f"- Sampling: {diffusion['sampling_steps'] or diffusion['num_steps']} predictor-corrector "
        f"steps by default (trained on the T = {diffusion['num_steps']} grid; `--steps 1000` "
        "samples on it), atom counts from the training distribution"
        + (
            f"; atom types drawn at temperature {diffusion.get('type_temperature', 1.0):g} "
            "(`--type-temperature 1` is the paper's sampler; see the goals below)."
            if diffusion.get("type_temperature", 1.0) != 1.0
            else "."
        ),
        "",
        "## Training data",
        f"Built by `crystalforge data build` ({', '.join(dataset['sources'])}); every energy is "
        f"at one level of theory, `{dataset['level_of_theory']}`, relaxed with FIRE to "
        f"{dataset['settings']['fmax']} eV/Å within {dataset['settings']['max_steps']} steps.",
        "",
        *_count_table(counts),
        "",
        f"- Kept per source: {counts['kept_by_source']}.",
        "- Formation energies use CHGNet's own elemental ground states (the lowest of the three "
        "lowest MP polymorphs of each element, relaxed with CHGNet).",
        f"- Hull: `{hull['name']}` ({hull['entries']} entries). MP formation energies were "
        "compared with CHGNet's on the formulas both contain: for compositions no MP "
        f"correction touches, MAE {_fmt(consistency['uncorrected']['mae'])} eV/atom over "
        f"{consistency['uncorrected']['n_formulas']} formulas; for corrected ones (oxides, "
        f"halides, ...), MAE {_fmt(consistency['corrected']['mae'])} eV/atom over "
        f"{consistency['corrected']['n_formulas']}. MP points join the hull only for "
        f"uncorrected compositions and only when that MAE is at most "
        f"{dataset['settings']['mp_tolerance']} eV/atom: "
        f"{'they did' if hull['mp_used'] else 'they did not'} ({hull['mp_points']} points).",
        "- The tensors hold the input (DFT-relaxed) geometries, Niggli-reduced in the symmetric "
        "lattice form. Splits are by a CRC32 hash of the id: `labels.csv.gz` marks "
        f"{dataset['settings'].get('validation_fraction', 0.1):.0%} as validation; the trainer "
        f"held out {training.get('validation_fraction', 0.05):.0%} by the same hash (a subset of "
        "those).",
        "- Credit: Materials Project, Alexandria, JARVIS-DFT and LeMat-Bulk samples through "
        "LeMaterial (CC-BY-4.0)"
        + (
            "; perov_5 and carbon_24 from the CDVAE benchmark splits."
            if any("perov_5" in s or "carbon_24" in s for s in dataset["sources"])
            else "."
        ),
        "",
        "## Training",
        f"- Hardware: {run.get('hardware', run.get('device'))}; device `{run['device']}`.",
        f"- {run['step']} steps of batch {training['batch_size']}, Adam at "
        f"{training['learning_rate']} with ReduceLROnPlateau, {run['wall_seconds'] / 60:.1f} min "
        "wall time.",
        f"- Best validation loss {best['validation']:.4f} at step {best['step']} (this "
        f"checkpoint); first validation {history[0]['validation']:.4f}.",
        f"- Loss curves: `{checkpoint.stem}-loss.png`.",
        "",
        f"![loss curves]({checkpoint.stem}-loss.png)",
        "",
        "## Evaluation: unconditional samples against random structure search"
        + (
            f" ({quality['mattergen']['summary']['n_structures']:,} and "
            f"{quality['rss']['summary']['n_structures']:,})"
            if quality
            else ""
        ),
    ]
    if quality and quality_table:
        lines += [
            "Both sets were evaluated by `crystalforge evaluate --relax chgnet "
            "--config configs/evaluation/benchmark.yaml` against the shipped reference set "
            "(`benchmarks/generation_quality.py`; full figures in "
            "`benchmarks/results/generation_quality.json`).",
            "",
            quality_table,
        ]
        if (ROOT / "benchmarks/results/generation_quality_distributions.png").exists():
            lines += [
                "Elements, atoms per cell and space groups against the training data:",
                "",
                "![distributions](../../benchmarks/results/generation_quality_distributions.png)",
            ]
    else:
        lines.append("Not run yet: `python benchmarks/generation_quality.py --dataset ...`.")
    lines += ["", notes.strip(), ""] if notes.strip() else [""]
    lines += [
        "## Reproduce",
        "```bash",
        "S=../shared/data/structures",
        "crystalforge data build "
        + " ".join(_shared_path(source) for source in dataset["sources"])
        + " --out runs/dataset --jobs 2",
        f"crystalforge train --config configs/model/{config['name']}.yaml "
        f"--data runs/dataset/dataset.pt --out runs/{name} --max-steps {run['step']}",
        f"python scripts/release_checkpoint.py --run runs/{name} --dataset runs/dataset "
        f"--sampling-steps {diffusion['sampling_steps'] or diffusion['num_steps']}",
        "python benchmarks/generation_quality.py --dataset runs/dataset",
        "```",
        "",
    ]
    return "\n".join(lines)


def _shared_path(source: str) -> str:
    """``.../shared/data/structures/lemat/mp`` -> ``$S/lemat/mp`` (``S``: shared structures)."""
    marker = "data/structures/"
    return "$S/" + source.split(marker, 1)[1] if marker in source else source


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    import torch

    from model.checkpoint import export_checkpoint, read_payload

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument(
        "--quality", type=Path, default=ROOT / "benchmarks/results/generation_quality.json"
    )
    parser.add_argument("--notes", type=Path, default=None)
    parser.add_argument("--name", default="crystalforge-small-v3")
    parser.add_argument("--out-dir", type=Path, default=CHECKPOINTS)
    parser.add_argument(
        "--sampling-steps", type=int, default=None, help="default sampling steps of the release"
    )
    parser.add_argument(
        "--type-temperature",
        type=float,
        default=None,
        help="default temperature of the type posterior when sampling (1 = the paper's)",
    )
    parser.add_argument(
        "--hardware", default=f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads"
    )
    args = parser.parse_args()

    run = json.loads((args.run / "history.json").read_text())
    run.setdefault("hardware", args.hardware)
    dataset = json.loads((args.dataset / "report.json").read_text())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out_dir / f"{args.name}.pt"
    provenance = {
        "name": args.name,
        "dataset": str(args.dataset),
        "dataset_level_of_theory": dataset["level_of_theory"],
        "training_crystals": int(dataset["counts"]["training_set"]),
        "steps": int(run["step"]),
        "wall_seconds": float(run["wall_seconds"]),
        "hardware": str(run["hardware"]),
    }
    overrides = {"sampling_steps": args.sampling_steps} if args.sampling_steps else {}
    if args.type_temperature is not None:
        overrides["type_temperature"] = args.type_temperature
    export_checkpoint(args.run / "best.pt", checkpoint, provenance, diffusion=overrides)
    size_mb = checkpoint.stat().st_size / 1e6
    if size_mb > MAX_MEGABYTES:
        raise SystemExit(f"{checkpoint} is {size_mb:.1f} MB, above {MAX_MEGABYTES} MB")
    payload = read_payload(checkpoint)
    # the whole run (history.json), not the history stored with the best checkpoint
    plot_losses(run["history"], args.out_dir / f"{args.name}-loss.png")
    quality = json.loads(args.quality.read_text()) if args.quality.exists() else None
    table_path = args.quality.with_suffix(".md")
    table = table_path.read_text() if quality and table_path.exists() else None
    notes = args.notes.read_text() if args.notes else ""
    card = model_card(args.name, checkpoint, payload, run, dataset, quality, table, notes)
    (args.out_dir / "MODEL_CARD.md").write_text(card)
    print(f"released {checkpoint} ({size_mb:.2f} MB) and {args.out_dir / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
