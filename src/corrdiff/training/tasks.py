"""The two CorrDiff training tasks: what network each trains and what loss a batch gives."""

import torch
from torch import nn

from corrdiff.config import DiffusionSection, TrainSection
from corrdiff.diffusion import EDMLoss, EDMPrecond, random_patches, regression_loss
from corrdiff.diffusion.conditioning import diffusion_condition, with_global_context
from corrdiff.models import UNetConfig


class RegressionTask:
    """Step 1: the UNet μ(y) trained by (weighted) MSE against the target."""

    kind = "regression"

    def __init__(self, unet: UNetConfig, section: TrainSection):
        self.unet = unet
        self.section = section
        self.net: nn.Module = unet.build_regression()

    def loss(self, module: nn.Module, condition: torch.Tensor, target: torch.Tensor, channel_weights=None):
        """Scalar loss of a batch; condition (batch, C_in, H, W) and target (batch, C_out, H, W), normalised."""
        positions = None
        if self.section.patch_shape:
            (condition, target), positions = random_patches([condition, target], self.section.patch_shape)
            positions = positions.to(condition.device)
        return regression_loss(module, condition, target, channel_weights, positions)


class DiffusionTask:
    """Step 2: the EDM denoiser of the residual r = x − μ(y), with μ from a frozen regression network."""

    kind = "diffusion"

    def __init__(self, unet: UNetConfig, section: DiffusionSection, regression: nn.Module):
        self.unet = unet
        self.section = section
        self.regression = regression.eval().requires_grad_(False)
        self.net: nn.Module = EDMPrecond(unet.build_diffusion(), sigma_data=section.sigma_data)
        self.edm = EDMLoss(P_mean=section.P_mean, P_std=section.P_std, sigma_data=section.sigma_data)

    def loss(self, module: nn.Module, condition: torch.Tensor, target: torch.Tensor, channel_weights=None):
        with torch.no_grad():
            mean = self.regression(condition).to(torch.float32)
        residual = target - mean
        full_condition = diffusion_condition(condition, mean, self.unet.condition_on_mean)
        positions = None
        patch_condition = full_condition
        if self.section.patch_shape:
            (residual, patch_condition), positions = random_patches([residual, full_condition], self.section.patch_shape)
            positions = positions.to(condition.device)
        if self.unet.global_context:
            patch_condition = with_global_context(patch_condition, full_condition)
        return self.edm(module, residual, patch_condition, positions, channel_weights)
