"""Networks imported from PhysicsNeMo files reproduce PhysicsNeMo's own outputs (recorded in the fixtures).

Tolerance: max |corrdiff − PhysicsNeMo| ≤ 2e-5 × std(PhysicsNeMo's output) for single network evaluations and
for complete 8-step samplers (docs/interop.md gives the measured values).
"""

import numpy as np
import pytest
import torch

from corrdiff.diffusion import DiffusionCondition, edm_sample, SamplerConfig
from corrdiff.interop.physicsnemo import physicsnemo_grid
from tests.interop.physicsnemo_fixtures import expected, network, relative_error, SHAPE, TOLERANCE

SAMPLER = SamplerConfig(num_steps=8, sigma_min=0.002, sigma_max=80.0, rho=7.0)


@pytest.fixture(scope="module")
def ref():
    return {k: torch.from_numpy(v) if k in ("y", "noisy", "latents") else v for k, v in expected().items()}


@pytest.mark.parametrize("name", ["regression", "regression_legacy"])
def test_regression_forward_matches(ref, name):
    net, converted = network(name, "regression")
    assert converted.layout.unet.grid_embedding == "learned"
    assert relative_error(net(ref["y"]), ref[name]) <= TOLERANCE


def test_denoiser_matches_at_every_noise_level(ref):
    net, converted = network("diffusion", "diffusion")
    assert converted.layout.sigma_data == 0.5 and converted.layout.unet.noise_embedding == "positional"
    for i, sigma in enumerate(ref["sigmas"]):
        denoised = net(ref["noisy"], torch.full((2,), float(sigma)), ref["y"])
        assert relative_error(denoised, ref["diffusion"][i]) <= TOLERANCE, f"σ = {sigma}"


def test_mean_conditioned_legacy_denoiser_matches(ref):
    """Tar archive, Modulus attention names, EDMPrecondSR, Fourier embedding, learnable grid, condition [μ, y]."""
    net, converted = network("diffusion_legacy", "diffusion")
    unet = converted.layout.unet
    assert converted.archive.container == "tar"
    assert unet.condition_on_mean and unet.noise_embedding == "fourier"
    condition = DiffusionCondition.from_unet(unet).field(ref["y"], torch.from_numpy(ref["regression"]))
    for i, sigma in enumerate(ref["sigmas"]):
        denoised = net(ref["noisy"], torch.full((2,), float(sigma)), condition)
        assert relative_error(denoised, ref["diffusion_legacy"][i]) <= TOLERANCE, f"σ = {sigma}"


def test_attention_levels_follow_physicsnemo_rule():
    """PhysicsNeMo puts attention where H >> level is listed (12 of 24); corrdiff lists the shorter side (8 of 16)."""
    net, converted = network("diffusion", "diffusion")
    assert converted.layout.unet.attn_resolutions == (8,)
    with_attention = [i for i, block in enumerate(net.net.encoder) if block.attn is not None]
    assert with_attention == [3, 4]  # level 1's two blocks (after its down block)


@pytest.mark.parametrize("name, on_mean", [("diffusion", False), ("diffusion_legacy", True)])
def test_complete_sampler_run_matches(ref, name, on_mean):
    """corrdiff's Heun sampler from the same latents as PhysicsNeMo's stochastic_sampler (S_churn = 0)."""
    net, _ = network(name, "diffusion")
    condition = ref["y"]
    if on_mean:
        mean = torch.from_numpy(ref["regression"][:1]).expand(2, -1, -1, -1)
        condition = torch.cat([ref["y"], mean], dim=1)
    residual = edm_sample(lambda x, sigma: net(x, sigma, condition), (2, *SHAPE), [0, 1], 0, SAMPLER,
                          latents=ref["latents"])
    key = "sample_residual_legacy" if on_mean else "sample_residual"
    assert relative_error(residual, ref[key]) <= TOLERANCE


@pytest.mark.parametrize("gridtype, channels", [("sinusoidal", 4), ("sinusoidal", 8), ("sinusoidal_octave", 8),
                                                ("linear", 2), ("test", 2)])
def test_grid_formulas_are_physicsnemos(ref, gridtype, channels):
    np.testing.assert_array_equal(physicsnemo_grid(gridtype, channels, SHAPE).numpy(),
                                  ref[f"grid_{gridtype}_{channels}"])
