"""Benchmark: sampling throughput of the score network, small and paper-size configs.

    OMP_NUM_THREADS=2 python benchmarks/sampling.py [--configs small paper] [--steps 10]
        [--small-batches 1,8,32,128] [--paper-batches 1,8,32] [--min-seconds 1.0] [--no-gpu]

For each config (``configs/model/<name>.yaml``) a randomly initialised network (data statistics
left at their defaults; throughput does not depend on the weights) is timed on CPU, and on the
GPU when ``torch.cuda.is_available()``, for each batch size:

* ``score evaluations/s``: crystals × network forward calls per second, the forward under
  ``torch.inference_mode``, repeated for at least ``--min-seconds`` (and 3 calls) after one
  warm-up call; the median call is used, so a burst of load from elsewhere does not count. The
  inputs are noisy mid-diffusion states: random species, uniform fractional coordinates, a
  cubic cell at 17 Å³/atom (the default volume per atom), ``t`` uniform in (0, 1].
* ``samples/s``: a full predictor–corrector run (:func:`model.sampler.sample`: one predictor
  and one Langevin corrector evaluation per step) for ``--steps`` steps, timed after a one-step
  warm-up; each step is timed and the median step (the last, corrector-free step left out) gives
  ``samples/s at T = 1000 = batch / (seconds per step × 1000)``. This is an
  EXTRAPOLATION from a short run; crystals the sampler drops (possible with random weights)
  make later steps cheaper, so the number dropped is reported next to it.

Atom counts are drawn uniformly from 4..20 with a fixed seed (the same counts for every
config). The anchor: the official MatterGen implementation samples about 500 structures per
V100-hour, 0.139 samples/s. Torch threads follow ``OMP_NUM_THREADS``. Figures are printed and
written to ``benchmarks/results/sampling.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from model import build_score_network, load_model_config
from model.crystal import CrystalBatch
from model.network.gemnet import ScoreNetwork
from model.sampler import SamplerSettings, sample

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "sampling.json"
#: The official implementation: ~500 structures per V100-hour.
ANCHOR_SAMPLES_PER_S = 500 / 3600
ANCHOR = "official MatterGen, ~500 structures per V100-hour (0.139 samples/s)"
PAPER_STEPS = 1000
VOLUME_PER_ATOM = 17.0  # Å³, the network statistics' default


def atom_counts(batch_size: int, seed: int) -> torch.Tensor:
    """``batch_size`` atom counts drawn uniformly from 4..20."""
    return torch.randint(4, 21, (batch_size,), generator=torch.Generator().manual_seed(seed))


def noisy_batch(num_atoms: torch.Tensor, seed: int, device: torch.device) -> CrystalBatch:
    """A mid-diffusion-like state: random species and positions in a cubic cell."""
    generator = torch.Generator().manual_seed(seed)
    total = int(num_atoms.sum())
    edges = (num_atoms.double() * VOLUME_PER_ATOM) ** (1 / 3)
    return CrystalBatch(
        atomic_numbers=torch.randint(1, 101, (total,), generator=generator),
        frac_coords=torch.rand(total, 3, generator=generator),
        lattice=(edges[:, None, None] * torch.eye(3, dtype=torch.float64)).float(),
        num_atoms=num_atoms,
    ).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_forward(
    network: ScoreNetwork, batch: CrystalBatch, device: torch.device, min_seconds: float
) -> dict[str, float]:
    """Score evaluations per second (crystals × forward calls / s), from the median call."""
    t = torch.rand(batch.num_crystals, generator=torch.Generator().manual_seed(1)).clamp_min(1e-3)
    t = t.to(device)
    network(batch, t)  # warm-up: kernels, allocator
    _sync(device)
    times: list[float] = []
    while sum(times) < min_seconds or len(times) < 3:
        start = time.perf_counter()
        network(batch, t)
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "forward_calls": len(times),
        "seconds_per_forward_median": median,
        "seconds_per_forward_mean": statistics.fmean(times),
        "score_evals_per_s": batch.num_crystals / median,
    }


def time_sampling(
    network: ScoreNetwork, num_atoms: torch.Tensor, steps: int, device: torch.device, seed: int
) -> dict[str, Any]:
    """Seconds per predictor–corrector step (median over ``steps``), extrapolated to T = 1000."""
    generator = torch.Generator(device=device).manual_seed(seed)
    sample(network, num_atoms.to(device), SamplerSettings(num_steps=1), generator=generator)
    _sync(device)
    stamps: list[float] = []

    def progress(_step: int, _total: int) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    settings = SamplerSettings(num_steps=steps)
    result = sample(network, num_atoms.to(device), settings, generator, progress=progress)
    _sync(device)
    elapsed = time.perf_counter() - start
    # the last step has no corrector (t = 0): per-step figures use the steps before it
    marks = [start, *stamps]
    durations = [later - earlier for earlier, later in zip(marks, marks[1:], strict=False)]
    if len(durations) == steps and steps > 1:
        durations = durations[:-1]
    per_step = statistics.median(durations) if durations else elapsed / steps
    return {
        "steps_run": steps,
        "seconds": elapsed,
        "seconds_per_step_median": per_step,
        "seconds_per_step_mean": elapsed / steps,
        "dropped": result.dropped,
        "samples_per_s_at_T1000": num_atoms.shape[0] / (per_step * PAPER_STEPS),
        "samples_per_s_at_T1000_is_extrapolation": True,
    }


def run_config(
    name: str,
    batch_sizes: list[int],
    devices: list[torch.device],
    steps: int,
    min_seconds: float,
    seed: int,
) -> dict[str, Any]:
    config = load_model_config(ROOT / "configs" / "model" / f"{name}.yaml")
    torch.manual_seed(seed)
    network = build_score_network(config).eval()
    parameters = sum(p.numel() for p in network.parameters())
    out: dict[str, Any] = {
        "config": f"configs/model/{name}.yaml",
        "parameters": parameters,
        "network": {
            k: getattr(config.network, k)
            for k in ("hidden_dim", "num_layers", "cutoff", "max_neighbors")
        },
        "devices": {},
    }
    print(f"\n{name}: {parameters / 1e6:.2f} M parameters, {config.network}")
    for device in devices:
        network.to(device)
        rows = []
        for batch_size in batch_sizes:
            counts = atom_counts(batch_size, seed)
            forward = time_forward(network, noisy_batch(counts, seed, device), device, min_seconds)
            sampled = time_sampling(network, counts, steps, device, seed)
            row = {
                "batch_size": batch_size,
                "atoms": int(counts.sum()),
                **forward,
                **sampled,
            }
            rows.append(row)
            dropped = sum(sampled["dropped"].values())
            print(
                f"  {device.type:<4} batch {batch_size:>4} ({row['atoms']:>5} atoms): "
                f"{forward['score_evals_per_s']:9.1f} score evals/s   "
                f"{sampled['seconds_per_step_median']:7.3f} s/step -> "
                f"{sampled['samples_per_s_at_T1000']:8.4f} samples/s at T=1000"
                + (f"  (dropped {dropped})" if dropped else ""),
                flush=True,
            )
        best_evals = max(rows, key=lambda r: r["score_evals_per_s"])
        best_samples = max(rows, key=lambda r: r["samples_per_s_at_T1000"])
        out["devices"][device.type] = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "rows": rows,
            "best_batch_score_evals": best_evals["batch_size"],
            "best_score_evals_per_s": best_evals["score_evals_per_s"],
            "best_batch_samples": best_samples["batch_size"],
            "best_samples_per_s_at_T1000": best_samples["samples_per_s_at_T1000"],
            "samples_per_hour_at_T1000": 3600 * best_samples["samples_per_s_at_T1000"],
            "vs_anchor": best_samples["samples_per_s_at_T1000"] / ANCHOR_SAMPLES_PER_S,
        }
    network.to("cpu")
    return out


def _batches(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["small", "paper"])
    parser.add_argument("--small-batches", type=_batches, default=[1, 8, 32, 128])
    parser.add_argument("--paper-batches", type=_batches, default=[1, 8, 32])
    parser.add_argument("--other-batches", type=_batches, default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=10, help="sampling steps actually run")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="per forward timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gpu", action="store_true", help="CPU only even with a GPU")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_gpu:
        devices.append(torch.device("cuda"))
    print(
        f"torch {torch.__version__}, {threads} CPU thread(s), devices: "
        + ", ".join(d.type for d in devices)
        + f"; {args.steps} sampling steps timed, extrapolated to T = {PAPER_STEPS}"
    )

    load_before = os.getloadavg()
    started = time.perf_counter()
    configs = {}
    for name in args.configs:
        batches = {"small": args.small_batches, "paper": args.paper_batches}
        configs[name] = run_config(
            name,
            batches.get(name, args.other_batches),
            devices,
            args.steps,
            args.min_seconds,
            args.seed,
        )
    results = {
        "anchor": {"description": ANCHOR, "samples_per_s": ANCHOR_SAMPLES_PER_S},
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "num_atoms": "uniform 4..20, fixed seed",
        "weights": "random initialisation, default data statistics",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, torch threads {threads}",
        "configs": configs,
        "benchmark_seconds": time.perf_counter() - started,
        # other work on the machine distorts CPU figures badly (OpenMP threads wait on each
        # other): compare these with the thread count before trusting a run
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    print()
    header = f"{'config':<8}{'device':<7}{'best batch':>11}{'score evals/s':>15}"
    header += f"{'best batch':>11}{'samples/s T=1000':>18}{'samples/h':>11}{'vs anchor':>11}"
    print(header)
    for name, figures in configs.items():
        for device, row in figures["devices"].items():
            print(
                f"{name:<8}{device:<7}{row['best_batch_score_evals']:>11}"
                f"{row['best_score_evals_per_s']:>15.1f}{row['best_batch_samples']:>11}"
                f"{row['best_samples_per_s_at_T1000']:>18.4f}"
                f"{row['samples_per_hour_at_T1000']:>11.0f}{row['vs_anchor']:>10.2f}x"
            )
    print(f"anchor: {ANCHOR}")
    print("samples/s at T=1000 are extrapolated from the timed steps")
    load = results["load_average_1min"]
    print(
        f"1-min load average {load['before']:.2f} before, {load['after']:.2f} after "
        f"({os.cpu_count()} cores; other work on the machine distorts these figures)"
    )
    print(f"written to {args.output} ({results['benchmark_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
