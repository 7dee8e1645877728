"""Multi-diffusion: a patch-trained denoiser run over a whole domain by stitching overlapping patches.

Each call denoises every patch of a fixed covering (`patching.patch_offsets`) and averages them where they
overlap, so every sampler step sees one seamless field; patch conditions come from `DiffusionCondition`.
"""

from dataclasses import dataclass

import torch

from corrdiff.diffusion.conditioning import DiffusionCondition
from corrdiff.diffusion.patching import crops_at, patch_offsets


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
        self.offset_list = [(r, c) for r in rows for c in cols]  # host ints: stitching needs no device sync
        self.offsets = torch.tensor(self.offset_list, dtype=torch.long)
        coverage = torch.zeros(1, 1, *self.domain)
        for r, c in self.offset_list:
            coverage[..., r : r + self.patch_shape[0], c : c + self.patch_shape[1]] += 1
        self.coverage = coverage
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._condition_key, self._condition_version, self._condition_tiles = None, None, None

    def _device_copies(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets and coverage on `device`, copied once (no host-to-device copy per network call)."""
        if device not in self._on_device:
            self._on_device[device] = (self.offsets.to(device), self.coverage.to(device))
        return self._on_device[device]

    def _tiles_of(self, condition: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The condition's patches, cut once per condition: the sampler passes the same tensor at every step."""
        if torch.compiler.is_compiling():  # traced: the crops become part of the graph, no Python-side cache
            return self._cut(condition, offsets)
        # Identity (with a reference held, so the memory cannot be reused by another tensor) and the in-place
        # version counter tell that the contents are unchanged.
        if condition is not self._condition_key or condition._version != self._condition_version:
            self._condition_tiles = self._cut(condition, offsets)
            self._condition_key, self._condition_version = condition, condition._version
        return self._condition_tiles

    def _cut(self, condition: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return (crops_at(condition, offsets, self.patch_shape) if self.condition is None
                else self.condition.tiles(condition, offsets, self.patch_shape))

    def __call__(self, denoiser, x: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Denoise x (batch, C, H, W) at sigma (batch,) given the whole-domain condition field (batch, C_field, H, W)."""
        batch, n_patches = x.shape[0], len(self.offset_list)
        offsets, coverage = self._device_copies(x.device)
        positions = offsets.repeat(batch, 1)  # patch-major within each batch element
        x_patches = crops_at(x, offsets, self.patch_shape)
        c_patches = self._tiles_of(condition, offsets)
        sigma_patches = sigma.reshape(-1).expand(batch).repeat_interleave(n_patches)
        denoised = torch.cat([
            denoiser(x_patches[i : i + self.max_batch], sigma_patches[i : i + self.max_batch],
                     c_patches[i : i + self.max_batch], positions[i : i + self.max_batch])
            for i in range(0, len(x_patches), self.max_batch)
        ])
        return self.stitch(denoised.reshape(batch, n_patches, *denoised.shape[1:]), coverage)

    def stitch(self, patches: torch.Tensor, coverage: torch.Tensor | None = None) -> torch.Tensor:
        """Average (batch, n_patches, C, h, w) patches into (batch, C, H, W) where they overlap.

        A loop of slice additions in a fixed order, so the sum is deterministic (an index_add would use atomics on CUDA).
        """
        batch, _, channels, ph, pw = patches.shape
        total = patches.new_zeros(batch, channels, *self.domain)
        for p, (r, c) in enumerate(self.offset_list):
            total[..., r : r + ph, c : c + pw] += patches[:, p]
        return total / (coverage if coverage is not None else self.coverage.to(total))
