"""Per-channel normalisation statistics and the JSON file that holds them beside the data.

Normalised value = (transform(x) − mean) / std, per channel, where the optional transform is one of
`corrdiff.data.transforms`. `Normalization` pairs the input and target statistics and owns their file
format (`corrdiff-stats-1`); `corrdiff.data.stats` computes them.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from corrdiff.data.transforms import forward_transform, inverse_transform, per_channel
from corrdiff.errors import DataError
from corrdiff.file_integrity import atomic_write_text

FORMAT = "corrdiff-stats-1"  # the `format` of the statistics file


@dataclass
class ChannelStats:
    """Mean and std of each channel after its transform."""

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    transforms: list[str | None] = field(default_factory=list)

    def __post_init__(self):
        self.mean = np.asarray(self.mean, np.float64)
        self.std = np.asarray(self.std, np.float64)
        self.transforms = list(self.transforms) or [None] * len(self.names)
        counts = {"mean": self.mean.shape, "std": self.std.shape, "transforms": (len(self.transforms),)}
        wrong = {key: shape for key, shape in counts.items() if shape != (len(self.names),)}
        if wrong:
            raise ValueError(f"{len(self.names)} channels {list(self.names)}, but " + ", ".join(
                f"{key} holds {shape[0] if len(shape) == 1 else shape} values" for key, shape in wrong.items()))
        if not (self.std > 0).all():  # NaN too
            raise ValueError(f"std must be positive, got {self.std.tolist()}")

    def _shape(self, values):
        """(mean, std) broadcastable to values (..., C, H, W)."""
        lib = torch if isinstance(values, torch.Tensor) else np
        if lib is torch:
            as_ = lambda a: torch.as_tensor(a, dtype=values.dtype, device=values.device)[:, None, None]
        else:
            as_ = lambda a: np.asarray(a, dtype=values.dtype)[:, None, None]
        return as_(self.mean), as_(self.std)

    def normalize(self, values):
        """`values` (..., C, H, W) in physical units, transformed and normalised."""
        if values.shape[-3] != len(self.names):
            raise DataError(f"expected {len(self.names)} channels {self.names}, got {values.shape[-3]}")
        if any(self.transforms):
            values = per_channel(values, self.transforms, forward_transform)
        mean, std = self._shape(values)
        return (values - mean) / std

    def denormalize(self, values):
        """Normalised `values` (..., C, H, W) back in physical units."""
        mean, std = self._shape(values)
        values = values * std + mean
        return per_channel(values, self.transforms, inverse_transform) if any(self.transforms) else values

    def to_dict(self) -> dict:
        return {"names": self.names, "mean": self.mean.tolist(), "std": self.std.tolist(), "transforms": self.transforms}

    @classmethod
    def from_dict(cls, raw: dict) -> "ChannelStats":
        return cls(list(raw["names"]), raw["mean"], raw["std"], raw.get("transforms") or [])


@dataclass
class Normalization:
    """Input and target statistics; inputs and targets are (..., C, H, W) numpy arrays or tensors."""

    input: ChannelStats
    target: ChannelStats
    info: dict = field(default_factory=dict)

    def normalize_input(self, values):
        return self.input.normalize(values)

    def normalize_target(self, values):
        return self.target.normalize(values)

    def denormalize_target(self, values):
        return self.target.denormalize(values)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "input": self.input.to_dict(), "target": self.target.to_dict(),
                "info": self.info}

    @classmethod
    def from_dict(cls, raw: dict) -> "Normalization":
        return cls(ChannelStats.from_dict(raw["input"]), ChannelStats.from_dict(raw["target"]), raw.get("info", {}))

    def save(self, path: Path) -> Path:
        """The path written: the statistics as JSON, under a temporary name first so a crash leaves no half file."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Normalization":
        """The statistics saved at `path`; a DataError naming the file when it is not a statistics file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            hint = ("compute them again with `corrdiff data stats --overwrite`" if cls.is_file_of_this_format(path)
                    else "move it away (or set the spec's `stats:` to another file) and run `corrdiff data stats`")
            raise DataError(f"{path}: not a corrdiff statistics file ({err}); {hint}") from None

    @staticmethod
    def is_file_of_this_format(path: Path) -> bool:
        """Whether `path` is a JSON statistics file by its `format`, readable or damaged (which may be replaced)."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(raw, dict) and raw.get("format") == FORMAT

    def check(self, input_channels, target_channels, where: str) -> None:
        """An error when the statistics were computed for other channels than the data gives."""
        for kind, mine, theirs in (("input", self.input.names, input_channels),
                                   ("target", self.target.names, target_channels)):
            if theirs and list(mine) != list(theirs):
                raise DataError(f"{where}: the statistics are for {kind} channels {list(mine)}, the data gives "
                                f"{list(theirs)}; recompute them with `corrdiff data stats`")
