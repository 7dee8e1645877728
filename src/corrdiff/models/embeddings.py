"""Embeddings: of the noise level (for the diffusion step) and of the grid position (for both steps)."""

import math

import torch
from torch import nn


class PositionalEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of a scalar per batch element: (batch,) -> (batch, num_channels)."""

    def __init__(self, num_channels: int, max_positions: int = 10_000):
        super().__init__()
        half = num_channels // 2
        # Geometric frequencies from 1 down to 1/max_positions, endpoint included (as in DDPM++).
        exponents = torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
        self.register_buffer("freqs", (1.0 / max_positions) ** exponents, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (NCSN++): (batch,) -> (batch, num_channels)."""

    def __init__(self, num_channels: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(num_channels // 2, generator=gen) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.to(torch.float32)[:, None] * (2 * math.pi * self.freqs[None, :])
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def sinusoidal_grid(channels: int, grid_shape: tuple[int, int]) -> torch.Tensor:
    """Sinusoids of the normalised grid coordinates: (channels, H, W), channels a multiple of 4.

    For frequency k = 0..channels/4-1 the channels are sin and cos of 2^k·2π·ŷ and of 2^k·2π·x̂, with
    ŷ = i/H and x̂ = j/W in [0, 1); k = 0 alone already gives every pixel a unique code.
    """
    if channels % 4:
        raise ValueError(f"sinusoidal grid embedding needs a multiple of 4 channels, got {channels}")
    height, width = grid_shape
    y_hat = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width) / height
    x_hat = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width) / width
    planes = []
    for k in range(channels // 4):
        scale = 2.0 * math.pi * 2**k
        planes += [torch.sin(scale * y_hat), torch.cos(scale * y_hat), torch.sin(scale * x_hat), torch.cos(scale * x_hat)]
    return torch.stack(planes).to(torch.float32)


class GridEmbedding(nn.Module):
    """Position channels on the global fine grid, cropped to patches when positions are given.

    `kind` is "sinusoidal" (fixed), "learned" (a free parameter per channel and pixel, initialised
    from the sinusoids) or "none". The output is (batch, channels, h, w).
    """

    def __init__(self, kind: str, channels: int, grid_shape: tuple[int, int]):
        super().__init__()
        if kind not in ("sinusoidal", "learned", "none"):
            raise ValueError(f"grid embedding must be 'sinusoidal', 'learned' or 'none', got {kind!r}")
        self.kind = kind
        self.grid_shape = tuple(grid_shape)
        self.channels = 0 if kind == "none" else channels
        if kind == "none":
            self.grid = None
            return
        if kind == "learned" and channels % 4:
            init = 0.1 * torch.randn(channels, *grid_shape, generator=torch.Generator().manual_seed(0))
        else:
            init = sinusoidal_grid(channels, grid_shape)
        if kind == "learned":
            self.grid = nn.Parameter(init)
        else:
            self.register_buffer("grid", init, persistent=False)

    def forward(self, batch: int, size: tuple[int, int], positions: torch.Tensor | None = None) -> torch.Tensor | None:
        """Embedding for `batch` images of `size` (h, w), at patch offsets `positions` (batch, 2) of (y0, x0)."""
        if self.grid is None:
            return None
        height, width = size
        if positions is None:
            if tuple(size) != self.grid_shape:
                raise ValueError(
                    f"image of size {tuple(size)} differs from the grid {self.grid_shape} the position embedding "
                    "was built for; pass patch positions (batch, 2) of (y0, x0) offsets for patches"
                )
            return self.grid.unsqueeze(0).expand(batch, -1, -1, -1)
        positions = positions.to(device=self.grid.device, dtype=torch.long)
        rows = positions[:, 0:1] + torch.arange(height, device=self.grid.device)  # (batch, h)
        cols = positions[:, 1:2] + torch.arange(width, device=self.grid.device)  # (batch, w)
        inside = (rows.max() < self.grid_shape[0]) & (cols.max() < self.grid_shape[1]) & (positions.min() >= 0)
        if positions.device.type == "cpu" and not torch.compiler.is_compiling():
            if not inside:  # no device to wait for: a readable error
                raise ValueError(f"patch positions fall outside the {self.grid_shape} grid")
        else:  # checked on the device without waiting for it, and traceable by torch.compile (no graph break)
            torch._assert_async(inside, f"patch positions fall outside the {self.grid_shape} grid")
        crops = self.grid[:, rows[:, :, None], cols[:, None, :]]  # (channels, batch, h, w)
        return crops.permute(1, 0, 2, 3)
