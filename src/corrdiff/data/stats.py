"""Computing the per-channel normalisation statistics of a spec: once, streamed over time, saved beside the data.

Statistics are the mean and std of each channel after its transform (`corrdiff.data.transforms`), over
every pixel of every time of the training split (NaNs ignored), merged chunk by chunk with Chan's parallel
formula, so memory is bounded by one chunk of times. `corrdiff.data.normalization` holds and saves them.
"""

import datetime as dt
import logging
import math

import numpy as np
from tqdm.auto import tqdm

from corrdiff.data.fields import PairedFields
from corrdiff.data.normalization import ChannelStats, Normalization
from corrdiff.data.transforms import forward_transform, per_channel
from corrdiff.errors import DataError

log = logging.getLogger(__name__)


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
        """The sample std per channel (1 for a constant channel)."""
        std = np.sqrt(self.m2 / np.maximum(self.count - 1, 1))
        return np.where(std > 0, std, 1.0)  # a constant channel (e.g. an all-land mask) is left unscaled


def compute_stats(spec, split: str = "train", chunk_times: int = 16, progress: bool = True,
                  save: bool = True) -> Normalization:
    """Statistics of the spec's split, streamed `chunk_times` times at a time; saved to `spec.stats`."""
    fields = PairedFields(spec)
    spec = fields.spec
    times = fields.times(split)
    inputs, targets = _Moments(len(fields.input_channels)), _Moments(len(fields.target_channels))
    in_transforms = [spec.transforms.get(n) for n in fields.input_channels]
    out_transforms = [spec.transforms.get(n) for n in fields.target_channels]
    bar = tqdm(total=len(times), desc="statistics", unit="time", disable=not progress)
    for start in range(0, len(times), chunk_times):
        chunk = times[start : start + chunk_times]
        inputs.add(per_channel(fields.read_inputs(chunk), in_transforms, forward_transform))
        targets.add(per_channel(fields.read_targets(chunk), out_transforms, forward_transform))
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
