"""Predictor–corrector sampling (paper D.1.3).

From the prior (all types [MASK], uniform coordinates, the lattice of A30), ``T`` ancestral
predictor steps move ``t_i = i/T → t_{i-1}`` with A6 (coordinates, VE), A8 (lattice, VP) and A16
(types, D3PM). The last step (to ``t = 0``) returns the noise-free mean of the coordinate and
lattice updates, as MatterGen does: the noise it would add is pure blur around the denoised
crystal (returning the last noisy draw lowered every sample's symmetry, even with an exact
score). After every predictor step except the last, one Langevin corrector step
(Song et al. 2021, Algorithms 4 and 5) refines coordinates and lattice at ``t_{i-1}`` with
signal-to-noise ratios 0.4 and 0.2. Every random draw comes from one ``torch.Generator``, so a
seed reproduces a run on the same device. A crystal whose state or scores become NaN/Inf is
dropped at once, one whose final cell has collapsed or exploded at the end; each is counted and
the rest of the batch carries on.
Imports torch only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from model.crystal import MASK_CLASS, CrystalBatch, classes_to_types, types_to_classes, wrap
from model.diffusion.lattice import symmetric_noise
from model.guidance import guided_score
from model.network.gemnet import ScoreNetwork
from model.properties import ConditionBatch

MIN_VOLUME_PER_ATOM = 0.1  # Å³: below this a sampled cell has collapsed
MAX_VOLUME_PER_ATOM = 1000.0  # Å³: above this it has exploded (real crystals: ~5–60 Å³/atom)


@dataclass
class SamplerSettings:
    """Sampling parameters (D.1.3); ``num_steps=None`` uses the model's ``T``.

    ``type_temperature`` divides the (guided) type log-probabilities ``log p_θ(a_0 | ·)`` before
    each reverse type step (1 = the paper's sampler; below 1 sharpens every atom's choice);
    ``None`` takes the model's ``diffusion.type_temperature``.
    """

    num_steps: int | None = None
    coord_snr: float = 0.4
    lattice_snr: float = 0.2
    corrector_steps: int = 1
    guidance_scale: float = 2.0
    type_temperature: float | None = None


@dataclass
class SampleResult:
    """Finished samples and what was dropped.

    ``crystals`` holds the kept samples; ``sample_index [B_kept]`` their positions in the request;
    ``dropped`` maps a reason (``non-finite``, ``collapsed lattice``, ``exploded lattice``) to a
    count.
    """

    crystals: CrystalBatch
    sample_index: Tensor
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())


def _langevin_step_sizes(
    score: Tensor, noise_scale: Tensor, index: Tensor | None, size: int, snr: float, alpha: Tensor
) -> Tensor:
    """Langevin step sizes ``ε_b`` per crystal (Song et al. 2021, Algorithms 4–5).

    The algorithms set ``ε = 2 α (snr ‖z‖ / ‖s‖)²``; their reference code takes both norms as
    batch means, because per-sample norms of a few dimensions fluctuate wildly (a sample that
    happens to sit at the mode has ``‖s‖ ≈ 0`` and would take a huge step). Crystals in one batch
    have different noise scales ``σ_b``, so the batch mean is taken of the scale-free
    ``‖s_b‖² σ_b² / d_b`` (≈ 1 for an accurate score, with ``‖z_b‖² ≈ d_b``), giving
    ``ε_b = 2 α snr² σ_b² / mean_b(‖s_b‖² σ_b² / d_b)``.
    """
    squares = score.reshape(score.shape[0], -1).pow(2)
    dims = torch.full_like(squares[:, 0], float(squares.shape[1]))
    squares = squares.sum(-1)
    if index is not None:
        squares = squares.new_zeros(size).index_add_(0, index, squares)
        dims = dims.new_zeros(size).index_add_(0, index, dims)
    normalised = (squares * noise_scale**2 / dims).mean().clamp_min(1e-12)
    return 2 * alpha * snr**2 * noise_scale**2 / normalised


def _finite_crystals(
    batch: CrystalBatch, *per_atom: Tensor, per_crystal: tuple[Tensor, ...] = ()
) -> Tensor:
    """``bool [B]``: crystals whose per-atom and per-crystal tensors are all finite."""
    ok = torch.ones(batch.num_crystals, dtype=torch.bool, device=batch.lattice.device)
    atom_batch = batch.batch
    for values in per_atom:
        bad_atoms = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(-1)
        bad = torch.zeros(batch.num_crystals, dtype=torch.long, device=ok.device)
        ok &= bad.index_add_(0, atom_batch, bad_atoms.long()) == 0
    for values in per_crystal:
        ok &= torch.isfinite(values.reshape(values.shape[0], -1)).all(-1)
    return ok


@torch.inference_mode()
def sample(
    network: ScoreNetwork,
    num_atoms: Tensor,
    settings: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    condition: Tensor | ConditionBatch | None = None,
    allowed_classes: Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    fixed_types: Tensor | None = None,
) -> SampleResult:
    """Draw one crystal per entry of ``num_atoms [B]`` (on the network's device).

    Parameters
    ----------
    condition
        Embedded property targets for classifier-free guidance (a
        :class:`~model.properties.ConditionBatch`, or a ``[B, condition_dim]`` tensor with every
        property given), or ``None``.
    allowed_classes
        ``bool [K]``: species the sampler may place (default: those seen in training).
    progress
        Called as ``progress(step, total)`` after each step.
    fixed_types
        ``[Σ num_atoms]`` atomic numbers to keep (crystal-structure prediction: the composition
        is given, coordinates and lattice are generated). The network sees them as the forward
        process would show them at each ``t``: each atom revealed from a fixed time on, drawn
        once (``keep(t) = 1 - t``), so its inputs stay those it was trained on.
    """
    settings = settings or SamplerSettings()
    diffusion = network.diffusion
    stats = network.statistics
    device = stats.volume_per_atom.device
    dtype = next(network.parameters()).dtype
    volume_per_atom = stats.volume_per_atom.to(dtype)
    allowed = (allowed_classes if allowed_classes is not None else stats.allowed_classes()).to(
        device
    )
    total_steps = settings.num_steps or diffusion.sampling_steps or diffusion.num_steps
    num_atoms = num_atoms.to(device)
    n_total = int(num_atoms.sum())

    batch = CrystalBatch(
        atomic_numbers=torch.zeros(n_total, dtype=torch.long, device=device),  # all [MASK]
        frac_coords=diffusion.coords.prior_sample(n_total, generator, device, dtype),
        lattice=diffusion.lattice.prior_sample(num_atoms, volume_per_atom, generator, dtype),
        num_atoms=num_atoms,
    )
    kept = torch.arange(num_atoms.shape[0], device=device)
    dropped: Counter[str] = Counter()
    if isinstance(condition, Tensor):
        condition = ConditionBatch(condition, torch.ones(condition.shape[0], 1, dtype=torch.bool))
    if condition is not None:
        if not network.condition_dims:
            raise ValueError("this network has no conditioning adapters; it samples unconditioned")
        condition = condition.to(device, dtype)
        condition = ConditionBatch(
            condition.values,
            condition.present.expand(num_atoms.shape[0], len(network.condition_dims)),
        )
    reveal = None
    if fixed_types is not None:
        fixed_types = fixed_types.to(device)
        if fixed_types.shape != (n_total,):
            raise ValueError(f"fixed_types must have one entry per atom ({n_total})")
        reveal = torch.rand(n_total, generator=generator, device=device, dtype=dtype)

    def drop(ok: Tensor, reason: str) -> None:
        nonlocal batch, kept, condition, fixed_types, reveal
        if bool(ok.all()):
            return
        dropped[reason] += int((~ok).sum())
        atoms_ok = ok[batch.batch]
        batch, kept = batch.select(ok), kept[ok]
        if condition is not None:
            condition = condition.select(ok)
        if fixed_types is not None:
            fixed_types, reveal = fixed_types[atoms_ok], reveal[atoms_ok]

    def shown_types(state: CrystalBatch, t_value: float) -> CrystalBatch:
        if fixed_types is None:
            return state
        revealed = reveal < network.diffusion.types.keep(torch.tensor(t_value, dtype=dtype))
        return state.replace(atomic_numbers=torch.where(revealed, fixed_types, 0))

    def score(state: CrystalBatch, t_value: float):
        t = torch.full((state.num_crystals,), t_value, device=device, dtype=dtype)
        if condition is None:
            return guided_score(network, state, t, None, settings.guidance_scale)
        return guided_score(
            network, state, t, condition.values, settings.guidance_scale, condition.present
        )

    for step in range(total_steps, 0, -1):
        if batch.num_crystals == 0:
            break
        t_now, t_prev = step / total_steps, (step - 1) / total_steps
        batch = shown_types(batch, t_now)
        out = score(batch, t_now)
        frac_score = out.fractional_coords(batch)
        drop_mask = _finite_crystals(batch, frac_score, out.type_logits, per_crystal=(out.lattice,))
        if not bool(drop_mask.all()):
            drop(drop_mask, "non-finite")
            continue  # rescore the survivors at the same step
        batch = _predictor(
            batch, out, frac_score, t_now, t_prev, network, volume_per_atom, allowed, generator,
            settings.type_temperature or diffusion.type_temperature,
        )  # fmt: skip
        batch = shown_types(batch, t_prev)
        if t_prev > 0:
            for _ in range(settings.corrector_steps):
                batch = _corrector(
                    batch, score(batch, t_prev), t_now, t_prev, network, settings, generator
                )
        drop(_finite_crystals(batch, batch.frac_coords, per_crystal=(batch.lattice,)), "non-finite")
        if progress is not None:
            progress(total_steps - step + 1, total_steps)

    # Only the final cell is judged: at high noise a symmetric lattice passes through
    # near-singular shapes routinely and recovers (the exact score does too).
    drop(batch.volumes / batch.num_atoms.to(dtype) >= MIN_VOLUME_PER_ATOM, "collapsed lattice")
    drop(batch.volumes / batch.num_atoms.to(dtype) <= MAX_VOLUME_PER_ATOM, "exploded lattice")
    classes = types_to_classes(batch.atomic_numbers)
    still_masked = classes == MASK_CLASS
    if bool(still_masked.any()):  # cannot happen with keep(0) = 1; kept as a guard
        batch = batch.replace(
            atomic_numbers=torch.where(still_masked, torch.ones_like(classes), batch.atomic_numbers)
        )
    return SampleResult(crystals=batch, sample_index=kept.cpu(), dropped=dict(dropped))


def _predictor(
    batch, out, frac_score, t_now, t_prev, network, volume_per_atom, allowed, generator,
    type_temperature=1.0,
):  # fmt: skip
    diffusion = network.diffusion
    device, dtype = batch.lattice.device, batch.lattice.dtype
    atom_batch = batch.batch
    t = torch.full((batch.num_crystals,), t_now, device=device, dtype=dtype)
    tp = torch.full_like(t, t_prev)
    sigma = diffusion.coord_sigma(t, batch.num_atoms)[atom_batch]
    sigma_prev = diffusion.coord_sigma(tp, batch.num_atoms)[atom_batch]
    # the final step returns the denoised mean (the draws keep the generator's stream aligned)
    keep_noise = 0.0 if t_prev == 0 else 1.0
    noise = torch.randn(batch.frac_coords.shape, generator=generator, device=device, dtype=dtype)
    frac = diffusion.coords.predictor_step(
        batch.frac_coords, frac_score, sigma, sigma_prev, keep_noise * noise
    )
    beta = diffusion.lattice.step_beta(t, tp)
    lattice_noise = keep_noise * symmetric_noise(batch.num_crystals, generator, device, dtype)
    lattice = diffusion.lattice.predictor_step(
        batch.lattice, out.lattice, beta, batch.num_atoms, volume_per_atom, lattice_noise
    )
    lattice = 0.5 * (lattice + lattice.mT)
    classes = diffusion.types.reverse_step(
        out.type_logits.to(dtype) / type_temperature,
        types_to_classes(batch.atomic_numbers),
        t[atom_batch],
        tp[atom_batch],
        generator,
        allowed,
    )
    return CrystalBatch(classes_to_types(classes), frac, lattice, batch.num_atoms)


def _corrector(batch, out, t_now, t_prev, network, settings, generator):
    diffusion = network.diffusion
    device, dtype = batch.lattice.device, batch.lattice.dtype
    size = batch.num_crystals
    atom_batch = batch.batch
    t = torch.full((size,), t_prev, device=device, dtype=dtype)
    frac_score = out.fractional_coords(batch)
    noise = torch.randn(batch.frac_coords.shape, generator=generator, device=device, dtype=dtype)
    eps = _langevin_step_sizes(
        frac_score,
        diffusion.coord_sigma(t, batch.num_atoms),
        atom_batch,
        size,
        settings.coord_snr,
        torch.ones_like(t),
    )[atom_batch, None]
    frac = wrap(batch.frac_coords + eps * frac_score + (2 * eps).sqrt() * noise)
    alpha = 1 - diffusion.lattice.step_beta(torch.full_like(t, t_now), t)
    lattice_noise = symmetric_noise(size, generator, device, dtype)
    eps_l = _langevin_step_sizes(
        out.lattice,
        diffusion.lattice_std(t, batch.num_atoms),
        None,
        size,
        settings.lattice_snr,
        alpha,
    )[:, None, None]
    lattice = batch.lattice + eps_l * out.lattice + (2 * eps_l).sqrt() * lattice_noise
    lattice = 0.5 * (lattice + lattice.mT)
    return CrystalBatch(batch.atomic_numbers, frac, lattice, batch.num_atoms)
