"""Computing the per-channel normalisation statistics of a spec: once, streamed over time, saved beside the data.

Statistics are the mean and std of each channel after its transform (`corrdiff.data.transforms`), over
every pixel of every time of the training split (NaNs ignored), merged chunk by chunk with Chan's parallel
formula, so memory is bounded by one chunk of times. `corrdiff.data.normalization` holds and saves them.

The same pass counts the NaN/inf values of every input and target channel and applies the spec's
`nan_policy`, so that training never meets a NaN nobody announced:

- error (the default): any NaN/inf is a DataError naming the file, variable and time of the first one and
  the counts of every channel; nothing is saved;
- fill: the counts are reported (training fills those values with the channel mean);
- drop: times with any NaN/inf are left out of the statistics as training leaves them out; their number is
  reported.

The counts are saved in the statistics' `info` (`nonfinite`, `nonfinite_times`, `nan_policy`, `dropped_times`).

The same pass records the range of each input channel in physical units (`info["input_ranges"]`: min, max and
the 0.1 and 99.9 percentiles, `ChannelRange`), which checkpoints keep so that generation can warn about inputs
far outside what the model was trained on (inputs in other units, say).
"""

import datetime as dt
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from corrdiff.data.fields import first_nan, PairedFields
from corrdiff.data.normalization import ChannelStats, Normalization
from corrdiff.data.transforms import forward_transform, per_channel
from corrdiff.errors import DataError
from corrdiff.output_paths import check_output, spec_files
from corrdiff.progress import bar as progress_bar

log = logging.getLogger(__name__)
STATS_KIND = "a corrdiff statistics file"
PERCENTILE_SAMPLE = 200_000  # values per channel kept (a seeded random subset) to estimate the percentiles


@dataclass(frozen=True)
class ChannelRange:
    """The values of one input channel over the training split, in its physical units (NaNs ignored)."""

    min: float
    max: float
    low: float
    """0.1 percentile"""
    high: float
    """99.9 percentile"""

    def to_dict(self) -> dict:
        return {"min": self.min, "max": self.max, "p0.1": self.low, "p99.9": self.high}

    @classmethod
    def from_dict(cls, raw: dict) -> "ChannelRange":
        return cls(float(raw["min"]), float(raw["max"]), float(raw["p0.1"]), float(raw["p99.9"]))


def input_ranges(stats: Normalization) -> tuple[ChannelRange, ...]:
    """The training range of each input channel (in `stats.input.names` order); () for statistics computed
    before ranges were recorded, or when a channel lacks one."""
    ranges = (stats.info or {}).get("input_ranges") or {}
    if not all(name in ranges for name in stats.input.names):
        return ()
    return tuple(ChannelRange.from_dict(ranges[name]) for name in stats.input.names)


class _Ranges:
    """Running min/max per channel and a seeded random subset of the values for the percentiles."""

    def __init__(self, channels: int, total_values: int):
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)
        self.fraction = min(1.0, PERCENTILE_SAMPLE / max(total_values, 1))
        self.kept: list[list[np.ndarray]] = [[] for _ in range(channels)]
        self.rng = np.random.default_rng(0)

    def add(self, values: np.ndarray) -> None:
        """values (time, C, H, W) in physical units."""
        for c in range(values.shape[1]):
            flat = values[:, c].ravel()
            flat = flat[np.isfinite(flat)]
            if not flat.size:
                continue
            self.min[c] = min(self.min[c], float(flat.min()))
            self.max[c] = max(self.max[c], float(flat.max()))
            self.kept[c].append(flat if self.fraction >= 1 else flat[self.rng.random(flat.size) < self.fraction])

    def ranges(self, names: list[str]) -> dict[str, dict]:
        out = {}
        for c, name in enumerate(names):
            kept = np.concatenate(self.kept[c]) if self.kept[c] else np.array([self.min[c], self.max[c]])
            low, high = np.percentile(kept.astype(np.float64), [0.1, 99.9]) if kept.size else (np.nan, np.nan)
            out[name] = ChannelRange(float(self.min[c]), float(self.max[c]), float(low), float(high)).to_dict()
        return out


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


