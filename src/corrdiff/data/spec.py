"""The dataset spec: which files, variables, levels, static fields and time splits make a training pair.

A spec is a small YAML file; paths in it are relative to the file. Example:

    inputs:                      # coarse fields (≈25 km), interpolated to the fine grid
      paths: era5/*.nc           # a path, a glob, or a list of them (NetCDF, Zarr, GRIB); or a Zarr store's URL
      variables: [t2m, u10, v10, t@850, z@500]
    targets:                     # fine fields (≈2 km)
      paths: wrf.zarr
      variables: [t2m, u10, v10, refl]
    static: {paths: static.nc, variables: [orography, land_sea_mask]}
    splits:                      # inclusive bounds; `count: N` keeps N of the range's times, evenly spread
      train: {start: 2018-01-01, end: 2020-12-31T23}
      validation: {start: 2021-01-01, end: 2021-06-30T23}
      test: {start: 2021-07-01, end: 2021-12-31T23}
    transforms: {refl: "power:0.5"}   # optional, for skewed non-negative channels
    units: {t2m: K}                   # optional: checked against each variable's CF `units`

Channels keep the names the spec gives them (`t2m`); `rename` under a source says what they are called in its
files (`{t2m: T2}` for WRF, `{z: gh}` for GFS), so inputs and targets from different models share one name.
"""

import datetime as dt
import glob
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator, ValidationError

from corrdiff.data.transforms import parse_transform
from corrdiff.documents import read_yaml_mapping
from corrdiff.errors import DataError, validation_problems
from corrdiff.file_integrity import is_url


def _timestamp(value) -> dt.datetime:
    """Any ISO-like time (`2021-01-01`, `2021-01-01T06`, a YAML date) as a datetime."""
    try:
        return pd.Timestamp(value).to_pydatetime()
    except (ValueError, TypeError) as err:
        raise ValueError(f"{value!r} is not a time such as 2021-01-01T06 ({err})") from None


