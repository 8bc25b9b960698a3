"""The forward processes of paper A.5–A.7 against their equations.

* lattice: VP diffusion of symmetric matrices with the limit mean/variance of A29–A30;
* coordinates: wrapped-normal VE diffusion on the torus (A18–A24);
* atom types: D3PM absorbing diffusion (A10–A17), checked against explicit ``Q`` matrices.

Statistical checks use 20k–200k draws, fixed seeds and 5-sigma tolerances.
"""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import uniform_ks_statistic

from model.config import DiffusionConfig
from model.crystal import MASK_CLASS, NUM_CLASSES, wrap
from model.diffusion import (
    AbsorbingTypeDiffusion,
    CrystalDiffusion,
    SymmetricLatticeVP,
    WrappedNormalVE,
    symmetric_noise,
)
from model.loss import diffusion_loss
from model.network.gemnet import ScoreOutput

F64 = torch.float64
VOLUME_PER_ATOM = torch.tensor(17.0, dtype=F64)  # c of A.7.2
NU = 0.25  # ν of A30 (the config default)
FREE_ENTRIES = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
L0 = torch.tensor([[4.2, 0.3, -0.2], [0.3, 5.1, 0.4], [-0.2, 0.4, 6.3]], dtype=F64)


def alpha_bar(t: float, beta_min: float = 0.1, beta_max: float = 20.0) -> float:
    """ᾱ_t = exp(-∫β) for the linear β(t) schedule (independent re-derivation)."""
    return math.exp(-beta_min * t - 0.5 * (beta_max - beta_min) * t**2)


def lattice_draws(t: float, n: int, count: int = 20_000, seed: int = 0):
    process = SymmetricLatticeVP()
    generator = torch.Generator().manual_seed(seed)
    lattice0 = L0.expand(count, 3, 3).clone()
    times = torch.full((count,), t, dtype=F64)
    num_atoms = torch.full((count,), n, dtype=torch.long)
    lattice_t, score = process.sample_marginal(
        lattice0, times, num_atoms, VOLUME_PER_ATOM, generator
    )
    return process, lattice0, times, num_atoms, lattice_t, score


# --------------------------------------------------------------------------------------------
# Lattice (A.7, A27–A30)
# --------------------------------------------------------------------------------------------


def test_the_lattice_schedule_starts_at_the_data_and_decays_to_the_prior():
    process = SymmetricLatticeVP()
    times = torch.linspace(0, 1, 11, dtype=F64)
    values = process.alpha_bar(times)
    assert values[0] == pytest.approx(1.0)
    assert torch.all(values[1:] < values[:-1])
    assert float(values[-1]) < 1e-4
    for t, value in zip(times.tolist(), values.tolist(), strict=True):
        assert value == pytest.approx(alpha_bar(t), rel=1e-12)


@pytest.mark.parametrize("n", [1, 4, 20])
def test_the_lattice_limit_mean_and_std_are_the_cube_roots_of_n_c_and_n_nu(n):
    process = SymmetricLatticeVP(limit_variance_per_atom=NU)
    num_atoms = torch.tensor([n])
    assert float(process.limit_mean(num_atoms, VOLUME_PER_ATOM)) == pytest.approx(
        (n * 17.0) ** (1 / 3)
    )
    assert float(process.limit_std(num_atoms, F64)) == pytest.approx((n * NU) ** (1 / 3))


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("n", [2, 12])
def test_noisy_lattices_have_the_mean_and_variance_of_a29_in_every_free_entry(t, n):
    process, lattice0, times, num_atoms, lattice_t, _ = lattice_draws(t, n, seed=int(100 * t) + n)
    count = lattice_t.shape[0]
    a = alpha_bar(t)
    mu, sigma = (n * 17.0) ** (1 / 3), (n * NU) ** (1 / 3)
    expected_mean = math.sqrt(a) * L0 + (1 - math.sqrt(a)) * mu * torch.eye(3, dtype=F64)
    expected_var = (1 - a) * sigma**2

    mean, std = process.marginal(lattice0[:1], times[:1], num_atoms[:1], VOLUME_PER_ATOM)
    torch.testing.assert_close(mean[0], expected_mean, rtol=1e-12, atol=1e-12)
    assert float(std[0]) ** 2 == pytest.approx(expected_var, rel=1e-12)

    for i, j in FREE_ENTRIES:
        values = lattice_t[:, i, j]
        standard_error = math.sqrt(expected_var / count)
        assert abs(float(values.mean()) - float(expected_mean[i, j])) < 5 * standard_error, (i, j)
        # the sample variance of a normal has relative standard error sqrt(2 / (count - 1))
        assert float(values.var()) == pytest.approx(
            expected_var, rel=5 * math.sqrt(2 / (count - 1))
        )


