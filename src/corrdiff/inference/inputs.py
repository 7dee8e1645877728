"""Coarse inputs to downscale without a dataset spec's files: an `xarray.Dataset` in memory, or input files read by
a model package's rules. Both are read by the same rules as a spec's inputs (`corrdiff.data.readers`: names,
`rename`, levels, time axis, units), interpolated to the fine grid (`corrdiff.data.regrid`), followed by the static
fields and normalised with the checkpoint's statistics, so a time gives the tensor `DownscalingDataset` would.
"""

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
import xarray as xr
from pydantic import BaseModel, ConfigDict, create_model

from corrdiff.data import DatasetSpec, Normalization, Sample
from corrdiff.data.canonical import canonical
from corrdiff.data.crop import crop_fields
from corrdiff.data.fields import first_nan, InterpolatedInputs
from corrdiff.data.readers import cwa_field, Field, generic_field, open_fields, time_axis
from corrdiff.data.spec import INPUT_KEYS
from corrdiff.errors import DataError

READ_CHUNK = 64  # times read and interpolated at once, as DownscalingDataset reads them


class _Rules(BaseModel):
    """The methods of `InputRules`; its fields are made by `input_rules` from the spec's."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    spec_model: ClassVar[type[DatasetSpec]] = DatasetSpec

    @classmethod
    def from_spec(cls, spec: DatasetSpec):
        # A package says how inputs are read, never with which credentials (storage_options may hold secrets).
        inputs = spec.inputs.model_copy(update={"paths": [], "storage_options": {}})
        return cls(**{key: getattr(spec, key) for key in cls.model_fields} | {"inputs": inputs})

    def to_dict(self) -> dict:
        """The JSON form a model package keeps; the inputs section under "source", as packages have always had it."""
        raw = self.model_dump(mode="json", exclude={"inputs": {"paths", "storage_options"}})
        return {"source": raw.pop("inputs"), **raw}

    @classmethod
    def from_dict(cls, raw: dict):
        """Raises ValueError, TypeError or KeyError when `raw` is not what `to_dict` writes. Keys it does not know
        (a newer corrdiff's) are left out; keys it lacks (an older package's) take the spec's defaults."""
        known = {key: value for key, value in raw.items() if key in cls.model_fields and key != "inputs"}
        return cls.model_validate(known | {"inputs": {**raw["source"], "paths": []}})

    def spec(self, paths=()) -> DatasetSpec:
        """A spec of these inputs alone, read from `paths` (none: a dataset given in memory)."""
        inputs = self.inputs.model_copy(update={"paths": [str(p) for p in paths]})
        return self.spec_model(**{key: getattr(self, key) for key in type(self).model_fields} | {"inputs": inputs})


def input_rules(spec_model: type[DatasetSpec] = DatasetSpec, keys=INPUT_KEYS) -> type[_Rules]:
    """A frozen model of the fields `keys` of `spec_model`, with their types, defaults and descriptions."""
    fields = {key: (spec_model.model_fields[key].annotation, spec_model.model_fields[key]) for key in keys}
    rules = create_model("InputRules", __base__=_Rules, __module__=__name__, **fields)
    rules.spec_model = spec_model
    return rules


InputRules = input_rules()
InputRules.__doc__ = """How a model reads its coarse inputs: the keys of its dataset spec that concern them,
`corrdiff.data.spec.INPUT_KEYS` (docs/data-format.md), named, typed and defaulted as `DatasetSpec` has them;
`inputs` is the spec's `inputs` section without its paths and storage_options."""


