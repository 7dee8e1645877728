import math

import pytest
import torch

from corrdiff.diffusion import diffusion_network, EDMLoss, EDMPrecond, edm_scalings, effective_target
from corrdiff.models import presets


def test_denoiser_returns_input_as_sigma_goes_to_zero(generator):
    net = diffusion_network(presets["tiny"])
    with torch.no_grad():
        for p in net.parameters():  # make F non-trivial so the identity is not an artefact of zero init
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    denoiser = EDMPrecond(net, sigma_data=0.5).eval()
    x = torch.randn(2, 2, 32, 32, generator=generator)
    condition = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        gaps = [(denoiser(x, sigma, condition) - x).abs().max().item() for sigma in (1e-2, 1e-4, 1e-6)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-4


@pytest.mark.parametrize("sigma", [0.01, 0.5, 3.0, 80.0])
def test_network_input_and_effective_target_have_unit_variance(sigma, generator):
    sigma_data = 0.5
    clean = sigma_data * torch.randn(200_000, dtype=torch.float64, generator=generator)
    noisy = clean + sigma * torch.randn(200_000, dtype=torch.float64, generator=generator)
    sigma_t = torch.tensor(sigma, dtype=torch.float64)
    _, _, c_in, _ = edm_scalings(sigma_t, sigma_data)
    assert (c_in * noisy).var().item() == pytest.approx(1.0, abs=0.02)
    assert effective_target(clean, noisy, sigma_t, sigma_data).var().item() == pytest.approx(1.0, abs=0.02)


def test_scalings_match_closed_forms():
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, 0.5)
    torch.testing.assert_close(c_skip + (c_out / 0.5) ** 2, torch.ones(3, dtype=torch.float64))  # c_skip + c_out²/σ_data² = 1
    torch.testing.assert_close(c_in * (sigma**2 + 0.25).sqrt(), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(c_noise, sigma.log() / 4)


def test_edm_loss_weight_is_inverse_square_of_c_out():
    loss = EDMLoss(P_mean=-1.2, P_std=1.2, sigma_data=0.5)
    sigma = torch.tensor([0.05, 0.7, 20.0], dtype=torch.float64)
    _, c_out, _, _ = edm_scalings(sigma, 0.5)
    torch.testing.assert_close(loss.weight(sigma), 1 / c_out**2)


def test_lognormal_sigma_distribution(generator):
    loss = EDMLoss(P_mean=-1.2, P_std=1.2, sigma_data=0.5)
    log_sigma = loss.sample_sigma(100_000, generator).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.02)


def test_edm_loss_of_exact_gaussian_denoiser_is_its_known_minimum(generator):
    """For x ~ N(0, s²) the ideal denoiser's weighted error has expectation λ(σ)·s²σ²/(s²+σ²) per element."""
    s = 0.5
    loss = EDMLoss(P_mean=0.0, P_std=1e-6, sigma_data=0.5)  # σ ≈ 1
    ideal = lambda x, sigma, cond, pos: x * (s**2 / (s**2 + sigma.reshape(-1, 1, 1, 1) ** 2))
    clean = s * torch.randn(4000, 1, 8, 8, generator=generator)
    value = loss(ideal, clean, generator=generator).item()
    expected = loss.weight(torch.tensor(1.0)).item() * s**2 / (s**2 + 1.0)
    assert value == pytest.approx(expected, rel=0.02)
    assert math.isfinite(value)
