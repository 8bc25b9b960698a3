"""Classifier-free guidance (B45–B46, B.2.2) and the predictor–corrector sampler (D.1.3).

The sampler is checked twice: as plumbing with a randomly initialised tiny network (counts,
shapes, determinism, species restriction, dropping of non-finite crystals), and as mathematics
with an *oracle* score: for a data distribution that is a single crystal, the exact scores are
those of the forward marginals, and the reverse process (A6, A8, A16) must then return that
crystal.
"""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import TINY, build_network, random_batch, random_times, tiny_config
from torch import nn

from model.config import DiffusionConfig
from model.crystal import (
    MASK_CLASS,
    NUM_CLASSES,
    CrystalBatch,
    symmetric_polar_form,
    types_to_classes,
)
from model.diffusion import CrystalDiffusion
from model.guidance import combine, guided_score
from model.network.gemnet import ScoreOutput
from model.network.statistics import DataStatistics
from model.sampler import SampleResult, SamplerSettings, sample

F64 = torch.float64

# --------------------------------------------------------------------------------------------
# Guidance
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guided_setup():
    network = build_network(tiny_config(condition_dim=4), seed=21)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for mixin in [m for per_layer in network.mixins for m in per_layer]:
            mixin.weight.copy_(
                0.3 * torch.randn(mixin.weight.shape, generator=generator, dtype=F64)
            )
    batch = random_batch(seed=4, num_atoms=(2, 4, 3))
    t = random_times(batch.num_crystals, seed=5)
    condition = torch.randn(batch.num_crystals, 4, generator=generator, dtype=F64)
    with torch.no_grad():
        conditional = network(batch, t, condition=condition)
        unconditional = network(batch, t)
    assert not torch.allclose(conditional.coords, unconditional.coords)
    assert not torch.allclose(conditional.type_logits, unconditional.type_logits)
    return network, batch, t, condition, conditional, unconditional


def log_probs(output: ScoreOutput) -> torch.Tensor:
    return torch.log_softmax(output.type_logits, -1)


