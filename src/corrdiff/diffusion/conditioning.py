"""What the residual denoiser is conditioned on: the condition, optionally the regression mean, and,
for patches, optionally the whole condition field resized to the patch (global context)."""

import torch

from corrdiff.diffusion.patching import global_context


def diffusion_condition(condition: torch.Tensor, mean: torch.Tensor, condition_on_mean: bool) -> torch.Tensor:
    """Full-domain diffusion condition (batch, C_cond [+ C_out], H, W)."""
    return torch.cat([condition, mean], dim=1) if condition_on_mean else condition


def with_global_context(patch_condition: torch.Tensor, full_condition: torch.Tensor) -> torch.Tensor:
    """Append the full condition, resized to the patch, to a patch's condition: channels doubled."""
    return torch.cat([patch_condition, global_context(full_condition, tuple(patch_condition.shape[-2:]))], dim=1)