def test_the_six_free_lattice_entries_are_uncorrelated():
    *_, lattice_t, _ = lattice_draws(0.5, 4, seed=7)
    entries = torch.stack([lattice_t[:, i, j] for i, j in FREE_ENTRIES], dim=1)
    correlation = torch.corrcoef(entries.T)
    off_diagonal = correlation - torch.eye(6, dtype=F64)
    assert float(off_diagonal.abs().max()) < 5 / math.sqrt(entries.shape[0])


def test_lattice_noise_is_symmetric_so_noisy_lattices_stay_symmetric():
    *_, lattice_t, score = lattice_draws(0.4, 3, count=500)
    assert torch.equal(lattice_t, lattice_t.mT)
    assert torch.equal(score, score.mT)
    noise = symmetric_noise(500, torch.Generator().manual_seed(3), "cpu", F64)
    assert torch.equal(noise, noise.mT)


@pytest.mark.parametrize("n", [1, 8])
def test_at_t_equal_1_noisy_lattices_follow_the_prior_of_a30(n):
    process, _, _, num_atoms, lattice_t, _ = lattice_draws(1.0, n, seed=11 + n)
    count = lattice_t.shape[0]
    mu, sigma = (n * 17.0) ** (1 / 3), (n * NU) ** (1 / 3)
    # what is left of L0 at t = 1 is sqrt(ᾱ_1) |L0 - μ I| ≈ 0.0066 · a few Å
    leftover = math.sqrt(alpha_bar(1.0)) * float((L0 - mu * torch.eye(3, dtype=F64)).abs().max())
    assert leftover < 0.05
    prior = process.prior_sample(num_atoms, VOLUME_PER_ATOM, torch.Generator().manual_seed(5), F64)
    for draws in (lattice_t, prior):
        for i, j in FREE_ENTRIES:
            target = mu if i == j else 0.0
            assert abs(float(draws[:, i, j].mean()) - target) < leftover + 5 * sigma / math.sqrt(
                count
            )
            assert float(draws[:, i, j].var()) == pytest.approx(
                sigma**2, rel=5 * math.sqrt(2 / count) + 1e-3
            )


@pytest.mark.parametrize("t", [0.01, 0.3, 1.0])
def test_the_lattice_score_is_minus_the_deviation_from_the_mean_over_the_variance(t):
    process, lattice0, times, num_atoms, lattice_t, score = lattice_draws(t, 5, count=64)
    mean, std = process.marginal(lattice0, times, num_atoms, VOLUME_PER_ATOM)
    torch.testing.assert_close(
        score, -(lattice_t - mean) / std[:, None, None] ** 2, rtol=1e-10, atol=1e-10
    )


def test_the_lattice_score_is_the_gradient_of_the_gaussian_log_density_over_the_free_entries():
    process, lattice0, times, num_atoms, lattice_t, score = lattice_draws(0.4, 5, count=4)
    mean, std = process.marginal(lattice0, times, num_atoms, VOLUME_PER_ATOM)
    upper = torch.triu_indices(3, 3)
    free = lattice_t[:, upper[0], upper[1]].clone().requires_grad_(True)
    log_q = -((free - mean[:, upper[0], upper[1]]) ** 2 / (2 * std[:, None] ** 2)).sum()
    (gradient,) = torch.autograd.grad(log_q, free)
    torch.testing.assert_close(score[:, upper[0], upper[1]], gradient)


