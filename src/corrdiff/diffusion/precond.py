"""EDM preconditioning (Karras et al. 2022, Table 1): the network F wrapped into a denoiser D(x; σ, condition)."""

import torch
from torch import nn


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) for noise levels `sigma` (any shape, same shape out)."""
    sigma_sq = sigma**2
    c_skip = sigma_data**2 / (sigma_sq + sigma_data**2)
    c_out = sigma * sigma_data / (sigma_sq + sigma_data**2).sqrt()
    c_in = 1.0 / (sigma_sq + sigma_data**2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def effective_target(clean: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """The target F is trained towards: (x - c_skip·(x + n)) / c_out; unit variance for data of std σ_data."""
    c_skip, c_out, _, _ = edm_scalings(sigma, sigma_data)
    return (clean - c_skip * noisy) / c_out


class EDMPrecond(nn.Module):
    """Denoiser D(x; σ, condition) = c_skip·x + c_out·F(c_in·x ⊕ condition; c_noise).

    `net` is a noise-conditioned SongUNet whose inputs are the noisy image channels followed by the
    condition channels (⊕ is concatenation on the channel axis). Shapes: x (batch, C, h, w),
    sigma (batch,) or scalar, condition (batch, C_cond, h, w), positions (batch, 2) patch offsets or None.
    The denoiser computes in float32 at its boundary whatever dtype the network runs in.

    `scale_condition=True` feeds F with c_in·(x ⊕ condition) instead: the condition is scaled by c_in(σ) too.
    That is PhysicsNeMo's `EDMPrecondSR(scale_cond_input=True)` (its default, kept for networks trained with
    it, such as NVIDIA's published CorrDiff Taiwan denoiser); corrdiff never trains that way. The grid
    embedding is added inside `net`, so it is never scaled (nor is it in PhysicsNeMo).
    """

    def __init__(self, net: nn.Module, sigma_data: float, scale_condition: bool = False):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data
        self.scale_condition = scale_condition

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        condition: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]).reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data)
        if condition is None:
            net_input = c_in * x
        elif self.scale_condition:
            net_input = c_in * torch.cat([x, condition.to(x.dtype)], dim=1)
        else:
            net_input = torch.cat([c_in * x, condition.to(x.dtype)], dim=1)
        net_output = self.net(net_input, c_noise.flatten(), positions)
        return c_skip * x + c_out * net_output.to(torch.float32)