Timestamp = Annotated[dt.datetime, BeforeValidator(_timestamp)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Section):
    """One kind of data (inputs, targets or static fields): where it is and which variables to take."""

    paths: str | list[str] = Field(description="file, folder (Zarr) or glob; several may be listed")
    variables: list[str] = Field(min_length=1, description="`name`, `name@level` (e.g. `t@850`) or `name@max` "
                                 "(the maximum over the vertical dimension)")
    rename: dict[str, str] = Field(default_factory=dict, description="channel name: its name in the files, e.g. "
                                   "{t2m: T2, refl: REFL_10CM@max}; a base name renames every level (t: TMP)")
    time_dim: str | None = Field(None, description="the time dimension, when not `time`, `valid_time` or `Time`")
    group: str | None = Field(None, description="cwa layout: the array holding the channels (era5 / cwb)")
    member: int | Literal["mean", "all"] | None = Field(
        None, description="inputs with ensemble members (a `number` dimension, as ERA5's EDA, GEFS or ECMWF ENS): "
        "one member by its number, their `mean`, or `all` (generation: K members downscaled from each input member)")
    time: Timestamp | None = Field(None, description="static fields given with a time dimension that changes: the "
                                   "time to take them at (a field that is the same at every time needs none)")
    moving_grid: str | None = Field(None, description="targets or static fields on a grid that moves with time "
                                    "(a moving nest): `window` keeps the sub-window every time covers, a time "
                                    "(e.g. 2005-08-28T12:00) keeps the times on that time's grid; moving inputs "
                                    "need nothing (each time is interpolated from its own grid)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="for paths that are URLs (s3://, "
                                            "gs://, https://): fsspec's options, e.g. {anon: true}, {profile: NAME}, "
                                            "{endpoint_url: URL}; see corrdiff.data.remote for the credentials rule")

    @field_validator("moving_grid")
    @classmethod
    def _window_or_time(cls, rule: str | None) -> str | None:
        if rule is not None and rule != "window":
            _timestamp(rule)
        return rule

    @field_validator("variables")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variables listed twice: {repeated}")
        for name in names:
            _check_name(name)
        return names

    @model_validator(mode="after")
    def _options_need_urls(self):
        if self.storage_options and self._patterns() and not any(is_url(p) for p in self._patterns()):
            raise ValueError("storage_options: only for paths that are URLs (s3://, gs://, https://), and none is")
        return self

    def _patterns(self) -> list[str]:
        return [self.paths] if isinstance(self.paths, str) else list(self.paths)

    @model_validator(mode="after")
    def _renames_are_names(self):
        # Keys that name no variable are allowed: one table of a model's names may serve several specs.
        for key, value in self.rename.items():
            try:
                _check_name(value)
            except ValueError as err:
                raise ValueError(f"rename: {key}: {err}") from None
            with_levels = [n for n in self.variables if n != key and parse_variable(n)[0] == key]
            if with_levels and "@" in value:
                raise ValueError(f"rename: {key}: {value!r} names a level, but {with_levels[0]!r} names its own; "
                                 f"rename the base name alone ({key}: {parse_variable(value)[0]})")
        return self

    def in_files(self, name: str) -> str:
        """The name a channel has in the files: `rename` of the whole name, else of its base (t@850 → TMP@850)."""
        if name in self.rename:
            return self.rename[name]
        base, sep, level = name.partition("@")
        return self.rename.get(base, base) + sep + level




def spread_indices(total: int, count: int) -> np.ndarray:
    """`count` indices of `total` evenly spread over them: ⌊i·total/count⌋ for i < count (all when count ≥ total).

    The first is 0 and the last within one stride (total/count) of the end: the picks cover the whole record.
    """
    count = min(count, total)
    return (np.arange(count, dtype=np.int64) * total) // max(count, 1)


class Split(_Section):
    """An inclusive time range; with `count`, only that many of its times, evenly spread over it."""

    start: Timestamp
    end: Timestamp
    count: int | None = Field(None, gt=0, description="keep this many of the range's times, evenly spread "
                              "(`spread_indices`: the first, then every total/count-th); default: all of them")

    @model_validator(mode="after")
    def _ordered(self):
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def select(self, times: np.ndarray) -> np.ndarray:
        """Boolean mask of the times (datetime64, sorted) that the split keeps."""
        start, end = np.datetime64(self.start, "ns"), np.datetime64(self.end, "ns")
        inside = (times >= start) & (times <= end)
        if self.count is None:
            return inside
        kept = np.zeros_like(inside)
        kept[np.flatnonzero(inside)[spread_indices(int(inside.sum()), self.count)]] = True
        return kept


class DatasetSpec(_Section):
    """A validated dataset spec; `root` is the folder of the YAML file that paths are relative to."""

    layout: Literal["generic", "cwa"] = "generic"
    inputs: Source
    targets: Source | None = None
    static: Source | None = None
    grid: str | None = Field(None, description="file with the fine grid's lat/lon; default: targets, then static")
    splits: dict[str, Split] = Field(default_factory=dict)
    transforms: dict[str, str] = Field(default_factory=dict, description="variable: log1p | power:P")
    units: dict[str, str] = Field(default_factory=dict, description="variable: expected CF units")
    nan_policy: Literal["error", "fill", "drop"] = Field(
        "error", description="NaN in inputs: error, fill with the channel mean, or drop the time")
    level_dim: str | None = Field(None, description="name of the vertical dimension (GRIB: the typeOfLevel); "
                                  "default: detected")
    edge: Literal["error", "nearest"] = Field(
        "error", description="fine points outside the input grid: an error, or (nearest) the nearest input value "
        "for points at most one input cell outside, as when the inputs are block means of the targets")
    stats: str = Field("stats.json", description="normalisation statistics, relative to the spec")
    load_into_memory: bool | None = Field(None, description="cache a split in memory; default: when < 1 GiB")
    root: Path = Field(Path("."), exclude=True)
    source_file: Path | None = Field(None, exclude=True)

    @field_validator("transforms")
    @classmethod
    def _known_transforms(cls, transforms: dict[str, str]) -> dict[str, str]:
        for name, text in transforms.items():
            parse_transform(text, name)
        return transforms

    @property
    def where(self) -> str:
        return str(self.source_file) if self.source_file else "dataset spec"

    def resolve(self, pattern: str) -> Path | str:
        """`pattern` relative to the spec's folder; a URL (s3://…) as it is."""
        if is_url(pattern):
            return pattern
        return (self.root / pattern).resolve() if not Path(pattern).is_absolute() else Path(pattern)

    def files(self, source: Source, what: str) -> list[Path | str]:
        """The files (or Zarr folders) a source names, globs expanded, in sorted order; URLs (str) as they are."""
        found: list[Path | str] = []
        for pattern in source._patterns():
            full = self.resolve(pattern)
            if is_url(pattern):  # read through fsspec (corrdiff.data.remote): neither globbed nor checked here
                if any(ch in pattern for ch in "*?["):
                    raise DataError(f"{self.where}: {what}.paths: {pattern}: globs are not expanded in URLs; "
                                    "list each store")
                found.append(pattern)
            elif any(ch in pattern for ch in "*?["):
                matches = sorted(Path(p) for p in glob.glob(str(full)))
                if not matches:
                    raise DataError(f"{self.where}: {what}.paths: no file matches {full}")
                found.extend(matches)
            elif full.exists():
                found.append(full)
            else:
                raise DataError(f"{self.where}: {what}.paths: {full} does not exist")
        return found

    @property
    def stats_path(self) -> Path:
        return self.resolve(self.stats)

    def split(self, name: str) -> Split | None:
        """The named split; None for `all`. Unknown names are an error listing the spec's splits."""
        if name in (None, "all"):
            return None
        if name not in self.splits:
            raise DataError(f"{self.where}: no split {name!r}; the spec has {sorted(self.splits) or 'none'} "
                            "(or use 'all')")
        return self.splits[name]

    def with_inputs(self, paths: str | list[str]) -> "DatasetSpec":
        """The same spec reading its inputs from other files (e.g. a new forecast), with no targets needed."""
        return self.model_copy(update={"inputs": self.inputs.model_copy(update={"paths": paths})})


INPUT_KEYS = ("inputs", "layout", "level_dim", "edge", "units", "nan_policy")
"""The keys of `DatasetSpec` that say how its inputs are read: a model reads new inputs by them alone
(`corrdiff.inference.inputs.InputRules` is made of these fields, and model packages keep them). A new key that
concerns the inputs is a field of `DatasetSpec` and its name here."""


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


COLUMN_MAX = "max"  # `name@max`: the maximum over the vertical dimension (composite reflectivity)


def _check_name(name: str) -> None:
    base, _, level = name.partition("@")
    if not base or ("@" in name and level != COLUMN_MAX and not _is_number(level)):
        raise ValueError(f"{name!r}: expected `name`, `name@level` with a numeric level (e.g. t@850) or `name@max`")


def parse_variable(name: str) -> tuple[str, float | str | None]:
    """`t@850` → ("t", 850.0); `t2m` → ("t2m", None); `refl@max` → ("refl", "max")."""
    base, sep, level = name.partition("@")
    if not sep:
        return base, None
    return base, (COLUMN_MAX if level == COLUMN_MAX else float(level))


def load_spec(path: str | Path | DatasetSpec) -> DatasetSpec:
    """Read and validate a dataset spec YAML; errors name the file and the key."""
    if isinstance(path, DatasetSpec):
        return path
    path = Path(path)
    raw = read_yaml_mapping(path, DataError, "dataset spec", "keys (inputs, targets, splits, ...)",
                            "docs/data-format.md")
    if "data" in raw and "inputs" not in raw:
        raise DataError(f"{path} is a run config (it has `data`), not a dataset spec; give the spec its `data:` "
                        "names (docs/data-format.md)")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as err:
        raise DataError(f"{path}: {validation_problems(err, '(top)')}") from None
    spec = spec.model_copy(update={"root": path.resolve().parent, "source_file": path.resolve()})
    if spec.layout == "cwa":
        spec = _cwa_defaults(spec)
    return spec


def _cwa_defaults(spec: DatasetSpec) -> DatasetSpec:
    """In the CWA layout inputs and targets live in one Zarr store: `era5` and `cwb` arrays by default."""
    updates = {"inputs": spec.inputs.model_copy(update={"group": spec.inputs.group or "era5"})}
    if spec.targets is not None:
        updates["targets"] = spec.targets.model_copy(update={"group": spec.targets.group or "cwb"})
    return spec.model_copy(update=updates)