def assert_scores(actual: ScoreOutput, coords, lattice, type_log_probs):
    torch.testing.assert_close(actual.coords, coords, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(actual.lattice, lattice, rtol=1e-10, atol=1e-10)
    # guided type outputs are log-probabilities up to a constant per atom; compare normalised
    torch.testing.assert_close(
        log_probs(actual), torch.log_softmax(type_log_probs, -1), rtol=1e-10, atol=1e-10
    )


def test_guidance_scale_one_is_the_conditional_score(guided_setup):
    network, batch, t, condition, conditional, unconditional = guided_setup
    with torch.no_grad():
        for guided in (
            guided_score(network, batch, t, condition, gamma=1.0),
            combine(conditional, unconditional, 1.0),
        ):
            assert_scores(guided, conditional.coords, conditional.lattice, log_probs(conditional))


def test_guidance_scale_zero_is_the_unconditional_score(guided_setup):
    network, batch, t, condition, conditional, unconditional = guided_setup
    with torch.no_grad():
        for guided in (
            guided_score(network, batch, t, condition, gamma=0.0),
            combine(conditional, unconditional, 0.0),
        ):
            assert_scores(
                guided, unconditional.coords, unconditional.lattice, log_probs(unconditional)
            )


def test_without_a_condition_the_guided_score_is_the_unconditional_score(guided_setup):
    network, batch, t, _, _, unconditional = guided_setup
    with torch.no_grad():
        guided = guided_score(network, batch, t, None, gamma=2.0)
    assert_scores(guided, unconditional.coords, unconditional.lattice, log_probs(unconditional))


@pytest.mark.parametrize("gamma", [2.0, 0.5, 3.7])
def test_guided_continuous_scores_mix_linearly_and_types_mix_log_probabilities(guided_setup, gamma):
    network, batch, t, condition, conditional, unconditional = guided_setup
    expected_coords = gamma * conditional.coords + (1 - gamma) * unconditional.coords  # B46
    expected_lattice = gamma * conditional.lattice + (1 - gamma) * unconditional.lattice
    expected_types = gamma * log_probs(conditional) + (1 - gamma) * log_probs(
        unconditional
    )  # B.2.2
    with torch.no_grad():
        for guided in (
            guided_score(network, batch, t, condition, gamma=gamma),
            combine(conditional, unconditional, gamma),
        ):
            assert_scores(guided, expected_coords, expected_lattice, expected_types)
    if gamma == 2.0:
        torch.testing.assert_close(expected_coords, 2 * conditional.coords - unconditional.coords)
        torch.testing.assert_close(
            expected_types, 2 * log_probs(conditional) - log_probs(unconditional)
        )


# --------------------------------------------------------------------------------------------
# Sampler plumbing with a random tiny network
# --------------------------------------------------------------------------------------------

REQUESTED = torch.tensor([2, 3, 4, 5])
SETTINGS = SamplerSettings(num_steps=20)


@pytest.fixture(scope="module")
def tiny_network():
    return build_network(TINY, seed=0, double=False)


def run(network, seed, num_atoms=REQUESTED, settings=SETTINGS, **kwargs) -> SampleResult:
    return sample(network, num_atoms, settings, torch.Generator().manual_seed(seed), **kwargs)


def assert_valid(result: SampleResult, num_atoms: torch.Tensor):
    crystals = result.crystals
    assert crystals.num_crystals + result.num_dropped == num_atoms.shape[0]
    assert result.sample_index.shape == (crystals.num_crystals,)
    assert torch.equal(crystals.num_atoms, num_atoms[result.sample_index])
    assert crystals.atomic_numbers.shape[0] == int(num_atoms[result.sample_index].sum())
    assert bool((crystals.atomic_numbers >= 1).all() and (crystals.atomic_numbers <= 100).all())
    assert not bool((types_to_classes(crystals.atomic_numbers) == MASK_CLASS).any())
    assert bool((crystals.frac_coords >= 0).all() and (crystals.frac_coords < 1).all())
    assert bool(
        torch.isfinite(crystals.lattice).all() and torch.isfinite(crystals.frac_coords).all()
    )
    torch.testing.assert_close(crystals.lattice, crystals.lattice.mT)


def test_samples_have_the_requested_atom_counts_real_species_and_wrapped_coordinates(tiny_network):
    steps = []
    result = run(tiny_network, 0, progress=lambda step, total: steps.append((step, total)))
    assert_valid(result, REQUESTED)
    assert result.crystals.num_crystals >= 1
    assert steps == [(i, 20) for i in range(1, 21)]


def test_the_same_seed_reproduces_a_sample_and_another_seed_does_not(tiny_network):
    first, again, other = run(tiny_network, 1), run(tiny_network, 1), run(tiny_network, 2)
    for name in ("atomic_numbers", "frac_coords", "lattice", "num_atoms"):
        assert torch.equal(getattr(first.crystals, name), getattr(again.crystals, name)), name
    assert torch.equal(first.sample_index, again.sample_index) and first.dropped == again.dropped
    assert_valid(other, REQUESTED)
    assert not torch.equal(first.crystals.lattice, other.crystals.lattice) or not torch.equal(
        first.crystals.frac_coords, other.crystals.frac_coords
    )


def test_allowed_classes_restrict_the_sampled_species(tiny_network):
    allowed = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    allowed[[3 - 1, 8 - 1]] = True  # Li and O
    result = run(tiny_network, 3, allowed_classes=allowed)
    assert_valid(result, REQUESTED)
    assert set(result.crystals.atomic_numbers.tolist()) <= {3, 8}


def test_by_default_only_species_seen_in_training_are_sampled():
    network = build_network(TINY, seed=0, double=False)
    network.statistics.fit(
        torch.tensor([8, 8, 26, 26, 26, 8]),
        4.0 * torch.eye(3).expand(2, 3, 3),
        torch.tensor([2, 4]),
    )
    result = run(network, 4)
    assert_valid(result, REQUESTED)
    assert set(result.crystals.atomic_numbers.tolist()) <= {8, 26}


class PoisonOneCrystal(nn.Module):
    """The real network, except that crystals with ``poison_n`` atoms get NaN coordinate scores."""

    def __init__(self, network, poison_n: int) -> None:
        super().__init__()
        self.inner = network
        self.diffusion = network.diffusion
        self.statistics = network.statistics
        self.poison_n = poison_n
        self.calls = 0

    def forward(self, batch, t, condition=None, condition_mask=None):
        self.calls += 1
        out = self.inner(batch, t, condition=condition, condition_mask=condition_mask)
        poisoned = (batch.num_atoms == self.poison_n)[batch.batch]
        coords = torch.where(poisoned[:, None], torch.full_like(out.coords, math.nan), out.coords)
        return ScoreOutput(coords=coords, lattice=out.lattice, type_logits=out.type_logits)


def test_a_crystal_with_non_finite_scores_is_dropped_and_the_others_finish(tiny_network):
    clean = run(tiny_network, 6)  # an untrained network collapses a cell at some seeds
    assert clean.num_dropped == 0, clean.dropped  # precondition: the healthy run keeps all
    poisoned_network = PoisonOneCrystal(tiny_network, poison_n=3)
    result = run(poisoned_network, 6)
    assert_valid(result, REQUESTED)
    assert result.dropped == {"non-finite": 1}
    assert result.sample_index.tolist() == [0, 2, 3]
    assert 3 not in result.crystals.num_atoms.tolist()


def test_conditional_sampling_with_guidance_runs_and_is_reproducible(guided_setup):
    network = guided_setup[0]
    condition = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    first = run(network, 6, condition=condition)
    again = run(network, 6, condition=condition)
    assert_valid(first, REQUESTED)
    assert torch.equal(first.crystals.frac_coords, again.crystals.frac_coords)
    unguided = run(
        network, 6, condition=condition, settings=SamplerSettings(num_steps=20, guidance_scale=0.0)
    )
    plain = run(network, 6)
    assert torch.equal(unguided.crystals.frac_coords, plain.crystals.frac_coords)
    assert not torch.equal(first.crystals.frac_coords, plain.crystals.frac_coords)


# --------------------------------------------------------------------------------------------
# The sampler's mathematics with an oracle score
# --------------------------------------------------------------------------------------------

VOLUME_PER_ATOM = 15.0


def target_crystal(n: int, seed: int) -> CrystalBatch:
    generator = torch.Generator().manual_seed(seed)
    cell = torch.diag(torch.tensor([4.0, 4.6, 5.2], dtype=F64)) + 0.5 * torch.rand(
        3, 3, generator=generator, dtype=F64
    )
    lattice = symmetric_polar_form(cell)
    return CrystalBatch(
        atomic_numbers=torch.randint(1, 101, (n,), generator=generator),
        frac_coords=torch.rand(n, 3, generator=generator, dtype=F64),
        lattice=(0.5 * (lattice + lattice.mT))[None],
        num_atoms=torch.tensor([n]),
    )


class DeltaOracle(nn.Module):
    """The exact score of a data distribution that is one crystal per atom count: the scores of
    the forward marginals q(M_t | M_0) (A23, A29) and p(a_0) = δ(a_0 = true species)."""

    def __init__(self, targets: dict[int, CrystalBatch]) -> None:
        super().__init__()
        self.targets = targets
        self.diffusion = CrystalDiffusion(DiffusionConfig())
        self.statistics = DataStatistics(max_atoms=20)
        self.statistics.volume_per_atom.fill_(VOLUME_PER_ATOM)
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))  # sets the sampler's dtype

    def forward(self, batch, t, condition=None, condition_mask=None):
        sizes = batch.num_atoms.tolist()
        x0 = torch.cat([self.targets[n].frac_coords for n in sizes])
        lattice0 = torch.cat([self.targets[n].lattice for n in sizes])
        classes0 = types_to_classes(torch.cat([self.targets[n].atomic_numbers for n in sizes]))
        atom_batch = batch.batch
        sigma = self.diffusion.coord_sigma(t, batch.num_atoms)[atom_batch]
        frac_score = self.diffusion.coords.score(batch.frac_coords, x0, sigma)
        cart_score = torch.einsum(
            "ni,nij->nj", frac_score, torch.linalg.inv(batch.lattice).mT[atom_batch]
        )
        volume = torch.tensor(VOLUME_PER_ATOM, dtype=F64)
        mean, std = self.diffusion.lattice.marginal(lattice0, t, batch.num_atoms, volume)
        lattice_score = -(batch.lattice - mean) / std[:, None, None] ** 2
        logits = torch.full((x0.shape[0], NUM_CLASSES), -40.0, dtype=F64)
        logits[torch.arange(x0.shape[0]), classes0] = 0.0
        return ScoreOutput(coords=cart_score, lattice=lattice_score, type_logits=logits)


