"""SongUNet: the DDPM++-style UNet of Song et al. and Karras et al., with grid position embeddings (CorrDiff)."""

import torch
import torch.nn.functional as F
from torch import nn

from corrdiff.models.embeddings import FourierEmbedding, GridEmbedding, PositionalEmbedding
from corrdiff.models.layers import conv, GroupNormSiLU, init_, UNetBlock


class SongUNet(nn.Module):
    """UNet mapping (batch, in_channels, H, W) -> (batch, out_channels, H, W), optionally noise-conditioned.

    `in_channels` counts the data channels only; `grid_channels` position channels are concatenated inside.
    `noise_embedding` is "positional", "fourier" or None (the regression step has no noise level).
    H and W must be divisible by 2**(len(channel_mult) - 1). Attention is used at every level whose
    shorter side, on the `img_shape` grid, is listed in `attn_resolutions`. The architecture has no defaults
    here: `corrdiff.models.UNetConfig` and its presets hold them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_shape: tuple[int, int],
        *,
        model_channels: int,
        channel_mult: tuple[int, ...],
        channel_mult_emb: int,
        num_blocks: int,
        attn_resolutions: tuple[int, ...],
        dropout: float,
        noise_embedding: str | None,
        grid_embedding: str,
        grid_channels: int,
        num_heads: int,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.img_shape = tuple(img_shape)
        self.divisor = 2 ** (len(channel_mult) - 1)
        check_size(self.img_shape, self.divisor)
        self.grid = GridEmbedding(grid_embedding, grid_channels, self.img_shape)

        emb_channels = model_channels * channel_mult_emb if noise_embedding else 0
        self.noise_embedding = noise_embedding
        if noise_embedding == "positional":
            self.map_noise = PositionalEmbedding(model_channels)
        elif noise_embedding == "fourier":
            self.map_noise = FourierEmbedding(model_channels)
        elif noise_embedding is not None:
            raise ValueError(f"noise_embedding must be 'positional', 'fourier' or None, got {noise_embedding!r}")
        if noise_embedding:
            self.map_layer0 = init_(nn.Linear(model_channels, emb_channels))
            self.map_layer1 = init_(nn.Linear(emb_channels, emb_channels))

        block = dict(emb_channels=emb_channels, dropout=dropout, num_heads=num_heads)
        min_side = min(self.img_shape)
        attn_levels = {level for level in range(len(channel_mult)) if (min_side >> level) in attn_resolutions}

        self.input_conv = conv(in_channels + self.grid.channels, model_channels, 3)
        self.encoder = nn.ModuleList()
        skip_channels = [model_channels]
        channels = model_channels
        for level, mult in enumerate(channel_mult):
            if level > 0:
                self.encoder.append(UNetBlock(channels, channels, down=True, **block))
                skip_channels.append(channels)
            for _ in range(num_blocks):
                out = model_channels * mult
                self.encoder.append(UNetBlock(channels, out, attention=level in attn_levels, **block))
                channels = out
                skip_channels.append(channels)

        self.decoder = nn.ModuleList()
        bottom = len(channel_mult) - 1
        for level, mult in reversed(list(enumerate(channel_mult))):
            if level == bottom:
                self.decoder.append(UNetBlock(channels, channels, attention=True, **block))
                self.decoder.append(UNetBlock(channels, channels, **block))
            else:
                self.decoder.append(UNetBlock(channels, channels, up=True, **block))
            for idx in range(num_blocks + 1):
                out = model_channels * mult
                attention = idx == num_blocks and level in attn_levels
                block_in = channels + skip_channels.pop()
                self.decoder.append(UNetBlock(block_in, out, attention=attention, **block))
                self.decoder[-1].takes_skip = True
                channels = out
        self.out_norm = GroupNormSiLU(channels)  # GroupNorm then SiLU
        self.out_conv = conv(channels, out_channels, 3, scale=1e-5)

    def embed_noise(self, noise_labels: torch.Tensor) -> torch.Tensor:
        """Noise-level embedding (batch, emb_channels) from c_noise labels (batch,)."""
        emb = self.map_noise(noise_labels)
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the UNet.

        x: (batch, in_channels, h, w); noise_labels: (batch,) c_noise values, required iff noise-conditioned;
        positions: (batch, 2) integer (y0, x0) offsets of patches on the `img_shape` grid, or None for the
        full grid.
        """
        check_size(tuple(x.shape[-2:]), self.divisor)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"SongUNet expects {self.in_channels} input channels, got {x.shape[1]}")
        grid = self.grid(x.shape[0], tuple(x.shape[-2:]), positions)
        if grid is not None:
            x = torch.cat([x, grid.to(x.dtype)], dim=1)
        emb = None
        if self.noise_embedding:
            if noise_labels is None:
                raise ValueError("this SongUNet is noise-conditioned: pass noise_labels (batch,)")
            emb = self.embed_noise(noise_labels.reshape(-1).expand(x.shape[0]))

        x = self.input_conv(x)
        skips = [x]
        for block in self.encoder:
            x = block(x, emb)
            skips.append(x)
        for block in self.decoder:
            if getattr(block, "takes_skip", False):
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(self.out_norm(x))


def check_size(size: tuple[int, int], divisor: int) -> None:
    """Raise ValueError unless both sides of `size` are positive multiples of `divisor`."""
    height, width = size
    if height <= 0 or width <= 0 or height % divisor or width % divisor:
        raise ValueError(
            f"image size {height}×{width} is not supported: both sides must be multiples of {divisor} "
            f"(2**(levels-1) for this UNet's channel_mult)"
        )
