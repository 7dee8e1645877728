"""Training losses: weighted MSE for the regression step, EDM denoising score matching for the residual."""

from dataclasses import dataclass

import torch


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, channel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all elements of w_c·(prediction − target)², channel axis 1; scalar."""
    error = (prediction.to(torch.float32) - target.to(torch.float32)) ** 2
    if channel_weights is not None:
        error = error * channel_weights.to(error).reshape(1, -1, 1, 1)
    return error.mean()


def regression_loss(net, condition: torch.Tensor, target: torch.Tensor, channel_weights=None, positions=None) -> torch.Tensor:
    """Regression step: weighted MSE between μ = net(condition) and the target x; scalar."""
    return weighted_mse(net(condition, None, positions), target, channel_weights)


@dataclass
class EDMLoss:
    """Denoising score matching with EDM's log-normal noise levels and loss weighting.

    σ = exp(P_mean + P_std·ξ), ξ ~ N(0, 1); loss = λ(σ)·‖D(x + σn; σ) − x‖², λ(σ) = (σ² + σ_data²)/(σ·σ_data)².
    In CorrDiff, x is the residual r = target − μ(condition) of a frozen regression model, and ln σ ~ N(0, 1.2²)
    (EDM's images use P_mean = −1.2). The settings' defaults live in the run config
    (`corrdiff.config.DiffusionSection`).
    """

    P_mean: float
    P_std: float
    sigma_data: float

    def sample_sigma(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Noise levels (batch,) drawn log-normally."""
        xi = torch.randn(batch, generator=generator, device=device)
        return (self.P_mean + self.P_std * xi).exp()

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """λ(σ), which makes the effective training target of F unit-variance."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def __call__(
        self,
        denoiser,
        clean: torch.Tensor,
        condition: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        channel_weights: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Scalar loss for clean samples (batch, C, h, w), e.g. residuals."""
        sigma = self.sample_sigma(clean.shape[0], generator, clean.device)
        noise = torch.randn(clean.shape, generator=generator, device=clean.device) * sigma.reshape(-1, 1, 1, 1)
        denoised = denoiser(clean + noise, sigma, condition, positions)
        weighted = self.weight(sigma).reshape(-1, 1, 1, 1) * (denoised - clean) ** 2
        if channel_weights is not None:
            weighted = weighted * channel_weights.to(weighted).reshape(1, -1, 1, 1)
        return weighted.mean()