@dataclass
class NonFinite:
    """NaN/inf values per channel (in physical units, before any transform) over the times scanned so far."""

    names: list[str]  # "input 't2m'", "target 'refl'", …
    files: list[str]
    values: np.ndarray = None  # (channel,) count of NaN/inf values
    times: np.ndarray = None  # (channel,) count of times with at least one
    first: list[str | None] = field(default_factory=list)  # where the first one of each channel is

    def __post_init__(self):
        self.values = np.zeros(len(self.names), np.int64)
        self.times = np.zeros(len(self.names), np.int64)
        self.first = [None] * len(self.names)

    def add(self, times: np.ndarray, values: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Count the NaN/inf of values (time, C, H, W) at `times`; returns the mask of times that have none."""
        bad = ~np.isfinite(values)
        per_time = bad.reshape(*bad.shape[:2], -1).sum(axis=-1)  # (time, channel)
        self.values += per_time.sum(axis=0)
        self.times += (per_time > 0).sum(axis=0)
        for c in np.flatnonzero(per_time.sum(axis=0)):
            if self.first[c] is None:
                t = int(np.flatnonzero(per_time[:, c])[0])
                self.first[c] = f"{str(times[t])[:19]} ({self.files[c]}; {first_nan(values[t, c], lat, lon)})"
        return per_time.sum(axis=1) == 0

    @property
    def total(self) -> int:
        return int(self.values.sum())

    def lines(self, times: int) -> list[str]:
        """One phrase per channel with NaN/inf: how many values, in how many of `times` times, where first."""
        return [f"{name}: {int(n)} NaN/inf values in {int(t)} of {times} times, first at {first}"
                for name, n, t, first in zip(self.names, self.values, self.times, self.first) if n]


def is_stats_file(path) -> bool:
    """Whether `path` holds statistics saved by `compute_stats`, by their format (a damaged one included: it
    is replaced with --overwrite)."""
    return Normalization.is_file_of_this_format(path)


def check_stats_output(spec, overwrite: bool) -> None:
    """Refuse a statistics path that is one of the spec's files, or an existing file unless `overwrite` and it
    holds corrdiff statistics."""
    check_output(spec.stats_path, {"a file of the dataset spec": spec_files(spec)}, STATS_KIND, is_stats_file,
                 overwrite, option="the spec's `stats` file")


def compute_stats(spec, split: str = "train", chunk_times: int = 16, progress: bool = True,
                  save: bool = True, overwrite: bool = False) -> Normalization:
    """Statistics of the spec's split, streamed `chunk_times` times at a time; saved to `spec.stats`.

    NaN/inf values are counted and the spec's `nan_policy` applied (see the module docstring). An existing
    statistics file is replaced only with `overwrite`; a file of another kind, or one of the spec's own
    files, never (`corrdiff.output_paths`).
    """
    fields = PairedFields(spec)
    spec = fields.spec
    if save:
        check_stats_output(spec, overwrite)
    times = fields.times(split)
    inputs, targets = _Moments(len(fields.input_channels)), _Moments(len(fields.target_channels))
    ranges = _Ranges(len(fields.input_channels), len(times) * math.prod(fields.lat.shape))
    in_transforms = [spec.transforms.get(n) for n in fields.input_channels]
    out_transforms = [spec.transforms.get(n) for n in fields.target_channels]
    sources = fields.inputs + fields.static
    nonfinite = NonFinite([f"input {n!r}" for n in fields.input_channels] +
                          [f"target {n!r}" for n in fields.target_channels],
                          [f.file for f in sources] + [f.file for f in fields.targets])
    kept = 0
    bar = progress_bar(total=len(times), desc="statistics", unit="time", disable=not progress)
    for start in range(0, len(times), chunk_times):
        chunk = times[start : start + chunk_times]
        input_values, target_values = fields.read_inputs(chunk), fields.read_targets(chunk)
        clean = nonfinite.add(chunk, np.concatenate([input_values, target_values], axis=1), fields.lat, fields.lon)
        if spec.nan_policy == "drop":  # as the dataset does: such times are not trained on
            input_values, target_values = input_values[clean], target_values[clean]
        kept += len(input_values)
        ranges.add(input_values)
        inputs.add(per_channel(input_values, in_transforms, forward_transform))
        targets.add(per_channel(target_values, out_transforms, forward_transform))
        bar.update(len(chunk))
    bar.close()
    _apply_nan_policy(spec, split, nonfinite, len(times), kept)
    names = fields.input_channels + fields.target_channels
    for name, count in zip(names, np.r_[inputs.count, targets.count]):
        if count == 0:
            raise DataError(f"{spec.where}: channel {name!r} has no finite value in split {split!r}")
    pixels = max(kept, 1) * math.prod(fields.lat.shape)
    n_in = len(fields.input_channels)

    def by_kind(values) -> dict:
        """{"input": {name: value}, "target": {name: value}}: an input and a target may share a name."""
        return {"input": dict(zip(fields.input_channels, values[:n_in])),
                "target": dict(zip(fields.target_channels, values[n_in:]))}

    info = {"split": split, "times": int(kept), "first": str(times[0])[:19], "last": str(times[-1])[:19],
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "spec": str(spec.source_file) if spec.source_file else None,
            "nan_fraction": by_kind([float(1 - c / pixels) for c in np.r_[inputs.count, targets.count]]),
            "nan_policy": spec.nan_policy,
            "nonfinite": by_kind([int(v) for v in nonfinite.values]),
            "nonfinite_times": by_kind([int(t) for t in nonfinite.times]),
            "dropped_times": int(len(times) - kept),
            "input_ranges": ranges.ranges(fields.input_channels),
            "input_units": dict(zip(fields.input_channels, fields.input_units))}
    stats = Normalization(
        ChannelStats(fields.input_channels, inputs.mean, inputs.std(), in_transforms),
        ChannelStats(fields.target_channels, targets.mean, targets.std(), out_transforms),
        info,
    )
    if save:
        stats.save(spec.stats_path)
    return stats


def _apply_nan_policy(spec, split: str, nonfinite: NonFinite, times: int, kept: int) -> None:
    """Raise (error) or report (fill, drop) the NaN/inf values found; nothing when there are none."""
    if not nonfinite.total:
        return
    found = "; ".join(nonfinite.lines(times))
    if spec.nan_policy == "error":
        raise DataError(f"{spec.where}: split {split!r} has NaN/inf values and `nan_policy` is 'error': {found}. "
                        "Set `nan_policy: fill` (use the channel mean) or `nan_policy: drop` (leave such times out) "
                        "in the spec, or fix the data")
    if spec.nan_policy == "drop" and kept == 0:
        raise DataError(f"{spec.where}: every time of split {split!r} has NaN/inf values (`nan_policy: drop` "
                        f"leaves nothing): {found}")
    log.info(nan_policy_note(spec.nan_policy, nonfinite.total, times - kept, times) + f": {found}")


def nan_policy_note(policy: str, values: int, dropped: int, times: int) -> str:
    """What training will do with the NaN/inf values found, in one sentence."""
    if policy == "drop":
        return (f"nan_policy drop: {dropped} of {times} times have NaN/inf values; they are left out of these "
                "statistics and of training")
    return f"nan_policy fill: {values} NaN/inf values will be filled with the channel mean in training"


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
