"""Building blocks of the SongUNet: convolutions with resampling, the residual block, self-attention."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, eps: float = 1e-6) -> "GroupNorm":
    """GroupNorm with up to 32 groups of at least 4 channels each (as in DDPM++).

    The group count is the largest such number that divides `channels` (32 for the paper's widths).
    """
    return GroupNorm(channels, eps)


def group_count(channels: int) -> int:
    """The largest number of groups, at most 32 and of at least 4 channels each, that divides `channels`."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


def normalise_groups(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                     correction: int = 0) -> torch.Tensor:
    """GroupNorm(x) with float32 statistics, float32 out: (B, C, H, W) -> (B, C, H, W).

    `correction` 0 divides by the biased group variance (torch's GroupNorm), 1 by the unbiased one (PhysicsNeMo's
    GroupNorm in eval mode). Splitting the channel axis into (groups, channels per group) is a view in NCHW and
    channels-last alike, so neither layout is transposed.
    """
    channels = x.shape[1]
    grouped = x.unflatten(1, (num_groups, channels // num_groups)).float()  # (B, G, C/G, H, W)
    var, mean = torch.var_mean(grouped, dim=tuple(range(2, grouped.dim())), correction=correction, keepdim=True)
    normed = ((grouped - mean) * torch.rsqrt(var + eps)).flatten(1, 2)  # (B, C, H, W)
    per_channel = (1, channels) + (1,) * (x.dim() - 2)
    return normed * weight.view(per_channel) + bias.view(per_channel)


def group_norm_silu(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
                    eps: float, correction: int = 0) -> torch.Tensor:
    """SiLU(GroupNorm(x)) with float32 statistics, in x's dtype and memory format: (B, C, H, W) -> (B, C, H, W).

    Written as one var_mean and elementwise ops so that torch.compile (inductor) makes it a statistics
    reduction and one kernel that normalises, scales, shifts, applies SiLU and casts: under bf16 autocast it
    reads and writes bf16 and never stores a float32 copy of the activations. `correction` as `normalise_groups`'.
    """
    return F.silu(normalise_groups(x, num_groups, weight, bias, eps, correction)).to(x.dtype)


class GroupNorm(nn.GroupNorm):
    """torch's GroupNorm with `group_norm`'s groups, and PhysicsNeMo's eval-mode variance on request.

    `unbiased` (set by `set_unbiased_norm`, for `sampler.arithmetic: physicsnemo`): in eval mode, divide by the
    unbiased group variance, as PhysicsNeMo 2.x's GroupNorm does in eval mode (in training mode it, torch and
    corrdiff divide by the biased one). The two differ by a factor n/(n − 1), n the values in a group.
    """

    unbiased: bool = False

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(num_groups=group_count(channels), num_channels=channels, eps=eps)

    @property
    def variance_correction(self) -> int:
        """1 where this layer divides by the unbiased variance now (`unbiased`, eval mode), else 0."""
        return int(self.unbiased and not self.training)

    def group_norm_args(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(weight, bias, eps) with which torch's biased-variance group_norm of x computes this layer.

        With the unbiased variance: (x − m)/sqrt(v·n/(n − 1) + ε) = s·(x − m)/sqrt(v + s²ε), s² = (n − 1)/n, so
        torch's kernel with the weight times s and ε times s² (one kernel, not the several ops of the formula)."""
        if not self.variance_correction:
            return self.weight, self.bias, self.eps
        shrink = 1 - self.num_groups / x[0].numel()  # (n − 1)/n, n = (C/G)·H·W values in a group
        return self.weight * math.sqrt(shrink), self.bias, self.eps * shrink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, *self.group_norm_args(x))


class GroupNormSiLU(GroupNorm):
    """SiLU(GroupNorm(x)), the pre-activation of the UNet's blocks: (B, C, H, W) -> (B, C, H, W).

    The groups are `group_norm`'s (up to 32 of at least 4 channels).

    Two computations of the same function, chosen by `fused` (set by `set_fused_norm`):
    - plain (default): torch's GroupNorm, then an in-place SiLU, the ops EDM and PhysicsNeMo use; under CUDA
      bf16 autocast GroupNorm runs in float32 (autocast's rule): its input is cast up, its output is float32.
    - fused: `group_norm_silu`, equal to float32 round-off; under bf16 autocast the output is bf16 (the
      statistics stay float32). It pays only when compiled: run eagerly it is several ops, slower than plain.
    Both divide by the unbiased variance in eval mode with `unbiased` (`GroupNorm`). Parameters and state dict
    are nn.GroupNorm's (`weight`, `bias`) on both paths.
    """

    fused: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps, self.variance_correction)
        return F.silu(F.group_norm(x, self.num_groups, *self.group_norm_args(x)), inplace=True)


def set_fused_norm(module: nn.Module, fused: bool = True) -> nn.Module:
    """Switch every GroupNormSiLU inside `module` to the fused (or plain) computation, in place; returns it."""
    for layer in module.modules():
        if isinstance(layer, GroupNormSiLU):
            layer.fused = fused
    return module


def set_unbiased_norm(module: nn.Module, unbiased: bool = True) -> bool:
    """Make every GroupNorm inside `module` divide by the unbiased (or biased) variance in eval mode, in place.

    Returns whether any layer changed (compiled code or CUDA graphs of `module` are then stale)."""
    changed = False
    for layer in module.modules():
        if isinstance(layer, GroupNorm) and layer.unbiased != unbiased:
            layer.unbiased = unbiased
            changed = True
    return changed


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
        self.norm0 = GroupNormSiLU(in_channels, eps)
        self.conv0 = conv(in_channels, out_channels, 3)
        # The noise level enters as a per-channel shift; a regression UNet has no such input.
        self.affine = init_(nn.Linear(emb_channels, out_channels)) if emb_channels else None
        self.norm1 = GroupNormSiLU(out_channels, eps)
        self.conv1 = conv(out_channels, out_channels, 3, scale=1e-5)
        needs_skip = out_channels != in_channels or up or down
        self.skip = conv(in_channels, out_channels, 1) if needs_skip else None
        self.attn = SelfAttention(out_channels, num_heads, eps) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        # In-place updates of convolution and normalisation outputs are safe for autograd (neither op's
        # backward needs its output) and save one full-size tensor allocation each: on CPU, where every large
        # allocation is a fresh mmap whose pages fault on first touch, that is several per cent of the time.
        orig = x
        x = self.conv0(resample(self.norm0(x), self.up, self.down))  # norm0, norm1: GroupNorm then SiLU
        if self.affine is not None:
            x = x.add_(self.affine(emb).to(x.dtype)[:, :, None, None])
        x = self.norm1(x)
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