ORACLE_COPIES = 16
ORACLE_STEPS = 100


@pytest.fixture(scope="module", params=[0, 1], ids=["predictor-only", "with-corrector"])
def oracle_run(request):
    targets = {2: target_crystal(2, seed=1), 5: target_crystal(5, seed=2)}
    oracle = DeltaOracle(targets)
    num_atoms = torch.tensor([2] * ORACLE_COPIES + [5] * ORACLE_COPIES)
    result = sample(
        oracle,
        num_atoms,
        SamplerSettings(num_steps=ORACLE_STEPS, corrector_steps=request.param),
        torch.Generator().manual_seed(0),
        allowed_classes=torch.arange(NUM_CLASSES) < MASK_CLASS,
    )
    return oracle, targets, num_atoms, result


def test_with_the_exact_score_of_a_single_crystal_the_sampler_returns_that_crystal(oracle_run):
    oracle, targets, num_atoms, result = oracle_run
    assert_valid(result, num_atoms)
    crystals = result.crystals
    diffusion = oracle.diffusion
    t_last = torch.tensor([1.0 / ORACLE_STEPS], dtype=F64)
    for n, target in targets.items():
        chosen = crystals.num_atoms == n
        copies = int(chosen.sum())
        assert copies >= ORACLE_COPIES // 2
        atoms = chosen[crystals.batch]
        # species: p(a0) = δ, so every [MASK] must resolve to the true species (A16)
        assert torch.equal(crystals.atomic_numbers[atoms], target.atomic_numbers.repeat(copies))
        # lattice: with the exact score the last ancestral step (A8) returns its noise-free
        # mean, which is L0 itself (its noise would have been σ(n) sqrt(β_last) per entry)
        noise = float(diffusion.lattice.limit_std(torch.tensor([n]), F64)) * math.sqrt(
            float(diffusion.lattice.step_beta(t_last, torch.zeros(1, dtype=F64)))
        )
        deviation = crystals.lattice[chosen] - target.lattice
        assert float(deviation.abs().max()) < 1e-6 * noise
        # coordinates: back at x0 up to the last VE steps' noise (A6), on the torus
        sigma_last = float(diffusion.coord_sigma(t_last, torch.tensor([n])))
        displacement = crystals.frac_coords[atoms] - target.frac_coords.repeat(copies, 1)
        displacement = displacement - torch.round(displacement)
        assert float(displacement.abs().max()) < 6 * sigma_last
        assert float(displacement.mean().abs()) < 5 * sigma_last / math.sqrt(displacement.numel())