# --------------------------------------------------------------------------------------------
# Coordinates (A.6, A18–A24)
# --------------------------------------------------------------------------------------------


def test_the_coordinate_noise_scale_is_geometric_and_divided_by_the_cube_root_of_n():
    process = WrappedNormalVE(0.01, 5.0)
    for t in (0.0, 0.25, 0.5, 1.0):
        for n in (1, 5, 20):
            expected = 0.01 * (5.0 / 0.01) ** t / n ** (1 / 3)
            value = process.sigma_n(torch.tensor([t], dtype=F64), torch.tensor([n]))
            assert float(value) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.2, 0.25])
@pytest.mark.parametrize("n", [1, 4, 20])
def test_small_coordinate_noise_has_the_variance_of_a22(t, n):
    process = WrappedNormalVE(0.01, 5.0)
    count = 20_000
    sigma_n = process.sigma_n(torch.full((count,), t, dtype=F64), torch.full((count,), n))
    assert float(sigma_n[0]) < 0.05  # x0 = 0.5 sits 10 σ from the boundary: no wrapping
    x0 = torch.full((count, 3), 0.5, dtype=F64)
    x_t = process.sample_marginal(x0, sigma_n, torch.Generator().manual_seed(int(100 * t) + n))
    displacement = (x_t - x0).flatten()
    expected = (0.01 * 500**t / n ** (1 / 3)) ** 2
    size = displacement.shape[0]
    assert abs(float(displacement.mean())) < 5 * math.sqrt(expected / size)
    assert float(displacement.var()) == pytest.approx(expected, rel=5 * math.sqrt(2 / size))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noisy_coordinates_always_lie_in_the_unit_cube(dtype):
    process = WrappedNormalVE(0.01, 5.0)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.cat([torch.zeros(1000, 3), 1 - 1e-7 * torch.ones(1000, 3), torch.rand(1000, 3)]).to(
        dtype
    )
    for sigma in (1e-12, 1e-9, 1e-3, 0.3, 5.0):
        x_t = process.sample_marginal(x0, torch.full((x0.shape[0],), sigma, dtype=dtype), generator)
        assert x_t.dtype == dtype
        assert bool((x_t >= 0).all()) and bool((x_t < 1).all()), sigma
    tiny_negative = torch.tensor([-1e-9, -1e-30, -0.0, 1.0, 2.0, -3.0], dtype=torch.float32)
    wrapped = wrap(tiny_negative)
    assert bool((wrapped >= 0).all()) and bool((wrapped < 1).all())