class CoarseInputs:
    """A `corrdiff.data.PairedDataset` without targets over coarse input fields, read READ_CHUNK times at a time.

    `lat`, `lon` (H, W) degrees: the fine grid; `static` {name: (H, W)} physical units, in channel order;
    `stats`: the checkpoint's normalisation. `self[i]` is a `Sample` whose input is (C_in, H, W) normalised.
    `grid_mapping`: CF grid-mapping attributes of the fine grid's projection (None: none known), for the output.
    """

    def __init__(self, fields: list[Field], rules: InputRules, lat, lon, static: dict[str, np.ndarray],
                 stats: Normalization, spec: DatasetSpec, where: str, grid_mapping: dict | None = None):
        self.spec, self.rules, self.stats, self.where = spec, rules, stats, where
        self.grid_mapping = grid_mapping
        self._stores = []
        self.lat, self.lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        self.inputs = fields = crop_fields(fields, self.lat, self.lon)  # read only the box the fine grid needs
        self.static_names = list(static)
        self.static = np.stack([np.asarray(v, np.float32) for v in static.values()]) if static else \
            np.zeros((0, *self.lat.shape), np.float32)
        self.target_channels, self.target_attrs = list(stats.target.names), {}
        self._interpolated = InterpolatedInputs(fields, self.lat, self.lon, rules.edge)
        for f in fields:
            f.times = pd.Index(time_axis(f))
        times = fields[0].times.values
        for f in fields[1:]:
            times = times[np.isin(times, f.times.values)]
        if not times.size:
            raise DataError(f"{where}: no time at which every input ({', '.join(f.name for f in fields)}) exists")
        self.times = np.sort(times)
        self._chunk_start, self._chunk = None, None  # the READ_CHUNK times read last, (time, C_in, H, W)
        if rules.nan_policy == "drop":
            keep = np.concatenate([np.isfinite(self._read(self.times[start : start + READ_CHUNK])).all(axis=(1, 2, 3))
                                   for start in range(0, len(self.times), READ_CHUNK)])
            if not keep.any():
                raise DataError(f"{where}: every time has NaNs in its inputs; nothing left to downscale")
            self.times = self.times[keep]

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, rules: InputRules, lat, lon, static, stats: Normalization,
                     input_units: dict[str, str] | None = None, where: str = "the input dataset",
                     grid_mapping: dict | None = None) -> "CoarseInputs":
        """The inputs of an in-memory (or lazily opened) dataset, its variables named as the rules say, each
        converted to `input_units` (channel: CF units the model was trained in) where its own differ."""
        if not isinstance(ds, xr.Dataset):
            raise DataError(f"{where}: expected an xarray.Dataset, got {type(ds).__name__}")
        spec = rules.spec()
        ds = canonical(ds.copy(deep=False), rules.inputs.time_dim, where)  # the caller's dataset stays as it was
        ds.encoding["corrdiff_files"] = where
        source = rules.inputs
        if rules.layout == "cwa":
            fields = [cwa_field(spec, ds, name, source.group, "inputs", source.in_files(name), input_units)
                      for name in source.variables]
        else:
            fields = [generic_field(spec, ds, name, "inputs", in_files=source.in_files(name), expected=input_units)
                      for name in source.variables]
        return cls(fields, rules, lat, lon, static, stats, spec, where, grid_mapping)

    @classmethod
    def from_files(cls, paths: list[Path], rules: InputRules, lat, lon, static, stats: Normalization,
                   input_units: dict[str, str] | None = None, grid_mapping: dict | None = None) -> "CoarseInputs":
        """The inputs of files or globs (NetCDF, Zarr, GRIB), opened as a spec's inputs are (see `from_dataset`)."""
        spec = rules.spec(paths)
        stores = []
        try:
            fields = open_fields(spec, spec.inputs, "inputs", opened=stores, expected=input_units)
            where = ", ".join(str(p) for p in paths[:3]) + (" …" if len(paths) > 3 else "")
            inputs = cls(fields, rules, lat, lon, static, stats, spec, where, grid_mapping)
        except BaseException:
            for store in stores:
                store.close()
            raise
        inputs._stores = stores
        return inputs

    def close(self) -> None:
        """Close the files `from_files` opened (a dataset given in memory is the caller's to close)."""
        for store in self._stores:
            store.close()
        self._stores = []

    # --- PairedDataset --------------------------------------------------------------------------------------
    @property
    def input_channels(self) -> list[str]:
        return [f.name for f in self.inputs] + self.static_names

    @property
    def fields(self) -> "CoarseInputs":
        """As `DownscalingDataset.fields`: its `inputs` are the input `Field`s (read for the forecast context)."""
        return self

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, index: int) -> Sample:
        start = index - index % READ_CHUNK
        if start != self._chunk_start:
            self._chunk_start, self._chunk = start, self._read(self.times[start : start + READ_CHUNK])
        values, time = self._chunk[index - start], self.times[index]
        if self.rules.nan_policy == "error" and not np.isfinite(values).all():
            c = next(c for c in range(len(values)) if not np.isfinite(values[c]).all())
            raise DataError(f"{self.where}: input {self.input_channels[c]!r} at {str(time)[:19]}: "
                            f"{first_nan(values[c], self.lat, self.lon)}; set `nan_policy: fill` (channel mean) "
                            "or `nan_policy: drop` (skip such times) in the spec")
        normalised = self.stats.normalize_input(values)
        if self.rules.nan_policy == "fill":
            normalised = np.nan_to_num(normalised, nan=0.0, posinf=0.0, neginf=0.0)  # 0 = the channel mean
        return Sample(torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32)), None, time)

    # --- reading --------------------------------------------------------------------------------------------
    def _read(self, times: np.ndarray) -> np.ndarray:
        """Interpolated inputs and static fields (time, C_in, H, W), float32, physical units."""
        out = np.empty((len(times), len(self.input_channels), *self.lat.shape), dtype=np.float32)
        self._interpolated.read(times, out)
        out[:, len(self.inputs):] = self.static[None]
        return out
