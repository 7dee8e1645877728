"""Per-channel normalisation statistics: computed once, streamed over time, saved as JSON beside the data.

Normalised value = (transform(x) − mean) / std, per channel, where the optional transform (declared in
the spec) tames skewed non-negative channels: `log1p` (log(1 + x)) or `power:P` (x^P, e.g. 0.5).
Negative values are clipped to 0 before either transform. Statistics are over every pixel of every
time of the training split (NaNs ignored), merged chunk by chunk with Chan's parallel formula, so
memory is bounded by one chunk of times.
"""

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from corrdiff.errors import DataError

log = logging.getLogger(__name__)


def parse_transform(text: str | None, name: str = "?"):
    """("log1p", None) | ("power", P) | (None, None); errors name the variable."""
    if text in (None, "", "none"):
        return None, None
    if text == "log1p":
        return "log1p", None
    kind, _, value = text.partition(":")
    if kind == "power":
        try:
            power = float(value)
        except ValueError:
            power = -1.0
        if power > 0:
            return "power", power
    raise DataError(f"transform of {name!r}: {text!r} is not one of 'log1p', 'power:P' (P > 0)")


def forward_transform(values, text: str | None):
    kind, power = parse_transform(text)
    if kind is None:
        return values
    lib = torch if isinstance(values, torch.Tensor) else np
    values = lib.clip(values, 0, None)
    return lib.log1p(values) if kind == "log1p" else values**power


def inverse_transform(values, text: str | None):
    kind, power = parse_transform(text)
    if kind is None:
        return values
    lib = torch if isinstance(values, torch.Tensor) else np
    return lib.expm1(lib.clip(values, 0, None)) if kind == "log1p" else lib.clip(values, 0, None) ** (1.0 / power)


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

    def _shape(self, values):
        """(mean, std) broadcastable to values (..., C, H, W)."""
        lib = torch if isinstance(values, torch.Tensor) else np
        if lib is torch:
            as_ = lambda a: torch.as_tensor(a, dtype=values.dtype, device=values.device)[:, None, None]
        else:
            as_ = lambda a: np.asarray(a, dtype=values.dtype)[:, None, None]
        return as_(self.mean), as_(self.std)

    def normalize(self, values):
        if values.shape[-3] != len(self.names):
            raise DataError(f"expected {len(self.names)} channels {self.names}, got {values.shape[-3]}")
        if any(self.transforms):
            values = _per_channel(values, self.transforms, forward_transform)
        mean, std = self._shape(values)
        return (values - mean) / std

    def denormalize(self, values):
        mean, std = self._shape(values)
        values = values * std + mean
        return _per_channel(values, self.transforms, inverse_transform) if any(self.transforms) else values

    def to_dict(self) -> dict:
        return {"names": self.names, "mean": self.mean.tolist(), "std": self.std.tolist(), "transforms": self.transforms}

    @classmethod
    def from_dict(cls, raw: dict) -> "ChannelStats":
        return cls(list(raw["names"]), raw["mean"], raw["std"], raw.get("transforms") or [])


