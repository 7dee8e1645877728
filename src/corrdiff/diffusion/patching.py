"""Patch geometry for domains too large for one pass: random crops for training, covering offsets for sampling.

Positions are (batch, 2) integer (y0, x0) offsets of each patch's top-left pixel on the global grid; the
UNet uses them to crop its grid position embedding, so every patch knows where it lies.
"""

from collections.abc import Sequence

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
    positions = positions.to(tensor.device)  # one host-to-device copy (none when already there)
    rows = positions[:, 0:1] + torch.arange(ph, device=tensor.device)
    cols = positions[:, 1:2] + torch.arange(pw, device=tensor.device)
    index = torch.arange(tensor.shape[0], device=tensor.device)[:, None, None]
    # Advanced indexing puts the batch axis first and the channel axis last: move it back.
    return tensor.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def crops_at(tensor: torch.Tensor, offsets: torch.Tensor, patch_shape: tuple[int, int]) -> torch.Tensor:
    """Crops of every element of (batch, C, H, W) at the same offsets (n, 2): (batch·n, C, h, w).

    The n patches of element b are rows b·n … b·n + n − 1. Gathered by index, so memory is that of the
    crops alone (repeating the domain n times first would cost n domains).
    """
    ph, pw = patch_shape
    offsets = offsets.to(tensor.device)
    rows = offsets[:, 0:1] + torch.arange(ph, device=tensor.device)
    cols = offsets[:, 1:2] + torch.arange(pw, device=tensor.device)
    patches = tensor[:, :, rows[:, :, None], cols[:, None, :]]  # (batch, C, n, h, w)
    return patches.transpose(1, 2).reshape(-1, tensor.shape[1], ph, pw)


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
