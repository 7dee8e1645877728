"""Patches for domains too large for one pass: random crops for training, stitched denoising for sampling.

Positions are (batch, 2) integer (y0, x0) offsets of each patch's top-left pixel on the global grid; the
UNet uses them to crop its grid position embedding, so every patch knows where it lies.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def random_patches(
    tensors: Sequence[torch.Tensor], patch_shape: tuple[int, int], generator: torch.Generator | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Crop the same random patch from each (batch, C_i, H, W) tensor, independently per batch element.

    Returns the crops [(batch, C_i, h, w)] and positions (batch, 2) of (y0, x0).
    """
    batch, _, height, width = tensors[0].shape
    ph, pw = patch_shape
    if ph > height or pw > width:
        raise ValueError(f"patch {ph}×{pw} is larger than the domain {height}×{width}")
    y0 = torch.randint(0, height - ph + 1, (batch,), generator=generator)
    x0 = torch.randint(0, width - pw + 1, (batch,), generator=generator)
    positions = torch.stack([y0, x0], dim=1)
    return [crop(t, positions, patch_shape) for t in tensors], positions


def crop(tensor: torch.Tensor, positions: torch.Tensor, patch_shape: tuple[int, int]) -> torch.Tensor:
    """Crop (batch, C, H, W) at per-element offsets (batch, 2): (batch, C, h, w)."""
    ph, pw = patch_shape
    rows = positions[:, 0:1].to(tensor.device) + torch.arange(ph, device=tensor.device)
    cols = positions[:, 1:2].to(tensor.device) + torch.arange(pw, device=tensor.device)
    index = torch.arange(tensor.shape[0], device=tensor.device)[:, None, None]
    # Advanced indexing puts the batch axis first and the channel axis last: move it back.
    return tensor.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def global_context(condition: torch.Tensor, patch_shape: tuple[int, int]) -> torch.Tensor:
    """The whole-domain condition (batch, C, H, W) resized (area average) to the patch size: (batch, C, h, w)."""
    return F.interpolate(condition, size=tuple(patch_shape), mode="area")


def patch_offsets(length: int, patch: int, overlap: int) -> list[int]:
    """Start indices of patches of size `patch` covering [0, length) with at least `overlap` shared pixels."""
    if patch > length:
        raise ValueError(f"patch size {patch} exceeds domain size {length}")
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap must be in [0, {patch}), got {overlap}")
    stride = patch - overlap
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)  # last patch flush with the edge (overlaps a little more)
    return starts


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
    global_context: bool = False

    def __post_init__(self):
        rows = patch_offsets(self.domain[0], self.patch_shape[0], self.overlap[0])
        cols = patch_offsets(self.domain[1], self.patch_shape[1], self.overlap[1])
        self.offsets = torch.tensor([(r, c) for r in rows for c in cols], dtype=torch.long)
        coverage = torch.zeros(1, 1, *self.domain)
        for r, c in self.offsets.tolist():
            coverage[..., r : r + self.patch_shape[0], c : c + self.patch_shape[1]] += 1
        self.coverage = coverage

    def __call__(self, denoiser, x: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Denoise x (batch, C, H, W) at sigma (batch,) given condition (batch, C_cond, H, W)."""
        batch = x.shape[0]
        n_patches = len(self.offsets)
        positions = self.offsets.repeat(batch, 1)  # patch-major within each batch element
        x_patches = crop(x.repeat_interleave(n_patches, 0), positions, self.patch_shape)
        c_patches = crop(condition.repeat_interleave(n_patches, 0), positions, self.patch_shape)
        if self.global_context:
            # Every patch of a batch element gets that element's whole-domain context.
            context = global_context(condition, self.patch_shape).repeat_interleave(n_patches, 0)
            c_patches = torch.cat([c_patches, context], dim=1)
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
