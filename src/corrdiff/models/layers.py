"""Building blocks of the SongUNet: convolutions with resampling, the residual block, self-attention."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each (as in DDPM++).

    The group count is the largest such number that divides `channels` (32 for the paper's widths).
    """
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=eps)


def init_(module: nn.Module, scale: float = 1.0) -> nn.Module:
    """Xavier-uniform weights scaled by `scale`, zero bias; scale≈0 makes a layer start as (almost) identity-free."""
    nn.init.xavier_uniform_(module.weight, gain=scale)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def conv(in_channels: int, out_channels: int, kernel: int, scale: float = 1.0) -> nn.Conv2d:
    """Same-padded convolution with DDPM++ initialisation."""
    return init_(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), scale)


def resample(x: torch.Tensor, up: bool, down: bool) -> torch.Tensor:
    """2× nearest up- or 2×2 average down-sampling: the [1, 1] resample filter of DDPM++ in closed form."""
    if up:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        return F.avg_pool2d(x, 2)
    return x


class SelfAttention(nn.Module):
    """Multi-head self-attention over pixels, via scaled_dot_product_attention, with a residual connection."""

    def __init__(self, channels: int, num_heads: int = 1, eps: float = 1e-6):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention: {channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels, eps)
        self.qkv = conv(channels, 3 * channels, 1, scale=math.sqrt(0.2))
        self.proj = conv(channels, channels, 1, scale=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.num_heads, channels // self.num_heads, height * width)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # each (batch, heads, pixels, head_dim)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(-1, -2).reshape(batch, channels, height, width)
        return self.proj(attended).add_(x)


class UNetBlock(nn.Module):
    """Pre-activation residual block (GroupNorm, SiLU, conv) with optional noise embedding, resampling, attention.

    x: (batch, in_channels, H, W) -> (batch, out_channels, H', W'); `emb`: (batch, emb_channels) or None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int = 0,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int = 1,
        dropout: float = 0.0,
        skip_scale: float = math.sqrt(0.5),
        eps: float = 1e-6,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down = up, down
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.norm0 = group_norm(in_channels, eps)
        self.conv0 = conv(in_channels, out_channels, 3)
        # The noise level enters as a per-channel shift; a regression UNet has no such input.
        self.affine = init_(nn.Linear(emb_channels, out_channels)) if emb_channels else None
        self.norm1 = group_norm(out_channels, eps)
        self.conv1 = conv(out_channels, out_channels, 3, scale=1e-5)
        needs_skip = out_channels != in_channels or up or down
        self.skip = conv(in_channels, out_channels, 1) if needs_skip else None
        self.attn = SelfAttention(out_channels, num_heads, eps) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        # In-place updates of convolution and normalisation outputs are safe for autograd (neither op's
        # backward needs its output) and save one full-size tensor allocation each: on CPU, where every large
        # allocation is a fresh mmap whose pages fault on first touch, that is several per cent of the time.
        orig = x
        x = self.conv0(resample(F.silu(self.norm0(x), inplace=True), self.up, self.down))
        if self.affine is not None:
            x = x.add_(self.affine(emb).to(x.dtype)[:, :, None, None])
        x = F.silu(self.norm1(x), inplace=True)
        if self.dropout and self.training:  # F.dropout with p=0 still draws a mask and multiplies
            x = F.dropout(x, p=self.dropout, training=True)
        x = self.conv1(x)
        shortcut = resample(orig, self.up, self.down)
        if self.skip is not None:
            shortcut = self.skip(shortcut)
        x = x.add_(shortcut).mul_(self.skip_scale)
        if self.attn is not None:
            x = self.attn(x).mul_(self.skip_scale)
        return x
