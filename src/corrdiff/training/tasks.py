"""The two CorrDiff training tasks: what network each trains and what loss a batch gives (the third, consistency
distillation of the diffusion step, is `corrdiff.training.distill`).

A task's `loss` takes normalised tensors: condition y (batch, C_in, H, W) and target x (batch, C_out, H, W),
and a `corrdiff.seeding.Draws` from which it takes every random draw it makes (patch offsets on the host,
noise levels and noise on the device), so that a micro-batch's loss is a function of its seed. The diffusion
task's condition may also carry the cached regression mean: (batch, C_in + C_out, H, W), y then μ(y)
(`corrdiff.training.regression_cache`).

On a GPU the patched path makes no host sync: patch offsets are drawn on the host (the same draws on every
device) and sent to the device asynchronously from pinned memory; everything else stays on the device.
"""

from typing import Protocol

import numpy as np

import torch
from torch import nn

from corrdiff.config import DiffusionSection, TrainSection
from corrdiff.diffusion import (crop, DiffusionCondition, diffusion_network, EDMPrecond, random_patches, regression_loss,
                                SamplerConfig)
from corrdiff.models import UNetConfig
from corrdiff.seeding import Draws
from corrdiff.training.regression_cache import regression_means


class Task(Protocol):
    """What the Trainer needs of a training step."""

    kind: str
    """"regression", "diffusion" or "distill": the step, which names its run folder and config section (the
    checkpoint's kind is its `CheckpointMeta`'s: a distilled student is a diffusion checkpoint)."""
    unet: UNetConfig
    net: nn.Module
    """The network being trained (its EMA is what the checkpoint keeps)."""

    def loss(self, module: nn.Module, condition: torch.Tensor, target: torch.Tensor,
             channel_weights: torch.Tensor | None, draws: Draws) -> torch.Tensor:
        """Scalar loss of a batch computed with `module` (the network, or its DDP/compiled wrapper)."""
        ...

    # A task may also keep state of its own that the Trainer updates, checks and checkpoints with the network
    # (the target network of consistency distillation); the Trainer calls these when the task has them:
    #   after_step(net)                 after each optimizer step and EMA update, with the trained network
    #   extra_state() -> {name: tensor} what to keep in the checkpoint's state.safetensors (`task.<name>`)
    #   load_extra_state(tensors, where) put back what `extra_state` gave, on --resume


def patch_positions(batch: int, domain: tuple[int, int], patch_shape: tuple[int, int], draws: Draws | None,
                    device: torch.device) -> torch.Tensor:
    """Random patch offsets (batch, 2) of (y0, x0) on `device`, drawn on the host as `random_patches` draws them.

    The draw goes through `random_patches` itself on a zero-channel stand-in (nothing is copied), so there is one
    definition of a training patch draw; the offsets reach a GPU asynchronously, from pinned memory.
    """
    stand_in = torch.empty(batch, 0, *domain)
    _, positions = random_patches([stand_in], patch_shape, draws.host if draws else None)
    if device.type != "cuda":
        return positions.to(device)
    return positions.pin_memory().to(device, non_blocking=True)


def crop_patches(tensor: torch.Tensor, positions: torch.Tensor, patch_shape: tuple[int, int]) -> torch.Tensor:
    """k patches of each element of (batch, C, H, W) at offsets (batch·k, 2), element-major: (batch·k, C, h, w)."""
    per_sample = positions.shape[0] // tensor.shape[0]
    if per_sample == 1:
        return crop(tensor, positions, patch_shape)
    offsets = positions.view(tensor.shape[0], per_sample, 2)
    patches = [crop(tensor, offsets[:, j], patch_shape) for j in range(per_sample)]
    return torch.stack(patches, dim=1).flatten(0, 1)


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
            positions = patch_positions(condition.shape[0], condition.shape[-2:], self.section.patch_shape, draws,
                                        condition.device)
            condition, target = (crop(t, positions, self.section.patch_shape) for t in (condition, target))
        return regression_loss(module, condition, target, channel_weights, positions)


