"""Named UNet configurations: `paper` (the CorrDiff Taiwan setup) and `tiny` (tests, demo)."""

from dataclasses import asdict, dataclass, replace
from typing import Literal

from corrdiff.models.unet import SongUNet


@dataclass(frozen=True)
class UNetConfig:
    """Architecture and problem shape of the two CorrDiff networks."""

    img_shape: tuple[int, int] = (448, 448)
    """Fine (global) grid (H, W); patches are crops of it."""
    in_channels: int = 12
    """Condition channels: coarse inputs interpolated to the fine grid, plus static fields."""
    out_channels: int = 4
    """Target channels."""
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2, 2)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (28,)
    dropout: float = 0.13
    noise_embedding: Literal["positional", "fourier"] = "positional"
    grid_embedding: Literal["sinusoidal", "learned", "none"] = "sinusoidal"
    grid_channels: int = 4
    num_heads: int = 1
    condition_on_mean: bool = False
    """Diffusion only: also condition on the regression mean (see corrdiff.diffusion.DiffusionCondition)."""
    global_context: bool = False
    """Diffusion only, patched training: also condition on the whole condition field resized to the patch."""

    def replace(self, **changes) -> "UNetConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        data = dict(data)
        for key in ("img_shape", "channel_mult", "attn_resolutions"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def _unet(self, in_channels: int, noise_embedding: str | None) -> SongUNet:
        return SongUNet(
            in_channels=in_channels,
            out_channels=self.out_channels,
            img_shape=self.img_shape,
            model_channels=self.model_channels,
            channel_mult=self.channel_mult,
            channel_mult_emb=self.channel_mult_emb,
            num_blocks=self.num_blocks,
            attn_resolutions=self.attn_resolutions,
            dropout=self.dropout,
            noise_embedding=noise_embedding,
            grid_embedding=self.grid_embedding,
            grid_channels=self.grid_channels,
            num_heads=self.num_heads,
        )

    def build_regression(self) -> SongUNet:
        """The mean model μ(y): condition channels in, target channels out, no noise embedding."""
        return self._unet(self.in_channels, None)

    def build_diffusion(self, condition_channels: int) -> SongUNet:
        """The residual denoiser's network: noisy residual + `condition_channels` in, residual out, noise-conditioned.

        `corrdiff.diffusion.diffusion_network(config)` calls this with the channels `DiffusionCondition` gives.
        """
        return self._unet(self.out_channels + condition_channels, self.noise_embedding)


presets: dict[str, UNetConfig] = {
    # CorrDiff, Taiwan: 448×448 at 2 km, 12 ERA5 channels, 4 outputs, attention at 28×28.
    "paper": UNetConfig(),
    # Small enough to train in seconds on a CPU.
    "tiny": UNetConfig(
        img_shape=(32, 32),
        in_channels=3,
        out_channels=2,
        model_channels=16,
        channel_mult=(1, 2),
        channel_mult_emb=2,
        num_blocks=1,
        attn_resolutions=(16,),
        dropout=0.0,
    ),
}


def count_parameters(module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