@pytest.mark.parametrize("n", [1, 20])
def test_at_t_equal_1_coordinates_are_uniform_on_the_torus(n):
    process = WrappedNormalVE(0.01, 5.0)
    count = 20_000
    sigma = process.sigma_n(torch.ones(count, dtype=F64), torch.full((count,), n))
    x0 = torch.full((count, 3), 0.1, dtype=F64)
    x_t = process.sample_marginal(x0, sigma, torch.Generator().manual_seed(n))
    values = x_t.flatten()
    size = values.shape[0]
    assert abs(float(values.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / size)
    # the variance of U(0,1) draws' sample variance: (1/80 - 1/144) / size
    assert abs(float(values.var()) - 1 / 12) < 5 * math.sqrt((1 / 80 - 1 / 144) / size)
    histogram = torch.histc(values, bins=20, min=0.0, max=1.0)
    expected = size / 20
    chi_square = float(((histogram - expected) ** 2 / expected).sum())
    assert chi_square < 19 + 5 * math.sqrt(2 * 19)
    assert uniform_ks_statistic(values) < 2.2  # p ≈ 1e-4 for a uniform sample
    prior = process.prior_sample(count, torch.Generator().manual_seed(2), "cpu", F64)
    assert uniform_ks_statistic(prior) < 2.2


def reference_wrapped_normal(
    x_t: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, images: int = 60
):
    """log N_W and its gradient from A19/A23–A24 with a generous image sum, per axis (1D)."""
    k = torch.arange(-images, images + 1, dtype=F64)
    shifted = (x_t - x0)[..., None] + k  # x̄ - x + k
    exponents = -(shifted**2) / (2 * sigma[:, None, None] ** 2)
    log_density = (
        torch.logsumexp(exponents, -1) - 0.5 * math.log(2 * math.pi) - torch.log(sigma)[:, None]
    )
    weights = torch.softmax(exponents, -1)  # w_k of A24
    score = (
        -(weights * shifted).sum(-1) / sigma[:, None] ** 2
    )  # A23, with the Gaussian's minus sign
    return log_density.sum(-1), score


def score_test_points(sigma: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    random_x0 = torch.rand(40, 3, generator=generator, dtype=F64)
    random_xt = torch.rand(40, 3, generator=generator, dtype=F64)
    near_x0 = random_x0[:20]
    near_xt = wrap(near_x0 + sigma * torch.randn(20, 3, generator=generator, dtype=F64))
    boundary_x0 = torch.tensor([[0.98, 0.01, 0.5], [0.002, 0.999, 0.5], [0.5, 0.5, 0.5]], dtype=F64)
    boundary_xt = torch.tensor(
        [[0.02, 0.97, 0.001], [0.997, 0.003, 0.999], [0.0004, 0.9996, 0.9]], dtype=F64
    )
    x0 = torch.cat([random_x0, near_x0, boundary_x0])
    x_t = torch.cat([random_xt, near_xt, boundary_xt])
    return x_t, x0, torch.full((x0.shape[0],), sigma, dtype=F64)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 3.0])
def test_the_wrapped_normal_score_is_the_finite_difference_gradient_of_its_log_density(sigma):
    process = WrappedNormalVE()
    x_t, x0, sigmas = score_test_points(sigma, seed=int(10 * sigma))
    score = process.score(x_t, x0, sigmas)
    h = 1e-6
    numeric = torch.zeros_like(x_t)
    for axis in range(3):
        step = torch.zeros_like(x_t)
        step[:, axis] = h
        numeric[:, axis] = (
            process.log_density(x_t + step, x0, sigmas)
            - process.log_density(x_t - step, x0, sigmas)
        ) / (2 * h)
    scale = score.abs().max().clamp_min(1.0)
    torch.testing.assert_close(score, numeric, rtol=1e-5, atol=1e-6 * float(scale))


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 3.0])
def test_the_wrapped_normal_score_is_the_autograd_gradient_of_its_log_density(sigma):
    process = WrappedNormalVE()
    x_t, x0, sigmas = score_test_points(sigma, seed=1 + int(10 * sigma))
    x_t = x_t.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(process.log_density(x_t, x0, sigmas).sum(), x_t)
    torch.testing.assert_close(
        process.score(x_t.detach(), x0, sigmas), gradient, rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 3.0])
def test_the_truncated_wrapped_normal_matches_a_long_image_sum(sigma):
    process = WrappedNormalVE()
    x_t, x0, sigmas = score_test_points(sigma, seed=2 + int(10 * sigma))
    log_density, score = reference_wrapped_normal(x_t, x0, sigmas)
    torch.testing.assert_close(
        process.log_density(x_t, x0, sigmas), log_density, rtol=1e-9, atol=1e-7
    )
    torch.testing.assert_close(process.score(x_t, x0, sigmas), score, rtol=1e-7, atol=1e-6)