def _per_channel(values, transforms, function):
    parts = [function(values[..., c : c + 1, :, :], t) for c, t in enumerate(transforms)]
    return torch.cat(parts, dim=-3) if isinstance(values, torch.Tensor) else np.concatenate(parts, axis=-3)


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
        return {"format": "corrdiff-stats-1", "input": self.input.to_dict(), "target": self.target.to_dict(),
                "info": self.info}

    @classmethod
    def from_dict(cls, raw: dict) -> "Normalization":
        return cls(ChannelStats.from_dict(raw["input"]), ChannelStats.from_dict(raw["target"]), raw.get("info", {}))

    def save(self, path: Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> "Normalization":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: not a corrdiff statistics file ({err}); rerun `corrdiff data stats`") from None

    def check(self, input_channels, target_channels, where: str) -> None:
        """An error when the statistics were computed for other channels than the data gives."""
        for kind, mine, theirs in (("input", self.input.names, input_channels),
                                   ("target", self.target.names, target_channels)):
            if theirs and list(mine) != list(theirs):
                raise DataError(f"{where}: the statistics are for {kind} channels {list(mine)}, the data gives "
                                f"{list(theirs)}; recompute them with `corrdiff data stats`")


class _Moments:
    """Running count, mean and M2 per channel (Chan et al. parallel merge), NaNs ignored."""

    def __init__(self, channels: int):
        self.count = np.zeros(channels)
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, values: np.ndarray) -> None:
        """values (time, C, H, W); one channel at a time, so the float64 copies stay small."""
        for c in range(values.shape[1]):
            flat = values[:, c].astype(np.float64).ravel()
            flat = flat[np.isfinite(flat)]
            n = flat.size
            if n == 0:
                continue
            mean = flat.mean()
            m2 = np.square(flat - mean).sum()
            total = self.count[c] + n
            delta = mean - self.mean[c]
            self.mean[c] += delta * n / total
            self.m2[c] += m2 + delta**2 * self.count[c] * n / total
            self.count[c] = total

    def std(self) -> np.ndarray:
        std = np.sqrt(self.m2 / np.maximum(self.count - 1, 1))
        return np.where(std > 0, std, 1.0)  # a constant channel (e.g. an all-land mask) is left unscaled


def compute_stats(spec, split: str = "train", chunk_times: int = 16, progress: bool = True,
                  save: bool = True) -> Normalization:
    """Statistics of the spec's split, streamed `chunk_times` times at a time; saved to `spec.stats`."""
    from corrdiff.data.fields import PairedFields

    fields = PairedFields(spec)
    spec = fields.spec
    times = fields.times(split)
    inputs, targets = _Moments(len(fields.input_channels)), _Moments(len(fields.target_channels))
    in_transforms = [spec.transforms.get(n) for n in fields.input_channels]
    out_transforms = [spec.transforms.get(n) for n in fields.target_channels]
    bar = tqdm(total=len(times), desc="statistics", unit="time", disable=not progress)
    for start in range(0, len(times), chunk_times):
        chunk = times[start : start + chunk_times]
        inputs.add(_per_channel(fields.read_inputs(chunk), in_transforms, forward_transform))
        targets.add(_per_channel(fields.read_targets(chunk), out_transforms, forward_transform))
        bar.update(len(chunk))
    bar.close()
    for name, count in zip(fields.input_channels + fields.target_channels, np.r_[inputs.count, targets.count]):
        if count == 0:
            raise DataError(f"{spec.where}: channel {name!r} has no finite value in split {split!r}")
    info = {"split": split, "times": int(len(times)), "first": str(times[0])[:19], "last": str(times[-1])[:19],
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "spec": str(spec.source_file) if spec.source_file else None,
            "nan_fraction": {n: float(1 - c / (len(times) * math.prod(fields.lat.shape)))
                             for n, c in zip(fields.input_channels + fields.target_channels,
                                             np.r_[inputs.count, targets.count])}}
    stats = Normalization(
        ChannelStats(fields.input_channels, inputs.mean, inputs.std(), in_transforms),
        ChannelStats(fields.target_channels, targets.mean, targets.std(), out_transforms),
        info,
    )
    if save:
        stats.save(spec.stats_path)
    return stats


def load_or_compute_stats(spec, progress: bool = True) -> Normalization:
    """The spec's saved statistics; computed from the train split (and saved) if there are none yet."""
    path = spec.stats_path
    if path.exists():
        return Normalization.load(path)
    if "train" not in spec.splits:
        raise DataError(f"{spec.where}: no statistics at {path} and no `train` split to compute them from; "
                        "run `corrdiff data stats SPEC --split ...`")
    if progress:
        log.info(f"no normalisation statistics at {path}: computing them from the train split (once)")
    return compute_stats(spec, "train", progress=progress)
