"""The two CorrDiff training tasks: what network each trains and what loss a batch gives.

A task's `loss` takes normalised tensors: condition y (batch, C_in, H, W) and target x (batch, C_out, H, W),
and a `corrdiff.seeding.Draws` from which it takes every random draw it makes (patch offsets on the host,
noise levels and noise on the device), so that a micro-batch's loss is a function of its seed.
"""

from typing import Protocol

import torch
from torch import nn

from corrdiff.config import DiffusionSection, TrainSection
from corrdiff.diffusion import DiffusionCondition, diffusion_network, EDMPrecond, random_patches, regression_loss
from corrdiff.models import UNetConfig
from corrdiff.seeding import Draws


class Task(Protocol):
    """What the Trainer needs of a training step."""

    kind: str
    """"regression" or "diffusion"; names the run folder and the checkpoint kind."""
    unet: UNetConfig
    net: nn.Module
    """The network being trained (its EMA is what the checkpoint keeps)."""

    def loss(self, module: nn.Module, condition: torch.Tensor, target: torch.Tensor,
             channel_weights: torch.Tensor | None, draws: Draws) -> torch.Tensor:
        """Scalar loss of a batch computed with `module` (the network, or its DDP/compiled wrapper)."""
        ...


class RegressionTask:
    """Step 1: the UNet μ(y) trained by (weighted) MSE against the target."""

    kind = "regression"

    def __init__(self, unet: UNetConfig, section: TrainSection):
        self.unet = unet
        self.section = section
        self.net: nn.Module = unet.build_regression()

    def loss(self, module, condition, target, channel_weights=None, draws: Draws | None = None):
        positions = None
        if self.section.patch_shape:
            (condition, target), positions = random_patches([condition, target], self.section.patch_shape,
                                                            draws.host if draws else None)
            positions = positions.to(condition.device)
        return regression_loss(module, condition, target, channel_weights, positions)


class DiffusionTask:
    """Step 2: the EDM denoiser of the residual r = x − μ(y), with μ from a frozen regression network."""

    kind = "diffusion"

    def __init__(self, unet: UNetConfig, section: DiffusionSection, regression: nn.Module):
        self.unet = unet
        self.section = section
        self.regression = regression.eval().requires_grad_(False)
        self.condition = DiffusionCondition.from_unet(unet)
        self.net: nn.Module = EDMPrecond(diffusion_network(unet), sigma_data=section.sigma_data)
        self.edm = section.edm_loss()

    def loss(self, module, condition, target, channel_weights=None, draws: Draws | None = None):
        with torch.no_grad():
            mean = self.regression(condition).to(torch.float32)
        residual = target - mean
        field = self.condition.field(condition, mean)
        if self.section.patch_shape:
            (residual,), positions = random_patches([residual], self.section.patch_shape, draws.host if draws else None)
            positions = positions.to(condition.device)
            denoiser_condition = self.condition.patches(field, positions, self.section.patch_shape)
        else:
            positions, denoiser_condition = None, self.condition.whole_domain(field)
        return self.edm(module, residual, denoiser_condition, positions, channel_weights,
                        draws.device if draws else None)
