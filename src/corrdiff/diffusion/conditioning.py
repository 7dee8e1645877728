"""What the residual denoiser is conditioned on, decided in one place for training, generation and patches.

The condition of the residual denoiser D(r; σ, c) is, channel after channel:
  1. the regression network's input y (coarse fields on the fine grid, then static fields), `C_in` channels;
  2. optionally the regression mean μ(y) (`on_mean`), `C_out` channels;
  3. optionally, when the denoiser runs on patches, the whole-domain field of 1–2 resized to the patch
     (`global_context`), so that a patch knows the large-scale state around it.
Run on the whole domain, the context of 3 is the field itself, so a network trained on patches with context
can also sample a domain of its own training size in one pass.
"""

from dataclasses import dataclass

import torch

from corrdiff.diffusion.patching import crop, crops_at, global_context
from corrdiff.models import SongUNet, UNetConfig


@dataclass(frozen=True)
class DiffusionCondition:
    """Builds the denoiser's condition from y (batch, C_in, H, W) and μ (batch, C_out, H, W), normalised."""

    input_channels: int
    output_channels: int
    on_mean: bool = False
    global_context: bool = False

    @classmethod
    def from_unet(cls, unet: UNetConfig) -> "DiffusionCondition":
        """The condition a network configuration was built for (its `condition_on_mean`, `global_context`)."""
        return cls(unet.in_channels, unet.out_channels, unet.condition_on_mean, unet.global_context)

    @property
    def field_channels(self) -> int:
        """Channels of the whole-domain condition field (items 1–2)."""
        return self.input_channels + (self.output_channels if self.on_mean else 0)

    @property
    def channels(self) -> int:
        """Channels the denoiser receives besides the noisy residual."""
        return self.field_channels * (2 if self.global_context else 1)

    def field(self, inputs: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """The whole-domain condition field (batch, field_channels, H, W)."""
        return torch.cat([inputs, mean.to(inputs.dtype)], dim=1) if self.on_mean else inputs

    def whole_domain(self, field: torch.Tensor) -> torch.Tensor:
        """What the denoiser sees when run on the whole domain at once: (batch, channels, H, W)."""
        return torch.cat([field, field], dim=1) if self.global_context else field

    def patches(self, field: torch.Tensor, positions: torch.Tensor, patch_shape: tuple[int, int]) -> torch.Tensor:
        """What the denoiser sees on one patch per element, at (batch, 2) offsets `positions`: (batch, channels, h, w).

        `field` (batch, field_channels, H, W). Used in training, where each sample gets its own random patch.
        """
        return self._with_context(crop(field, positions, patch_shape), field, patch_shape, repeats=1)

    def tiles(self, field: torch.Tensor, offsets: torch.Tensor, patch_shape: tuple[int, int]) -> torch.Tensor:
        """What the denoiser sees on the same n patches (offsets (n, 2)) of every element: (batch·n, channels, h, w).

        Used in stitched sampling; the patches of element b are rows b·n … b·n + n − 1.
        """
        return self._with_context(crops_at(field, offsets, patch_shape), field, patch_shape, repeats=len(offsets))

    def _with_context(self, crops: torch.Tensor, field: torch.Tensor, patch_shape, repeats: int) -> torch.Tensor:
        if not self.global_context:
            return crops
        context = global_context(field, patch_shape)
        if repeats > 1:
            context = context.repeat_interleave(repeats, 0)
        return torch.cat([crops, context], dim=1)


def diffusion_network(unet: UNetConfig) -> SongUNet:
    """The residual denoiser's network F: noisy residual and condition in, residual out, noise-conditioned."""
    return unet.build_diffusion(condition_channels=DiffusionCondition.from_unet(unet).channels)
