"""An in-memory dataset with the DownscalingDataset interface, for training tests that need no files."""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from corrdiff.data import ChannelStats, Normalization


@dataclass
class Sample:
    input: torch.Tensor
    target: torch.Tensor | None
    time: np.datetime64


def identity_stats(input_channels, target_channels) -> Normalization:
    """Normalisation that is the identity (the synthetic data is already normalised)."""
    unit = lambda names: ChannelStats(list(names), np.zeros(len(names)), np.ones(len(names)))
    return Normalization(unit(input_channels), unit(target_channels))


class SyntheticDataset(torch.utils.data.Dataset):
    """Smooth fields upsampled from 4×4 (inputs) and a function of them plus small waves (targets)."""

    input_channels = ["a", "a2", "const"]
    target_channels = ["u", "v"]
    target_attrs = {"u": {"units": "m s-1", "long_name": "u wind"}, "v": {"units": "m s-1", "long_name": "v wind"}}

    def __init__(self, n=24, size=(16, 16), seed=0, offset_days=0):
        gen = torch.Generator().manual_seed(seed)
        height, width = size
        coarse = torch.randn(n, 1, 4, 4, generator=gen)
        smooth = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        self.inputs = torch.cat([smooth, smooth**2 - 1, torch.ones_like(smooth)], dim=1)
        cols = torch.arange(width, dtype=torch.float32) * (torch.pi / 2)
        waves = cols.cos()[None, None, None, :] * torch.randn(n, 2, 1, 1, generator=gen)
        self.targets = torch.cat([0.8 * smooth, torch.tanh(smooth)], dim=1) + 0.5 * smooth.abs() * waves
        self.times = np.datetime64("2020-01-01T00") + np.arange(n) * np.timedelta64(1, "h") \
            + np.timedelta64(offset_days, "D")
        lat, lon = np.meshgrid(np.linspace(20, 25, height), np.linspace(118, 123, width), indexing="ij")
        self.lat, self.lon = lat, lon
        self.stats = identity_stats(self.input_channels, self.target_channels)

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return Sample(self.inputs[i], self.targets[i], self.times[i])
