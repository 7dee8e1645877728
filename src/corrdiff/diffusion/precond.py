"""EDM preconditioning (Karras et al. 2022, Table 1): the network F wrapped into a denoiser D(x; σ, condition);
and the consistency student's (Song et al. 2023, Appendix C), the same network wrapped into f(x; σ, condition)."""

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
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        if condition is None:
            net_input = c_in * x
        elif self.scale_condition:
            net_input = c_in * torch.cat([x, condition.to(x.dtype)], dim=1)
        else:
            net_input = torch.cat([c_in * x, condition.to(x.dtype)], dim=1)
        net_output = self.net(net_input, c_noise.flatten(), positions)
        return c_skip * x + c_out * net_output.to(torch.float32)

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(c_skip, c_out, c_in, c_noise) at `sigma`: EDM's."""
        return edm_scalings(sigma, self.sigma_data)


def consistency_scalings(sigma: torch.Tensor, sigma_data: float, sigma_min: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) of a consistency model (Song et al. 2023, Appendix C), σ of any shape.

    c_skip = σ_data² / ((σ − ε)² + σ_data²) and c_out = σ_data (σ − ε) / sqrt(σ² + σ_data²), ε = `sigma_min`, so that
    c_skip(ε) = 1 and c_out(ε) = 0: f(x, ε) = x whatever the network. c_in and c_noise are EDM's, so that a
    student starting from a denoiser's weights feeds its network what the denoiser's was trained on; far above ε
    the two parameterisations agree to O(ε/σ), and the student starts out as the denoiser.
    """
    _, _, c_in, c_noise = edm_scalings(sigma, sigma_data)
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    return c_skip, c_out, c_in, c_noise


class ConsistencyPrecond(EDMPrecond):
    """Consistency function f(x; σ, condition) = c_skip(σ)·x + c_out(σ)·F(c_in·x ⊕ condition; c_noise), with
    f(x; ε, ·) = x (`consistency_scalings`): one evaluation maps a noisy residual at σ to one at ε ≈ 0.

    The student of consistency distillation (`corrdiff.diffusion.consistency`); same network, inputs, shapes and
    weights (`net.*`) as `EDMPrecond`, so it starts from a trained denoiser's weights and is sampled wherever a
    denoiser is, with the `consistency` solver (`corrdiff.diffusion.solvers`).
    """

    def __init__(self, net: nn.Module, sigma_data: float, sigma_min: float, scale_condition: bool = False):
        super().__init__(net, sigma_data, scale_condition)
        self.sigma_min = sigma_min

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return consistency_scalings(sigma, self.sigma_data, self.sigma_min)