class DiffusionTask:
    """Step 2: the EDM denoiser of the residual r = x − μ(y), with μ from a frozen regression network.

    With `patches_per_sample` k > 1 each sample gives k random patches (batch·k in all, element-major), so that
    one full-domain read and one μ feed several patches; the loss is their mean.
    """

    kind = "diffusion"

    def __init__(self, unet: UNetConfig, section: DiffusionSection, regression: nn.Module):
        self.unet = unet
        self.section = section
        self.regression = regression.eval().requires_grad_(False)
        self.condition = DiffusionCondition.from_unet(unet)
        self.net: nn.Module = EDMPrecond(diffusion_network(unet), sigma_data=section.sigma_data)
        self.edm = section.edm_loss()
        self.residual_unit: tuple[float, ...] = ()
        """One value per target channel: training residuals are divided by it (`CheckpointMeta.residual_unit`);
        (): not."""

    selects_by_samples = False
    """Whether the run's `best` checkpoint is the sample check's lowest fair CRPS (else the lowest validation
    loss; `best-crps` always follows the sample check)."""

    def check_sampler(self) -> SamplerConfig:
        """The sampler of the sample check during training (`corrdiff.training.sample_check`): DPM-Solver++(2M) on
        log-linear levels, `sample_steps` steps."""
        return SamplerConfig(solver="dpmpp_2m", schedule="loglinear", num_steps=self.section.sample_steps)

    def to_device(self, device) -> "DiffusionTask":
        """This task with its frozen regression network on `device`."""
        self.regression.to(device)
        return self

    def set_residual_unit(self, unit: tuple[float, ...]) -> None:
        """Train on the residual divided by `unit` (one value per target channel; () for the residual as it is)."""
        self.residual_unit = tuple(float(u) for u in unit)

    def inputs_and_mean(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y (batch, C_in, H, W), μ(y) (batch, C_out, H, W) float32): μ cached in `condition`, else computed."""
        inputs = self.unet.in_channels
        if condition.shape[1] == inputs + self.unet.out_channels:
            return condition[:, :inputs], condition[:, inputs:].to(torch.float32)
        return condition, regression_means(self.regression, condition)

    def _patch_condition(self, field: torch.Tensor, positions: torch.Tensor, per_sample: int) -> torch.Tensor:
        """The denoiser's condition on k patches per element of `field` at offsets (batch·k, 2):
        (batch·k, channels, h, w)."""
        patch = self.section.patch_shape
        if per_sample == 1:
            return self.condition.patches(field, positions, patch)
        offsets = positions.view(field.shape[0], per_sample, 2)
        return torch.stack([self.condition.patches(field, offsets[:, j], patch) for j in range(per_sample)],
                           dim=1).flatten(0, 1)

    def residual_batch(self, condition: torch.Tensor, target: torch.Tensor, draws: Draws | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What the denoiser learns from a batch: the residual (in `residual_unit`s) on the whole domain or on
        random patches (batch·k, C_out, h, w), the denoiser's condition there, and the patches' offsets (None:
        the whole domain). Draws the patch offsets only (from `draws.host`)."""
        condition, mean = self.inputs_and_mean(condition)
        residual = target - mean
        if self.residual_unit:
            residual = residual / residual.new_tensor(self.residual_unit).reshape(1, -1, 1, 1)
        field = self.condition.field(condition, mean)
        patch = self.section.patch_shape
        if patch:
            per_sample = self.section.patches_per_sample
            positions = patch_positions(condition.shape[0] * per_sample, condition.shape[-2:], patch, draws,
                                        condition.device)
            residual = crop_patches(residual, positions, patch)
            denoiser_condition = self._patch_condition(field, positions, per_sample)
        else:
            positions, denoiser_condition = None, self.condition.whole_domain(field)
        return residual, denoiser_condition, positions

    def loss(self, module, condition, target, channel_weights=None, draws: Draws | None = None):
        residual, denoiser_condition, positions = self.residual_batch(condition, target, draws)
        return self.edm(module, residual, denoiser_condition, positions, channel_weights,
                        draws.device if draws else None)


@torch.no_grad()
def residual_std(task: DiffusionTask, dataset, samples: int, device, batch: int = 16) -> tuple[float, ...]:
    """Per-channel standard deviation of the residual x − μ(y) (normalised target units, float64 sums) over
    `samples` training samples evenly spaced through `dataset` (all of them if it holds fewer)."""
    count = min(samples, len(dataset))
    indices = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int))
    total = total_sq = None
    points = 0
    for start in range(0, len(indices), batch):
        items = [dataset[int(i)] for i in indices[start:start + batch]]
        condition = torch.stack([item.input for item in items]).to(device)
        target = torch.stack([item.target for item in items]).to(device)
        _, mean = task.inputs_and_mean(condition)
        residual = (target.to(torch.float32) - mean).to(torch.float64)
        sums, sums_sq = residual.sum(dim=(0, 2, 3)), (residual**2).sum(dim=(0, 2, 3))
        total = sums if total is None else total + sums
        total_sq = sums_sq if total_sq is None else total_sq + sums_sq
        points += residual[:, 0].numel()
    variance = (total_sq / points - (total / points) ** 2).clamp_min(0)
    return tuple(float(v) for v in variance.sqrt().cpu())
