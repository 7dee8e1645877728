"""Networks: the SongUNet with grid position embeddings, and named presets."""

from corrdiff.models.presets import count_parameters, presets, UNetConfig
from corrdiff.models.unet import SongUNet

__all__ = ["SongUNet", "UNetConfig", "count_parameters", "presets"]