def test_with_the_exact_score_no_sample_is_dropped_for_a_transiently_degenerate_noisy_lattice(
    oracle_run,
):
    """The final samples of the oracle are L0 + O(0.05 Å): none is degenerate. A noisy lattice at
    high t is a Gaussian symmetric matrix around μ(n) I (A30) whose determinant crosses zero for a
    sizeable fraction of reverse paths; such transient states must not cost the sample."""
    _, _, num_atoms, result = oracle_run
    assert result.dropped == {}, (
        f"{result.num_dropped} of {num_atoms.shape[0]} exact-score samples dropped: "
        f"{result.dropped}"
    )


def test_the_oracle_scores_are_consistent_with_the_forward_process():
    """Guards the oracle itself: at a noisy state drawn by ``corrupt`` its scores are the targets
    the loss would use."""
    target = target_crystal(3, seed=4)
    oracle = DeltaOracle({3: target})
    step = torch.tensor([400])
    noisy = oracle.diffusion.corrupt(
        target, step, torch.tensor(VOLUME_PER_ATOM, dtype=F64), torch.Generator().manual_seed(0)
    )
    out = oracle(noisy.batch, noisy.t)
    torch.testing.assert_close(out.fractional_coords(noisy.batch), noisy.coord_score)
    torch.testing.assert_close(out.lattice, noisy.lattice_score)
