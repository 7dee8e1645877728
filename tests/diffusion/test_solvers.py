"""The solvers and schedules of corrdiff.diffusion against known answers: the exact Gaussian denoiser and its
closed-form ODE solution, the convergence order of each method, hand-worked steps, the Heun sampler as it
was before the other solvers came (bit for bit), and the per-member seeding of every solver."""

import math

import pytest
import torch

from corrdiff.diffusion.sampler import edm_sample, karras_sigmas, loglinear_sigmas, sample_ensemble, SamplerConfig, \
    solver_levels
from corrdiff.diffusion.solvers import dpmpp_2m, dpmpp_2m_sde, network_evaluations, SOLVERS, solvers_for, steps_for
from corrdiff.errors import ConfigError
from corrdiff.seeding import member_generator
from tests.diffusion.test_sampler import gaussian_denoiser, M, S

DETERMINISTIC = ("heun", "euler", "dpmpp_2m")


def exact_ode_solution(latents: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """The probability-flow ODE for x ~ N(M, S²) maps x_T = σ_max·z to M + (x_T − M)·S/sqrt(S² + σ_max²)."""
    x_T = latents.double() * sigma_max
    return M + (x_T - M) * S / math.sqrt(S**2 + sigma_max**2)


def ode_error(solver: str, steps: int, schedule: str = "karras") -> float:
    latents = torch.linspace(-3, 3, 64).reshape(1, 1, 8, 8)
    config = SamplerConfig(solver=solver, schedule=schedule, num_steps=steps, sigma_max=80.0)
    out = edm_sample(gaussian_denoiser, (1, 8, 8), [0], seed=0, config=config, latents=latents)
    return (out.double() - exact_ode_solution(latents, config.sigma_max)).abs().max().item()


# ---- the default is today's sampler, bit for bit ---------------------------------------------------------------

def heun_before_solvers(denoise, shape, members, seed, config):
    """The EDM Heun sampler exactly as corrdiff shipped it before other solvers were added (the reference)."""
    generators = [member_generator(seed, k) for k in members]
    randn = lambda: torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])  # noqa: E731
    sigmas = karras_sigmas(config).tolist()
    x_next = randn().to(torch.float64) * sigmas[0]
    gamma_max = min(config.S_churn / config.num_steps, math.sqrt(2) - 1)
    for i in range(config.num_steps):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        x_cur = x_next
        gamma = gamma_max if config.S_min <= t_cur <= config.S_max else 0.0
        t_hat = t_cur * (1 + gamma)
        x_hat = x_cur + math.sqrt(t_hat**2 - t_cur**2) * config.S_noise * randn().to(torch.float64) if gamma > 0 \
            else x_cur
        denoised = denoise(x_hat.to(torch.float32), torch.full((len(members),), t_hat)).to(torch.float64)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < config.num_steps - 1:
            denoised = denoise(x_next.to(torch.float32), torch.full((len(members),), t_next)).to(torch.float64)
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * (x_next - denoised) / t_next)
    return x_next.to(torch.float32)


@pytest.mark.parametrize("settings", [{}, {"num_steps": 6, "S_churn": 10.0},
                                      {"num_steps": 7, "S_churn": 3.0, "S_min": 0.05, "S_max": 50.0, "S_noise": 1.007},
                                      {"num_steps": 1}])
def test_default_heun_is_bit_identical_to_the_sampler_before_solvers(settings):
    config = SamplerConfig(**settings)
    assert config.solver == "heun" and config.schedule == "karras"
    new = edm_sample(gaussian_denoiser, (2, 8, 8), range(3), seed=5, config=config)
    old = heun_before_solvers(gaussian_denoiser, (2, 8, 8), range(3), 5, config)
    assert torch.equal(new, old)


# ---- schedules ---------------------------------------------------------------------------------------------------

def test_loglinear_schedule_is_uniform_in_log_sigma_and_the_limit_of_karras():
    config = SamplerConfig(schedule="loglinear", num_steps=10)
    sigmas = loglinear_sigmas(config)
    assert len(sigmas) == 11 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(800.0) and sigmas[-2].item() == pytest.approx(0.002)
    ratios = sigmas[1:-1] / sigmas[:-2]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (0.002 / 800.0) ** (1 / 9)))
    # σ^(1/ρ) spaced uniformly tends to log σ spaced uniformly as ρ → ∞
    karras = karras_sigmas(SamplerConfig(num_steps=10, rho=1e5))
    torch.testing.assert_close(karras[:-1], sigmas[:-1], rtol=1e-3, atol=0)