def test_the_wrapped_normal_score_is_periodic_and_points_back_to_x0_across_the_boundary():
    process = WrappedNormalVE()
    x0 = torch.tensor([[0.98, 0.5, 0.02]], dtype=F64)
    x_t = torch.tensor([[0.02, 0.5, 0.97]], dtype=F64)  # 0.04 past the boundary, 0.05 before
    sigma = torch.tensor([0.05], dtype=F64)
    score = process.score(x_t, x0, sigma)
    assert float(score[0, 0]) < 0  # the nearest image of x0 is at -0.02: move down
    assert float(score[0, 2]) > 0  # the nearest image of x0 is at 1.02: move up
    assert float(score[0, 1]) == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(
        score[0, 0], torch.tensor(-0.04 / 0.05**2, dtype=F64), rtol=1e-6, atol=0
    )
    for shift in (-2.0, 1.0, 3.0):
        torch.testing.assert_close(process.score(x_t + shift, x0, sigma), score)


# --------------------------------------------------------------------------------------------
# Atom types (A.5, A10–A17)
# --------------------------------------------------------------------------------------------

T_SMALL = 10


def explicit_step_matrix(beta: float) -> torch.Tensor:
    """Q_t of A17 (rows: a_{t-1}, columns: a_t), K = 101 with m = MASK_CLASS."""
    q = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=F64)
    for i in range(NUM_CLASSES):
        if i == MASK_CLASS:
            q[i, i] = 1.0
        else:
            q[i, i] = 1 - beta
            q[i, MASK_CLASS] = beta
    return q


def explicit_matrices(num_steps: int = T_SMALL):
    """Step matrices Q_1..Q_T and cumulative products Q̄_0 = I, Q̄_1..Q̄_T (A14) on t_i = i/T,
    with β_i = 1 - keep(t_i) / keep(t_{i-1}) for keep(t) = 1 - t."""
    keep = [1 - i / num_steps for i in range(num_steps + 1)]
    steps = [None] + [
        explicit_step_matrix(1 - keep[i] / keep[i - 1]) for i in range(1, num_steps + 1)
    ]
    cumulative = [torch.eye(NUM_CLASSES, dtype=F64)]
    for i in range(1, num_steps + 1):
        cumulative.append(cumulative[-1] @ steps[i])
    return steps, cumulative


def test_the_step_betas_on_the_grid_are_one_over_t_minus_i_plus_one():
    types = AbsorbingTypeDiffusion()
    i = torch.arange(1, T_SMALL + 1, dtype=F64)
    beta = types.step_beta(i / T_SMALL, (i - 1) / T_SMALL)
    torch.testing.assert_close(beta, 1 / (T_SMALL - i + 1))
    assert float(beta[-1]) == pytest.approx(1.0)


def test_the_cumulative_matrices_keep_each_species_with_probability_one_minus_t():
    _, cumulative = explicit_matrices()
    types = AbsorbingTypeDiffusion()
    for i in range(T_SMALL + 1):
        keep = float(types.keep(torch.tensor(i / T_SMALL, dtype=F64)))
        assert keep == pytest.approx(1 - i / T_SMALL)
        q_bar = cumulative[i]
        torch.testing.assert_close(
            torch.diagonal(q_bar)[:MASK_CLASS], torch.full((MASK_CLASS,), keep, dtype=F64)
        )
        torch.testing.assert_close(
            q_bar[:MASK_CLASS, MASK_CLASS], torch.full((MASK_CLASS,), 1 - keep, dtype=F64)
        )
        assert float(q_bar[MASK_CLASS, MASK_CLASS]) == 1.0
        torch.testing.assert_close(q_bar.sum(1), torch.ones(NUM_CLASSES, dtype=F64))


