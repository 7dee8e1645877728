"""Training/inference samples as torch tensors, and the xarray views the evaluation needs.

`DownscalingDataset(spec, split)[i]` gives a `Sample`: the normalised input (C_in, H, W) — coarse inputs
bilinearly interpolated to the fine grid, then static fields — the normalised target (C_out, H, W) or
None, and the time. Position embeddings are added by the network, not here. `PairedDataset` states what
training and generation may rely on.
"""

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import xarray as xr

from corrdiff.data.moving_grids import PerTime
from corrdiff.data.fields import field_positions, first_nan, PairedFields, read_field
from corrdiff.data.normalization import Normalization
from corrdiff.data.spec import load_spec
from corrdiff.data.stats import load_or_compute_stats
from corrdiff.errors import DataError
from corrdiff.progress import bar as progress_bar

log = logging.getLogger(__name__)
MEMORY_LIMIT = 1 << 30  # splits smaller than this are read once and kept in memory


@dataclass
class Sample:
    """One time: input (C_in, H, W) and target (C_out, H, W) normalised, float32; target None without truth."""

    input: torch.Tensor
    target: torch.Tensor | None
    time: np.datetime64


class PairedDataset(Protocol):
    """What training and generation use from a dataset; `DownscalingDataset` is the implementation.

    Channels are in tensor order: `input_channels` are the coarse inputs (interpolated to the fine grid)
    followed by the static fields, C_in in all; `target_channels` are the C_out targets, as the spec names
    them. The fine grid is H × W, (y, x), in the order of the fine grid's files. Members are read-only
    (properties, so a plain attribute satisfies them too).
    """

    @property
    def input_channels(self) -> list[str]:
        """Names of the C_in input channels, e.g. `t2m`, `t@850`, `orography`."""
        ...

    @property
    def target_channels(self) -> list[str]:
        """Names of the C_out target channels."""
        ...

    @property
    def target_attrs(self) -> dict[str, dict]:
        """CF `units`, `long_name`, `standard_name` (those the files give, as str) per target; {} without targets."""
        ...

    @property
    def lat(self) -> np.ndarray:
        """Latitude of each fine grid point, (H, W) float64, degrees north."""
        ...

    @property
    def lon(self) -> np.ndarray:
        """Longitude of each fine grid point, (H, W) float64, degrees east."""
        ...

    @property
    def times(self) -> np.ndarray:
        """The times of the samples, (len,) datetime64[ns], ascending: `self[i]` is at `times[i]`."""
        ...

    @property
    def stats(self) -> Normalization:
        """The normalisation between physical units and the normalised tensors of a `Sample`."""
        ...

    def __len__(self) -> int:
        """The number of samples (times)."""
        ...

    def __getitem__(self, index: int) -> Sample:
        """The sample at `times[index]`: normalised input (C_in, H, W), target (C_out, H, W) or None, float32."""
        ...


class DownscalingDataset(torch.utils.data.Dataset):
    """Normalised (input, target) pairs of one split of a dataset spec; works with multi-worker DataLoaders."""

    def __init__(self, spec, split: str | None = "train", stats: Normalization | None = None,
                 with_target: bool = True, progress: bool = False, input_units: dict[str, str] | None = None):
        # input_units: the units to read each input channel in (e.g. a checkpoint's), see PairedFields
        self.spec = load_spec(spec)
        self.fields = PairedFields(self.spec, with_target=with_target, input_units=input_units)
        self.with_target = with_target
        self.split = split
        self.times = self.fields.times(split)
        self.stats = stats if stats is not None else load_or_compute_stats(self.spec, progress=progress)
        self.stats.check(self.input_channels, self.target_channels if with_target else [],
                         str(self.spec.stats_path) if stats is None else "checkpoint statistics")
        self.lat, self.lon = self.fields.lat, self.fields.lon
        self._inputs = self._targets = None
        if self._fits_in_memory():
            self._load_all(progress)
        if self.spec.nan_policy == "drop":
            self._drop_nan_times(progress)

    # --- PairedDataset: the interface training and generation use --------------------------------------
    @property
    def input_channels(self) -> list[str]:
        return self.fields.input_channels

    @property
    def target_channels(self) -> list[str]:
        return self.fields.target_channels

    @property
    def target_attrs(self) -> dict[str, dict]:
        return self.fields.target_attrs

    @property
    def input_units(self) -> list[str]:
        """CF units of each input channel as read ("" where unknown), for the checkpoint."""
        return self.fields.input_units

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, index: int) -> Sample:
        inputs, targets = self._raw(self.times[index : index + 1])
        return self._sample(inputs[0], None if targets is None else targets[0], self.times[index])

    # --- internals -------------------------------------------------------------------------------------
    def _fits_in_memory(self) -> bool:
        if self.spec.load_into_memory is not None:
            return self.spec.load_into_memory
        channels = len(self.input_channels) + (len(self.target_channels) if self.with_target else 0)
        return len(self.times) * channels * self.lat.size * 4 < MEMORY_LIMIT

    def _load_all(self, progress: bool) -> None:
        inputs, targets = [], []
        chunk = 64
        for start in progress_bar(range(0, len(self.times), chunk), desc=f"loading {self.split or 'all'}", unit="chunk",
                                  disable=not progress):
            part = self.times[start : start + chunk]
            inputs.append(self.fields.read_inputs(part))
            if self.with_target:
                targets.append(self.fields.read_targets(part))
        self._inputs = np.concatenate(inputs)
        self._loaded_times = self.times.copy()
        self._targets = np.concatenate(targets) if self.with_target else None

    def _raw(self, times: np.ndarray):
        if self._inputs is not None:
            positions = np.searchsorted(self._loaded_times, times)
            return self._inputs[positions], None if self._targets is None else self._targets[positions]
        targets = self.fields.read_targets(times) if self.with_target else None
        return self.fields.read_inputs(times), targets

    def _sample(self, inputs: np.ndarray, targets: np.ndarray | None, time) -> Sample:
        self._check_nan(inputs, self.input_channels, time, "input")
        normalised = self.stats.normalize_input(inputs)
        if self.spec.nan_policy == "fill":
            normalised = np.nan_to_num(normalised, nan=0.0, posinf=0.0, neginf=0.0)  # 0 = the channel mean
        target = None
        if targets is not None:
            self._check_nan(targets, self.target_channels, time, "target")
            target = self.stats.normalize_target(targets)
            if self.spec.nan_policy == "fill":
                target = np.nan_to_num(target, nan=0.0, posinf=0.0, neginf=0.0)
            target = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
        return Sample(torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32)), target, time)

    def _check_nan(self, values: np.ndarray, channels, time, kind: str) -> None:
        if self.spec.nan_policy != "error" or np.isfinite(values).all():
            return
        for c, name in enumerate(channels):
            if not np.isfinite(values[c]).all():
                source = self.fields.inputs + self.fields.static if kind == "input" else self.fields.targets
                file = source[c].file if c < len(source) else "?"
                raise DataError(f"{file}: {kind} {name!r} at {str(time)[:19]}: "
                                f"{first_nan(values[c], self.lat, self.lon)}; set `nan_policy: fill` (channel mean) "
                                "or `nan_policy: drop` (skip such times) in the spec")

    def _drop_nan_times(self, progress: bool) -> None:
        """Keep only times whose inputs and targets are all finite (reads the split once if not in memory)."""
        keep = np.ones(len(self.times), bool)
        chunk = 64
        for start in progress_bar(range(0, len(self.times), chunk), desc="checking for NaNs", disable=not progress):
            inputs, targets = self._raw(self.times[start : start + chunk])
            finite = np.isfinite(inputs).all(axis=(1, 2, 3))
            if targets is not None:
                finite &= np.isfinite(targets).all(axis=(1, 2, 3))
            keep[start : start + chunk] = finite
        if not keep.any():
            raise DataError(f"{self.spec.where}: every time of split {self.split!r} has NaNs; nothing left to use")
        if not keep.all() and progress:
            log.info(f"nan_policy drop: {int((~keep).sum())} of {len(keep)} times of split {self.split!r} left out")
        self.times = self.times[keep]