# ---- the closed-form ODE solution and each method's order --------------------------------------------------------

@pytest.mark.parametrize("schedule", ["karras", "loglinear"])
def test_euler_reproduces_the_closed_form_ode_solution_at_first_order(schedule):
    errors = [ode_error("euler", n, schedule) for n in (32, 64, 128, 512)]
    assert errors[-1] < 0.02  # → 0 as steps → ∞: max |x − exact| for |x_T| up to 3·σ_max
    for coarse, fine in zip(errors[:2], errors[1:3]):
        assert 1.8 < coarse / fine < 2.2  # first order: error halves when the steps double


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m"])
@pytest.mark.parametrize("schedule", ["karras", "loglinear"])
def test_second_order_solvers_converge_to_the_ode_solution(solver, schedule):
    errors = [ode_error(solver, n, schedule) for n in (32, 64, 128)]
    assert errors[-1] < 3e-3
    for coarse, fine in zip(errors, errors[1:]):
        assert coarse / fine > 3.5  # second order: error falls ≈4× when the steps double


# Steps enough for the discretisation error to sit below the sampling error of 4,000 draws (std ±0.023):
# the stochastic solvers converge more slowly (mean std over seeds: SDE 0.715 at 64 steps, 0.697 at 256;
# first-order Euler with churn 160: 0.60 at 64 steps, 0.63 at 256, 0.69 at 4096; with churn 80: 0.69 at 2048).
@pytest.mark.parametrize("config", [
    SamplerConfig(solver="euler", num_steps=256),
    SamplerConfig(solver="dpmpp_2m", num_steps=64),
    SamplerConfig(solver="dpmpp_2m_sde", num_steps=256),
    SamplerConfig(solver="euler", num_steps=2048, S_churn=80.0, S_min=0.05, S_max=50.0),
], ids=["euler", "dpmpp_2m", "dpmpp_2m_sde", "euler-churn"])
def test_solvers_reproduce_gaussian_mean_and_std(config):
    samples = edm_sample(gaussian_denoiser, (1, 20, 20), members=range(10), seed=7, config=config)
    values = samples.flatten().double()  # 4,000 independent pixels
    n = values.numel()
    assert abs(values.mean().item() - M) < 3 * S / math.sqrt(n)
    assert abs(values.std().item() - S) < 3 * S / math.sqrt(2 * (n - 1))


# ---- DPM-Solver++(2M) and its SDE variant, one hand-worked run ---------------------------------------------------
# σ = 4, 2, 1, 0 (h = ln 2 for both steps, so r = 1) and D(x, σ) = x/2, starting at x = 8:
#   step 1 (first order): D = 4,  x = (2/4)·8 + (1 − 1/2)·4 = 6
#   step 2: D = 3, D_prev = 4, estimate = (1 + 1/2)·3 − 4/2 = 2.5,  x = (1/2)·6 + (1/2)·2.5 = 4.25
#   step 3 (to σ = 0): x = D = 2.125

