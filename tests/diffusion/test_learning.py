"""A few hundred CPU steps on a tiny synthetic downscaling problem must reduce both losses substantially."""

import pytest
import torch
import torch.nn.functional as F

from corrdiff.diffusion import diffusion_network, EDMLoss, EDMPrecond, regression_loss
from corrdiff.models import presets

SIZE = 16


def synthetic_batch(batch: int, gen: torch.Generator):
    """Condition: a smooth field (coarse 4×4 upsampled) and its square.

    Target: a function of the condition plus random small-scale waves (random amplitudes, fixed
    wavelength of 4 pixels, modulated by the smooth field): the residual has structure to learn.
    """
    coarse = torch.randn(batch, 1, 4, 4, generator=gen)
    smooth = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    condition = torch.cat([smooth, smooth**2 - 1, torch.ones_like(smooth)], dim=1)
    coords = torch.arange(SIZE, dtype=torch.float32) * (torch.pi / 2)
    waves = torch.stack([coords.cos()[None, :].expand(SIZE, SIZE), coords.sin()[:, None].expand(SIZE, SIZE)])
    amplitudes = torch.randn(batch, 2, 2, 1, 1, generator=gen)  # (batch, channel, wave, 1, 1)
    fine_noise = 0.5 * smooth.abs() * (amplitudes * waves).sum(dim=2)
    target = torch.cat([0.8 * smooth, torch.tanh(smooth)], dim=1) + fine_noise
    return condition, target


def fixed_eval(loss_fn, seed=99):
    """The loss on a fixed batch with fixed noise, so before/after values are comparable."""
    gen = torch.Generator().manual_seed(seed)
    condition, target = synthetic_batch(64, gen)
    with torch.no_grad():
        return loss_fn(condition, target, torch.Generator().manual_seed(seed + 1)).item()


def train(params, loss_fn, steps, lr=2e-3):
    optimizer = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        condition, target = synthetic_batch(16, gen)
        loss = loss_fn(condition, target, gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.slow
def test_regression_then_residual_diffusion_learn():
    torch.manual_seed(0)
    config = presets["tiny"].replace(img_shape=(SIZE, SIZE), attn_resolutions=())
    regression = config.build_regression()
    reg_loss = lambda c, t, g: regression_loss(regression, c, t)
    before = fixed_eval(reg_loss)
    train(regression.parameters(), reg_loss, steps=250)
    after = fixed_eval(reg_loss)
    assert after < 0.5 * before

    # Residual step: the regression model is frozen; the denoiser learns p(r | y).
    regression.eval().requires_grad_(False)
    denoiser = EDMPrecond(diffusion_network(config), sigma_data=0.5)
    edm = EDMLoss(P_mean=-1.2, P_std=1.2, sigma_data=0.5)

    def diff_loss(condition, target, gen):
        residual = target - regression(condition)
        return edm(denoiser, residual, condition, generator=gen)

    before = fixed_eval(diff_loss)
    train(denoiser.parameters(), diff_loss, steps=250)
    after = fixed_eval(diff_loss)
    assert after < 0.7 * before
