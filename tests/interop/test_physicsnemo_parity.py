"""`sampler.arithmetic: physicsnemo` reproduces PhysicsNeMo 2.2.2's own inference (fixtures `*_eval`, `parity_*`):
its eval-mode GroupNorm (unbiased variance), its uncapped churn and its noise draws; without it, each part differs.

Tolerances (max |corrdiff − PhysicsNeMo| / std(PhysicsNeMo's output)): complete samplers 1e-5 (measured ≤ 3e-6);
single network evaluations the float32 round-off bound of the other peer tests, 2e-5 (measured ≤ 8.1e-6).
"""

import pytest
import torch

from corrdiff.diffusion import DiffusionCondition, downscale_ensemble, SamplerConfig
from corrdiff.diffusion.sampler import use_arithmetic
from corrdiff.seeding import member_generator
from tests.interop.physicsnemo_fixtures import expected, network, PARITY, PARITY_TOLERANCE, parity_residual, \
    relative_error, SHAPE, TOLERANCE

# Without the unbiased variance the tiny fixtures' forwards differ by 1e-2 of their std (groups of 4 channels).
GROUPNORM_EFFECT = 1e-3


@pytest.fixture(scope="module")
def ref():
    return {k: torch.from_numpy(v) if k in ("y", "noisy") else v for k, v in expected().items()}


def test_eval_mode_forwards_match_with_the_unbiased_variance(ref):
    regression, _ = network("regression", "regression")
    denoiser, _ = network("diffusion", "diffusion")
    scaled, converted = network("diffusion_scaled", "diffusion")
    mean = torch.from_numpy(ref["regression_eval"])
    condition = DiffusionCondition.from_unet(converted.layout.unet).field(ref["y"], mean)
    for arithmetic in ("physicsnemo", "edm"):
        use_arithmetic(arithmetic, regression, denoiser, scaled)
        errors = [relative_error(regression(ref["y"]), ref["regression_eval"])]
        for i, sigma in enumerate(ref["sigmas"]):
            sigmas = torch.full((2,), float(sigma))
            errors.append(relative_error(denoiser(ref["noisy"], sigmas, ref["y"]), ref["diffusion_eval"][i]))
            errors.append(relative_error(scaled(ref["noisy"], sigmas, condition), ref["diffusion_scaled_eval"][i]))
        if arithmetic == "physicsnemo":
            assert max(errors) <= TOLERANCE
        else:
            assert min(errors[:1] + errors[-2:]) > GROUPNORM_EFFECT  # the regression, and both denoisers at σ = 80


@pytest.mark.parametrize("key", PARITY)
def test_generation_path_reproduces_physicsnemos_samplers(ref, key):
    """`downscale_ensemble`, the per-time path of generate and the Python API: mean and members 0, 1 of seed s are
    PhysicsNeMo's samples of seeds s, s + 1; switching back to edm on the same networks restores EDM's arithmetic."""
    name, fields, seed = PARITY[key]
    regression, _ = network("regression", "regression")
    denoiser, converted = network(name, "diffusion")
    condition = DiffusionCondition.from_unet(converted.layout.unet)
    y0 = ref["y"][:1]
    mean, ensemble = downscale_ensemble(regression, denoiser, condition, y0, 2, seed,
                                        SamplerConfig(arithmetic="physicsnemo", **fields))
    assert relative_error(mean, ref["parity_mean"]) <= PARITY_TOLERANCE
    assert relative_error(ensemble - mean, ref[key]) <= PARITY_TOLERANCE
    mean, ensemble = downscale_ensemble(regression, denoiser, condition, y0, 2, seed, SamplerConfig(**fields))
    assert relative_error(mean, ref["parity_mean"]) > GROUPNORM_EFFECT
    assert relative_error(ensemble - mean, ref[key]) > 0.5  # other noise altogether


def test_each_part_of_the_switch_matters(ref):
    """With PhysicsNeMo's seeds throughout: EDM's GroupNorm, or EDM's churn (γ capped at √2 − 1, no draw where γ is
    0), alone each moves the samples away from PhysicsNeMo's; the Euler run has no churn, so only GroupNorm counts."""
    y = ref["y"]
    assert relative_error(parity_residual("parity_churn", y), ref["parity_churn"]) <= PARITY_TOLERANCE
    assert relative_error(parity_residual("parity_churn", y, norm="edm"), ref["parity_churn"]) > GROUPNORM_EFFECT
    for key in ("parity_churn", "parity_window"):
        assert relative_error(parity_residual(key, y, churn="edm"), ref[key]) > 0.1
    assert relative_error(parity_residual("parity_euler", y, churn="edm"), ref["parity_euler"]) <= PARITY_TOLERANCE


def test_first_draws_are_physicsnemos_latents(ref):
    """Member k's generator under arithmetic physicsnemo is PhysicsNeMo's StackedRandomGenerator's for seed k."""
    draws = [torch.randn((2, *SHAPE), generator=member_generator(0, k, arithmetic="physicsnemo")) for k in range(2)]
    assert torch.equal(torch.stack(draws), torch.from_numpy(ref["parity_latents"]))
