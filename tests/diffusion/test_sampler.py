import math

import pytest
import torch

from corrdiff.diffusion import diffusion_network, EDMPrecond, SamplerConfig, edm_sample, karras_sigmas, sample_ensemble
from corrdiff.models import presets

M, S = 1.5, 0.7  # data distribution N(M, S²), per pixel


def gaussian_denoiser(x, sigma):
    """Exact E[x | x + σn] for x ~ N(M, S²)."""
    sigma = sigma.reshape(-1, 1, 1, 1)
    return M + S**2 / (S**2 + sigma**2) * (x - M)


def test_karras_sigmas_endpoints_and_monotonic():
    config = SamplerConfig(num_steps=18)
    sigmas = karras_sigmas(config)
    assert len(sigmas) == 19 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(800.0) and sigmas[-2].item() == pytest.approx(0.002)
    assert (sigmas[:-1] > sigmas[1:]).all()


@pytest.mark.parametrize(
    "config",
    # 64 steps: with 18, Heun's discretisation error (≈10% in std for this narrow Gaussian) exceeds the
    # sampling error of 4,000 draws; the convergence test below covers the step count itself. Churn adds
    # discretisation error of its own (std +3% at 64 steps, +0.7% at 256, mean over seeds 0-7): 256 steps.
    [SamplerConfig(num_steps=64), SamplerConfig(num_steps=256, S_churn=160.0, S_min=0.05, S_max=50.0)],
    ids=["deterministic", "stochastic"],
)
def test_sampler_reproduces_gaussian_mean_and_std(config):
    samples = edm_sample(gaussian_denoiser, (1, 20, 20), members=range(10), seed=7, config=config)
    values = samples.flatten().double()  # 4,000 independent pixels
    n = values.numel()
    assert n == 4000
    se_mean = S / math.sqrt(n)
    se_std = S / math.sqrt(2 * (n - 1))
    assert abs(values.mean().item() - M) < 3 * se_mean
    assert abs(values.std().item() - S) < 3 * se_std


def test_deterministic_sampler_converges_at_second_order():
    """The ODE maps x_T to M + (x_T − M)·S/sqrt(S² + σ_max²); Heun's error falls ≈4× per doubling of steps."""
    latents = torch.linspace(-3, 3, 64).reshape(1, 1, 8, 8)
    errors = []
    for steps in (16, 32, 64):
        config = SamplerConfig(num_steps=steps, sigma_max=80.0)
        out = edm_sample(gaussian_denoiser, (1, 8, 8), [0], seed=0, config=config, latents=latents)
        x_T = latents * config.sigma_max
        exact = M + (x_T - M) * S / math.sqrt(S**2 + config.sigma_max**2)
        errors.append((out - exact).abs().max().item())
    assert errors[0] / errors[1] > 3.0 and errors[1] / errors[2] > 3.0


def test_same_seed_is_bit_identical_and_other_seed_differs():
    config = SamplerConfig(num_steps=6, S_churn=10.0)
    a = edm_sample(gaussian_denoiser, (2, 8, 8), range(4), seed=3, config=config)
    b = edm_sample(gaussian_denoiser, (2, 8, 8), range(4), seed=3, config=config)
    c = edm_sample(gaussian_denoiser, (2, 8, 8), range(4), seed=4, config=config)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_member_is_independent_of_batch_with_a_real_network(generator):
    config_net = presets["tiny"]
    net = diffusion_network(config_net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    denoiser = EDMPrecond(net, sigma_data=0.5).eval()
    mean = torch.randn(1, 2, 32, 32, generator=generator)
    condition = torch.randn(1, 3, 32, 32, generator=generator)
    sampler = SamplerConfig(num_steps=4, S_churn=5.0)
    with torch.no_grad():
        batch_of_8 = sample_ensemble(denoiser, mean, condition, range(8), seed=11, config=sampler)
        alone = sample_ensemble(denoiser, mean, condition, [5], seed=11, config=sampler)
        again = sample_ensemble(denoiser, mean, condition, range(8), seed=11, config=sampler, batch_size=3)
    # Batched convolutions may sum in another order: equal to float tolerance, not bitwise.
    torch.testing.assert_close(alone[0], batch_of_8[5], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, batch_of_8, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batch_of_8[0], batch_of_8[1])


def test_ensemble_is_mean_plus_residual():
    mean = torch.full((1, 1, 8, 8), 10.0)
    zero_residual = lambda x, sigma, cond: torch.zeros_like(x)  # denoiser that says the residual is 0
    out = sample_ensemble(zero_residual, mean, torch.zeros(1, 1, 8, 8), range(3), seed=0,
                          config=SamplerConfig(num_steps=5))
    torch.testing.assert_close(out, mean.expand(3, -1, -1, -1))
