"""Multi-diffusion: a patch-trained denoiser run over a whole domain by stitching overlapping patches.

Each call denoises every patch of a fixed covering (`patching.patch_offsets`) and averages them where they
overlap, so every sampler step sees one seamless field; patch conditions come from `DiffusionCondition`.
"""

from dataclasses import dataclass

import torch

from corrdiff.diffusion.conditioning import DiffusionCondition
from corrdiff.diffusion.patching import crop, patch_offsets


@dataclass
class PatchedDenoiser:
    """Runs a patch-trained denoiser over a whole domain: every call denoises overlapping patches and
    averages them where they overlap ("multi-diffusion"), so each sampler step sees one seamless field.

    `max_batch` bounds how many patches go through the network at once.
    """

    domain: tuple[int, int]
    patch_shape: tuple[int, int]
    overlap: tuple[int, int] = (8, 8)
    max_batch: int = 64
    condition: DiffusionCondition | None = None
    """How patch conditions are built from the whole-domain field; None: plain crops of it."""

    def __post_init__(self):
        rows = patch_offsets(self.domain[0], self.patch_shape[0], self.overlap[0])
        cols = patch_offsets(self.domain[1], self.patch_shape[1], self.overlap[1])
        self.offsets = torch.tensor([(r, c) for r in rows for c in cols], dtype=torch.long)
        coverage = torch.zeros(1, 1, *self.domain)
        for r, c in self.offsets.tolist():
            coverage[..., r : r + self.patch_shape[0], c : c + self.patch_shape[1]] += 1
        self.coverage = coverage

    def __call__(self, denoiser, x: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Denoise x (batch, C, H, W) at sigma (batch,) given the whole-domain condition field (batch, C_field, H, W)."""
        batch = x.shape[0]
        n_patches = len(self.offsets)
        positions = self.offsets.repeat(batch, 1)  # patch-major within each batch element
        x_patches = crop(x.repeat_interleave(n_patches, 0), positions, self.patch_shape)
        if self.condition is None:
            c_patches = crop(condition.repeat_interleave(n_patches, 0), positions, self.patch_shape)
        else:
            c_patches = self.condition.patches(condition, positions, self.patch_shape, per_element=n_patches)
        sigma_patches = sigma.reshape(-1).expand(batch).repeat_interleave(n_patches)
        denoised = torch.cat(
            [
                denoiser(
                    x_patches[i : i + self.max_batch],
                    sigma_patches[i : i + self.max_batch],
                    c_patches[i : i + self.max_batch],
                    positions[i : i + self.max_batch].to(x.device),
                )
                for i in range(0, len(x_patches), self.max_batch)
            ]
        )
        return self.stitch(denoised.reshape(batch, n_patches, *denoised.shape[1:]))

    def stitch(self, patches: torch.Tensor) -> torch.Tensor:
        """Average (batch, n_patches, C, h, w) patches into (batch, C, H, W) where they overlap."""
        batch, _, channels, ph, pw = patches.shape
        total = patches.new_zeros(batch, channels, *self.domain)
        for p, (r, c) in enumerate(self.offsets.tolist()):
            total[..., r : r + ph, c : c + pw] += patches[:, p]
        return total / self.coverage.to(total)