def _as_dataset(values: dict[str, xr.DataArray], fields: PairedFields, times) -> xr.Dataset:
    ds = xr.Dataset(values, coords={"time": times, "lat": (("y", "x"), fields.lat), "lon": (("y", "x"), fields.lon)})
    ds["lat"].attrs = {"units": "degrees_north", "standard_name": "latitude"}
    ds["lon"].attrs = {"units": "degrees_east", "standard_name": "longitude"}
    ds.set_close(fields.close)  # closing the view closes the stores it reads from
    return ds


def open_targets(spec, split: str | None = None) -> xr.Dataset:
    """Truth of a split, lazily: (time, y, x) per target variable, with units/long_name and 2-D lat/lon."""
    fields = PairedFields(spec)
    times = fields.times(split, strict=False)
    values = {}
    for field in fields.targets:
        positions = field_positions(field, times)
        if field.window is not None:  # a moving grid's window: cut at each time's own place (read now)
            values[field.name] = xr.DataArray(read_field(field, times), dims=("time", "y", "x"),
                                              coords={"time": times}, attrs=field.attrs).chunk({"time": 16})
            continue
        array = field.array.isel(time=positions).chunk({"time": 16})
        # Drop the grid's coordinates before renaming its dims: 1-D lat/lon are the dims themselves.
        array = array.drop_vars([c for c in array.coords if c != "time"])
        array = array.rename({d: n for d, n in zip(array.dims[1:], ("y", "x"))})
        values[field.name] = array.assign_coords(time=times).assign_attrs(field.attrs)
    return _as_dataset(values, fields, times)


def open_coarse_on_fine(spec, split: str | None = None) -> xr.Dataset:
    """Bilinear interpolation of the inputs to the fine grid, for target variables that are also inputs.

    Lazy over time: (time, y, x) per variable, with the targets' names, units and 2-D lat/lon.
    """
    fields = PairedFields(spec)
    times = fields.times(split, strict=False)
    shared = [n for n in fields.target_channels if n in [f.name for f in fields.inputs]]
    if not shared:
        raise DataError(f"{fields.spec.where}: none of the target variables {fields.target_channels} is among the "
                        f"inputs {[f.name for f in fields.inputs]}, so there is nothing to interpolate")
    values = {}
    for name in shared:
        field, regrid = fields.input_field(name)
        positions = field_positions(field, times)
        coarse = field.array.isel(time=positions).chunk({"time": 16})
        at = xr.DataArray(positions, dims=("time",)).chunk({"time": 16})  # each time's own grid, if it moves
        interpolate = (lambda block, where: regrid(np.asarray(block, np.float32), where)) \
            if isinstance(regrid, PerTime) else (lambda block, where: regrid(np.asarray(block, np.float32)))
        fine = xr.apply_ufunc(interpolate, coarse, at,
                              input_core_dims=[list(coarse.dims[1:]), []], output_core_dims=[["y", "x"]],
                              dask="parallelized", output_dtypes=[np.float32],
                              dask_gufunc_kwargs={"output_sizes": dict(zip(("y", "x"), fields.lat.shape))})
        fine = fine.drop_vars([c for c in fine.coords if c != "time"]).assign_coords(time=times)
        values[name] = fine.assign_attrs(fields.target_attrs.get(name, {}))
    return _as_dataset(values, fields, times)