@pytest.mark.parametrize("t", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_the_empirical_masking_rate_at_t_is_t(t):
    types = AbsorbingTypeDiffusion()
    count = 200_000
    generator = torch.Generator().manual_seed(int(1000 * t))
    classes0 = torch.randint(0, MASK_CLASS, (count,), generator=generator)
    types_t = types.sample_marginal(classes0, torch.full((count,), t, dtype=F64), generator)
    masked = types_t == MASK_CLASS
    rate = float(masked.double().mean())
    if t == 0.0:
        assert rate == 0.0
    elif t == 1.0:
        assert rate == 1.0
    else:
        assert abs(rate - t) < 5 * math.sqrt(t * (1 - t) / count)
    assert torch.equal(types_t[~masked], classes0[~masked])  # unmasked atoms keep their species


def test_the_posterior_of_a_known_a0_is_bayes_rule_with_explicit_matrices():
    """q(a_{t-1} | a_t, a_0) = Q_t[:, a_t] ⊙ Q̄_{t-1}[a_0, :] / Q̄_t[a_0, a_t]  (A15)."""
    steps, cumulative = explicit_matrices()
    types = AbsorbingTypeDiffusion()
    species = [0, 5, 25, 99]
    checked = 0
    for i in range(1, T_SMALL + 1):
        rows_a0, rows_at, expected = [], [], []
        for a0 in species:
            for a_t in range(NUM_CLASSES):
                evidence = cumulative[i][a0, a_t]
                if evidence == 0:
                    continue  # a_t impossible given a_0
                posterior = steps[i][:, a_t] * cumulative[i - 1][a0, :] / evidence
                rows_a0.append(a0)
                rows_at.append(a_t)
                expected.append(posterior)
        a0 = torch.tensor(rows_a0)
        a_t = torch.tensor(rows_at)
        t = torch.full((a0.shape[0],), i / T_SMALL, dtype=F64)
        t_prev = torch.full_like(t, (i - 1) / T_SMALL)
        onehot = torch.nn.functional.one_hot(a0, NUM_CLASSES).to(F64)
        actual = types.posterior_probs(a_t, onehot, t, t_prev)
        torch.testing.assert_close(actual, torch.stack(expected), rtol=1e-10, atol=1e-12)
        checked += a0.shape[0]
    assert checked == T_SMALL * len(species) * 2 - len(species)  # a_t ∈ {a_0, m}; at t = 1 only m


def test_the_model_reverse_step_marginalises_the_joint_over_a_predicted_a0():
    """p(a_{t-1} | a_t) ∝ Σ_{a0} q(a_{t-1}, a_t | a_0) p(a_0)  (A16), for any p(a_0)."""
    steps, cumulative = explicit_matrices()
    types = AbsorbingTypeDiffusion()
    generator = torch.Generator().manual_seed(0)
    for i in range(1, T_SMALL + 1):
        count = 12
        probs0 = torch.softmax(
            3 * torch.randn(count, NUM_CLASSES, generator=generator, dtype=F64), -1
        )
        probs0[: count // 2, MASK_CLASS] = 0.0  # the model's p(a0) never predicts [MASK] ...
        probs0 = probs0 / probs0.sum(-1, keepdim=True)  # ... but the formula holds either way
        a_t = torch.randint(0, MASK_CLASS, (count,), generator=generator)
        a_t[::2] = MASK_CLASS
        if i == T_SMALL:
            a_t[:] = MASK_CLASS  # keep(1) = 0: an unmasked a_t is impossible at t = 1
        joint = torch.stack(
            [(probs0[r] @ cumulative[i - 1]) * steps[i][:, a_t[r]] for r in range(count)]
        )  # Σ_a0 p(a0) Q̄_{t-1}[a0, a_{t-1}] Q_t[a_{t-1}, a_t]
        expected = joint / joint.sum(-1, keepdim=True)
        t = torch.full((count,), i / T_SMALL, dtype=F64)
        actual = types.posterior_probs(a_t, probs0, t, torch.full_like(t, (i - 1) / T_SMALL))
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(actual.sum(-1), torch.ones(count, dtype=F64))


def test_an_unmasked_type_stays_unmasked_in_the_reverse_step():
    types = AbsorbingTypeDiffusion()
    a_t = torch.tensor([3, 17, 99])
    logits = torch.randn(3, NUM_CLASSES, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.full((3,), 0.6, dtype=F64)
    probs = types.posterior_probs(a_t, torch.softmax(logits, -1), t, t - 0.1)
    torch.testing.assert_close(probs, torch.nn.functional.one_hot(a_t, NUM_CLASSES).to(F64))


def type_loss_setup(seed: int = 0, count: int = 64):
    generator = torch.Generator().manual_seed(seed)
    classes0 = torch.randint(0, MASK_CLASS, (count,), generator=generator)
    types_t = torch.where(
        torch.arange(count) % 2 == 0, torch.full_like(classes0, MASK_CLASS), classes0
    )
    step = torch.randint(2, 1001, (count,), generator=generator).to(F64)
    return generator, classes0, types_t, step / 1000, (step - 1) / 1000


def test_the_type_kl_vanishes_when_the_model_predicts_the_true_species():
    types = AbsorbingTypeDiffusion()
    _, classes0, types_t, t, t_prev = type_loss_setup()
    logits = 60.0 * torch.nn.functional.one_hot(classes0, NUM_CLASSES).to(F64)
    loss = types.loss(logits, types_t, classes0, t, t_prev, ce_weight=0.0)
    torch.testing.assert_close(loss, torch.zeros_like(loss), rtol=0, atol=1e-12)
    with_ce = types.loss(logits, types_t, classes0, t, t_prev, ce_weight=0.01)
    torch.testing.assert_close(with_ce, torch.zeros_like(with_ce), rtol=0, atol=1e-12)


def test_the_type_kl_is_positive_for_masked_atoms_when_the_model_is_unsure():
    types = AbsorbingTypeDiffusion()
    generator, classes0, types_t, t, t_prev = type_loss_setup(seed=1)
    logits = torch.randn(classes0.shape[0], NUM_CLASSES, generator=generator, dtype=F64)
    kl = types.loss(logits, types_t, classes0, t, t_prev, ce_weight=0.0)
    masked = types_t == MASK_CLASS
    assert bool((kl[masked] > 1e-6).all())
    # an unmasked a_t pins a_{t-1} = a_t for q and p alike: nothing to learn there but the CE
    torch.testing.assert_close(kl[~masked], torch.zeros_like(kl[~masked]), rtol=0, atol=1e-12)
    # and the KL is the one of the explicit distributions
    onehot = torch.nn.functional.one_hot(classes0, NUM_CLASSES).to(F64)
    q = types.posterior_probs(types_t, onehot, t, t_prev)
    clean = logits.clone()
    clean[:, MASK_CLASS] = -math.inf
    p = types.posterior_probs(types_t, torch.softmax(clean, -1), t, t_prev)
    support = q > 0
    expected = torch.zeros_like(kl).index_add_(
        0, torch.nonzero(support)[:, 0], (q[support] * (q[support].log() - p[support].log()))
    )
    torch.testing.assert_close(kl, expected, rtol=1e-9, atol=1e-12)
    ce_weight = 0.01
    total = types.loss(logits, types_t, classes0, t, t_prev, ce_weight=ce_weight)
    nll = -torch.log_softmax(clean, -1).gather(1, classes0[:, None]).squeeze(1)
    torch.testing.assert_close(total, kl + ce_weight * nll)


def test_at_the_first_step_the_type_loss_is_the_negative_log_likelihood_of_a0():
    types = AbsorbingTypeDiffusion()
    generator, classes0, types_t, _, _ = type_loss_setup(seed=2)
    logits = torch.randn(classes0.shape[0], NUM_CLASSES, generator=generator, dtype=F64)
    t = torch.full((classes0.shape[0],), 1 / 1000, dtype=F64)
    loss = types.loss(logits, types_t, classes0, t, torch.zeros_like(t), ce_weight=0.01)
    # [MASK] is never a clean species: p(a0) is a softmax over the 100 real classes
    expected = (
        -torch.log_softmax(logits[:, :MASK_CLASS], -1).gather(1, classes0[:, None]).squeeze(1)
    )
    torch.testing.assert_close(loss, expected)


# --------------------------------------------------------------------------------------------
# The joint corruption and the loss weighting (A9, A40–A42)
# --------------------------------------------------------------------------------------------


def test_corrupting_a_batch_uses_the_grid_times_and_the_per_crystal_noise_scales():
    from model_helpers import random_batch

    diffusion = CrystalDiffusion(DiffusionConfig())
    batch = random_batch(seed=3, num_atoms=(2, 3, 5), masked_fraction=0.0)
    step = torch.tensor([1, 500, 1000])
    noisy = diffusion.corrupt(batch, step, VOLUME_PER_ATOM, torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy.t, step.to(F64) / 1000)
    torch.testing.assert_close(noisy.t_prev, (step - 1).to(F64) / 1000)
    sigma = 0.01 * 500**noisy.t / batch.num_atoms.to(F64) ** (1 / 3)
    torch.testing.assert_close(noisy.coord_sigma, sigma[batch.batch])
    torch.testing.assert_close(
        noisy.coord_score,
        diffusion.coords.score(noisy.batch.frac_coords, batch.frac_coords, noisy.coord_sigma),
    )
    assert bool((noisy.batch.frac_coords >= 0).all() and (noisy.batch.frac_coords < 1).all())
    # the atoms of the crystal at t = 1 are all masked (Z = 0 in the noisy batch)
    assert bool((noisy.batch.atomic_numbers[batch.batch == 2] == 0).all())
    assert torch.equal(
        noisy.types_t[noisy.types_t != MASK_CLASS], noisy.classes0[noisy.types_t != MASK_CLASS]
    )


def test_with_a_zero_score_the_loss_terms_measure_the_unit_noise_as_a41_and_a42_weight_it():
    """σ_t(n)² ‖∇ log q(x_t|x_0)‖² ≈ ‖z‖² for small σ (E = 3 per atom) and
    (1 - ᾱ_t) σ(n)² ‖∇ log q(L_t|L_0)‖² = ‖Z_sym‖_F² (E = 3 + 2·3 = 9)."""
    from model.config import LossConfig
    from model.crystal import CrystalBatch

    diffusion = CrystalDiffusion(DiffusionConfig())
    count, n = 4000, 4
    generator = torch.Generator().manual_seed(4)
    batch = CrystalBatch(
        atomic_numbers=torch.randint(1, 101, (count * n,), generator=generator),
        frac_coords=torch.rand(count * n, 3, generator=generator, dtype=F64),
        lattice=L0.expand(count, 3, 3).clone(),
        num_atoms=torch.full((count,), n),
    )
    step = torch.randint(1, 200, (count,), generator=generator)  # σ_t(n) ≤ 0.2: hardly wrapped
    noisy = diffusion.corrupt(batch, step, VOLUME_PER_ATOM, generator)
    zero = ScoreOutput(
        coords=torch.zeros(count * n, 3, dtype=F64),
        lattice=torch.zeros(count, 3, 3, dtype=F64),
        type_logits=torch.zeros(count * n, NUM_CLASSES, dtype=F64),
    )
    terms = diffusion_loss(zero, noisy, diffusion, LossConfig())
    assert float(terms.cell) == pytest.approx(9.0, abs=5 * math.sqrt(30 / count))
    assert float(terms.coord) == pytest.approx(3.0 * n, rel=0.035)
    # a perfect score gives zero coordinate and cell terms
    frac_to_cart = torch.linalg.inv(noisy.batch.lattice).mT[noisy.batch.batch]
    perfect = ScoreOutput(
        coords=torch.einsum("ni,nij->nj", noisy.coord_score, frac_to_cart),
        lattice=noisy.lattice_score,
        type_logits=zero.type_logits,
    )
    torch.testing.assert_close(perfect.fractional_coords(noisy.batch), noisy.coord_score)
    terms = diffusion_loss(perfect, noisy, diffusion, LossConfig())
    assert float(terms.coord) == pytest.approx(0.0, abs=1e-8)
    assert float(terms.cell) == pytest.approx(0.0, abs=1e-8)