class Recording:
    """D(x, σ) = x/2 that records the (x, σ) it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma):
        self.calls.append((x.item(), sigma.item()))
        return x / 2


def test_dpmpp_2m_matches_a_hand_worked_run():
    denoise = Recording()
    out = dpmpp_2m(denoise, torch.full((1, 1, 1, 1), 8.0, dtype=torch.float64), [4.0, 2.0, 1.0, 0.0])
    assert denoise.calls == [(8.0, 4.0), (6.0, 2.0), (4.25, 1.0)]
    assert out.item() == 2.125


def test_dpmpp_2m_sde_matches_a_hand_worked_run():
    # With e^{−2h} = 1/4 and noise n = 1:  x_{i+1} = x_i/4 + (3/4)·estimate + σ_{i+1}·sqrt(3/4)
    denoise = Recording()
    ones = lambda: torch.ones(1, 1, 1, 1)  # noqa: E731
    out = dpmpp_2m_sde(denoise, torch.full((1, 1, 1, 1), 8.0, dtype=torch.float64), [4.0, 2.0, 1.0, 0.0], ones)
    x1 = 8 / 4 + 0.75 * 4 + 2 * math.sqrt(0.75)  # = 5 + √3
    x2 = x1 / 4 + 0.75 * (1.5 * x1 / 2 - 4 / 2) + 1 * math.sqrt(0.75)
    assert [s for _, s in denoise.calls] == [4.0, 2.0, 1.0]
    assert [x for x, _ in denoise.calls] == pytest.approx([8.0, x1, x2], rel=1e-6)  # float32 at the network
    assert out.item() == pytest.approx(x2 / 2, rel=1e-6)


def test_first_multistep_step_is_euler():
    """DPM-Solver++(1) is an Euler step in σ in EDM's parameterisation: one step from the same x agrees."""
    sigmas = [5.0, 1.5, 0.0]
    x = torch.linspace(-4, 4, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    seen = {}

    def recording(solver):
        def denoise(x, sigma):
            seen.setdefault(solver, []).append(x.clone())
            return gaussian_denoiser(x, sigma)
        return denoise

    for solver in ("euler", "dpmpp_2m"):
        SOLVERS[solver].integrate(recording(solver), x.clone(), sigmas, None)
    torch.testing.assert_close(seen["euler"][1], seen["dpmpp_2m"][1])


# ---- evaluations, seeding, settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("steps", [1, 2, 5, 18])
def test_network_evaluations_are_counted_right(solver, steps):
    calls = []
    config = SamplerConfig(solver=solver, num_steps=steps)
    edm_sample(lambda x, sigma: calls.append(1) or gaussian_denoiser(x, sigma), (1, 2, 2), [0], seed=0, config=config)
    assert len(calls) == config.network_evaluations == network_evaluations(solver, steps)
    assert network_evaluations(solver, steps_for(solver, config.network_evaluations)) == config.network_evaluations
    assert SamplerConfig().network_evaluations == 35


@pytest.mark.parametrize("config", [SamplerConfig(solver="euler", num_steps=5, S_churn=3.0),
                                    SamplerConfig(solver="dpmpp_2m", num_steps=5),
                                    SamplerConfig(solver="dpmpp_2m_sde", num_steps=5, schedule="loglinear")],
                         ids=["euler-churn", "dpmpp_2m", "dpmpp_2m_sde"])
def test_every_solver_draws_a_members_noise_from_its_own_generator(config):
    assert_seeded_per_member(gaussian_denoiser, config)


def assert_seeded_per_member(denoise, config: SamplerConfig) -> None:
    """Member 3 of five is member 3 alone; the same seed repeats, another seed and another member differ."""
    batch = edm_sample(denoise, (2, 6, 6), range(5), seed=3, config=config)
    alone = edm_sample(denoise, (2, 6, 6), [3], seed=3, config=config)
    again = edm_sample(denoise, (2, 6, 6), range(5), seed=3, config=config)
    other = edm_sample(denoise, (2, 6, 6), range(5), seed=4, config=config)
    assert torch.equal(batch[3], alone[0]) and torch.equal(batch, again)
    assert not torch.allclose(batch, other) and not torch.allclose(batch[0], batch[1])


def test_residual_scale_multiplies_each_channels_residual_around_the_mean():
    mean = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    denoiser = lambda x, sigma, cond: gaussian_denoiser(x, sigma)  # noqa: E731
    config = SamplerConfig(num_steps=3)
    plain = sample_ensemble(denoiser, mean, torch.zeros(1, 1, 6, 6), range(3), seed=1, config=config)
    scaled = sample_ensemble(denoiser, mean, torch.zeros(1, 1, 6, 6), range(3), seed=1,
                             config=SamplerConfig(num_steps=3, residual_scale=(2.0, 0.5)))
    expected = mean + torch.tensor([2.0, 0.5]).reshape(1, 2, 1, 1) * (plain - mean)
    torch.testing.assert_close(scaled, expected)
    with pytest.raises(ConfigError, match="residual_scale has 3 values for 2 target channels"):
        sample_ensemble(denoiser, mean, torch.zeros(1, 1, 6, 6), [0], seed=1,
                        config=SamplerConfig(residual_scale=(1.0, 1.0, 1.0)))


@pytest.mark.parametrize("settings, message", [
    ({"solver": "rk4"}, "solver must be one of"),
    ({"schedule": "cosine"}, "schedule must be one of"),
    ({"solver": "dpmpp_2m", "S_churn": 1.0}, "S_churn applies to the solvers"),
    ({"residual_scale": (1.0, -1.0)}, "residual_scale must hold positive"),
    ({"rho": 0.0}, "rho must be positive"),
    ({"rho": float("nan")}, "rho must be positive"),  # NaN fails every comparison: each check is written for it
    ({"S_churn": float("nan")}, "S_churn and S_noise must be at least 0"),
    ({"S_noise": float("nan")}, "S_churn and S_noise must be at least 0"),
    ({"sigma_max": float("inf")}, r"need 0 < sigma_min < sigma_max \(finite\)"),
    ({"S_min": 2.0, "S_max": 1.0}, "need 0 <= S_min <= S_max"),
    ({"arithmetic": "nvidia"}, r"arithmetic must be one of \['edm', 'physicsnemo'\], got 'nvidia'"),
    ({"arithmetic": "physicsnemo", "solver": "dpmpp_2m"}, "solver heun or euler on the karras schedule"),
    ({"arithmetic": "physicsnemo", "schedule": "loglinear"}, "solver heun or euler on the karras schedule"),
    ({"arithmetic": "physicsnemo", "solver": "euler", "S_churn": 1.0}, "set S_churn: 0"),
])
def test_settings_are_checked_with_a_clear_message(settings, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**settings)


# ---- arithmetic physicsnemo: PhysicsNeMo's stochastic_sampler ------------------------------------------------

@pytest.mark.parametrize("arithmetic", ["edm", "physicsnemo"])
def test_physicsnemo_churn_is_uncapped_and_draws_at_every_step(arithmetic):
    """S_churn = 40 over 18 steps: γ = 2.22, capped at √2 − 1 by EDM only; churn inside [S_min, S_max] only, but
    PhysicsNeMo draws (and multiplies by 0) at the other steps too, so that its draws line up step by step."""
    steps, window = 18, (0.05, 50.0)
    sigmas = karras_sigmas(SamplerConfig(num_steps=steps, sigma_max=80.0)).tolist()
    seen, draws = [], []

    def denoise(x, sigma):
        seen.append(float(sigma[0]))
        return torch.zeros_like(x)

    def noise():
        draws.append(1)
        return torch.zeros(1, 1, 2, 2)

    heun_solver = SOLVERS["heun"].integrate
    heun_solver(denoise, torch.zeros(1, 1, 2, 2, dtype=torch.float64), sigmas, noise, 40.0, *window, 1.0, arithmetic)
    gamma = 40.0 / steps if arithmetic == "physicsnemo" else math.sqrt(2) - 1
    churned = [i for i in range(steps) if window[0] <= sigmas[i] <= window[1]]
    assert 0 < len(churned) < steps
    first_evals = seen[::2]  # each step's first evaluation is at σ̂; the second (Heun's correction) at σ_{i+1}
    for i in range(steps):
        expected = sigmas[i] * (1 + gamma) if i in churned else sigmas[i]
        assert first_evals[i] == pytest.approx(expected, rel=1e-6)  # the network sees σ in float32
    assert len(draws) == (steps if arithmetic == "physicsnemo" else len(churned))


# ---- consistency sampling of a student (corrdiff train distill) --------------------------------------------------
# For x ~ N(M, S²) the probability-flow ODE dx/dσ = (x − D)/σ with the exact D = M + S²/(S² + σ²)·(x − M) is
# d(x − M)/dσ = (x − M)·σ/(S² + σ²), so x − M ∝ sqrt(S² + σ²) along a trajectory, and the consistency function,
# which maps each point to the trajectory's point at ε, is f(x, σ) = M + (x − M)·sqrt(S² + ε²)/sqrt(S² + σ²).

EPS = 0.002


def exact_student(x, sigma):
    """The exact consistency function of N(M, S²) with boundary ε = EPS: f(x, EPS) = x."""
    sigma = sigma.reshape(-1, 1, 1, 1)
    return M + (x - M) * math.sqrt(S**2 + EPS**2) / (S**2 + sigma**2).sqrt()


def test_the_exact_student_follows_the_ode_and_is_the_identity_at_its_boundary():
    x = torch.linspace(-3, 3, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    torch.testing.assert_close(exact_student(x, torch.tensor([EPS], dtype=torch.float64)), x, rtol=1e-15, atol=1e-15)
    # The deterministic solvers integrate the same ODE: from σ = 5, landing near σ = 0, they agree with f.
    from_five = SamplerConfig(solver="dpmpp_2m", num_steps=64, sigma_max=5.0, sigma_min=EPS)
    sampled = SOLVERS["dpmpp_2m"].integrate(gaussian_denoiser, x.clone(), karras_sigmas(from_five).tolist())
    torch.testing.assert_close(sampled, exact_student(x, torch.tensor([5.0], dtype=torch.float64)),
                               rtol=0, atol=1e-3)


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("schedule", ["karras", "loglinear"])
def test_consistency_sampling_of_the_exact_student_draws_the_data_distribution(steps, schedule):
    """One step maps σ_max·z onto N(M, S² + ε²) up to (S/σ_max)²; each further step re-noises to τ_i and maps back,
    which keeps the distribution (variance S² + ε² + τ_i² − ε² at τ_i, then S² + ε² again)."""
    config = SamplerConfig(solver="consistency", num_steps=steps, schedule=schedule, sigma_min=EPS)
    assert config.network_evaluations == steps
    samples = edm_sample(exact_student, (1, 20, 20), members=range(10), seed=7, config=config)
    values = samples.flatten().double()  # 4,000 independent pixels
    n = values.numel()
    assert abs(values.mean().item() - M) < 3 * S / math.sqrt(n)
    assert abs(values.std().item() - S) < 3 * S / math.sqrt(2 * (n - 1))


def test_consistency_levels_are_those_of_the_schedule_with_one_step_more():
    for steps in (1, 2, 4):
        config = SamplerConfig(solver="consistency", num_steps=steps, schedule="loglinear")
        longer = loglinear_sigmas(SamplerConfig(schedule="loglinear", num_steps=steps + 1)).tolist()
        assert solver_levels(config) == longer[:-1]  # τ_0 … τ_{N−1}, then σ_min where every jump lands
    assert solver_levels(SamplerConfig(solver="consistency", num_steps=1)) == pytest.approx([800.0, 0.002])
    assert solver_levels(SamplerConfig(solver="heun", num_steps=3)) == karras_sigmas(SamplerConfig(num_steps=3)).tolist()


def test_consistency_sampling_matches_a_hand_worked_run():
    # levels 4, 1 and ε = 0.5 with f(x, σ) = x/σ and noise n = 1: x̂ = 8/4 = 2; x = 2 + sqrt(1 − 0.25) = 2.866…;
    # x̂ = x/1
    seen = []

    def student(x, sigma):
        seen.append((x.item(), sigma.item()))
        return x / sigma.reshape(-1, 1, 1, 1)

    ones = lambda: torch.ones(1, 1, 1, 1)  # noqa: E731
    out = SOLVERS["consistency"].integrate(student, torch.full((1, 1, 1, 1), 8.0, dtype=torch.float64),
                                           [4.0, 1.0, 0.5], ones)
    assert seen == [(8.0, 4.0), (pytest.approx(2 + math.sqrt(0.75)), 1.0)]
    assert out.item() == pytest.approx(2 + math.sqrt(0.75))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_sampling_draws_a_members_noise_from_its_own_generator(steps):
    assert_seeded_per_member(exact_student, SamplerConfig(solver="consistency", num_steps=steps, schedule="loglinear"))


def test_a_student_samples_only_with_a_consistency_solver_and_a_denoiser_only_with_the_others():
    assert solvers_for(True) == ["consistency"] and "consistency" not in solvers_for(False)
    assert set(solvers_for(True)) | set(solvers_for(False)) == set(SOLVERS)
    with pytest.raises(ValueError, match="S_churn applies to the solvers"):
        SamplerConfig(solver="consistency", S_churn=1.0)
    with pytest.raises(ValueError, match="arithmetic 'physicsnemo' reproduces"):
        SamplerConfig(solver="consistency", arithmetic="physicsnemo")
