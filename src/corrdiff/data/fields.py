"""The paired fields of a spec on the fine grid: inputs (interpolated), static fields and targets, by time.

`PairedFields` opens the stores once and reads any set of times as numpy arrays in physical units,
(time, channel, y, x) on the fine grid. It knows nothing of normalisation or torch. Each channel is read in
the units it is expected in (the spec's `units`, or at generation the units the model was trained with),
converted from the files' own where they differ (`corrdiff.data.units`).
"""

import numpy as np
import pandas as pd

from corrdiff.errors import DataError
from corrdiff.data.crop import crop_fields
from corrdiff.data.readers import fine_grid, is_damaged_read, open_fields, time_axis
from corrdiff.data.moving_grids import PerTime
from corrdiff.data.regrid import regridder
from corrdiff.data.spec import DatasetSpec, load_spec
from corrdiff.file_integrity import is_url


def field_positions(field, times: np.ndarray) -> np.ndarray:
    """Indices of `times` along `field`'s time axis; a DataError naming the file and variable for a missing one."""
    positions = field.times.get_indexer(times)
    if (positions < 0).any():
        missing = times[positions < 0][0]
        raise DataError(f"{field.file}: {field.name!r} has no data at {str(missing)[:19]}")
    return positions


def read_field(field, times: np.ndarray) -> np.ndarray:
    """`field` at `times` (time, y, x) on its own grid, float32 in its expected units; a DataError naming the file
    and variable when a time is missing or the read fails."""
    positions = field_positions(field, times)
    if positions.size > 1 and (np.diff(positions) == 1).all():
        selection = slice(int(positions[0]), int(positions[-1]) + 1)  # one contiguous read
    else:
        selection = positions
    try:
        values = np.asarray(field.array.isel(time=selection).values, dtype=np.float32)
    except Exception as err:  # noqa: BLE001  (a damaged file; or a store over the network, whose clients fail their own way)
        remote = is_url(str(field.file))
        local = isinstance(err, (OSError, RuntimeError, ValueError, OverflowError)) or (
            isinstance(err, AttributeError) and is_damaged_read(err))
        if not (remote or local):
            raise
        why = " ".join(str(err).split())[:300] or type(err).__name__
        hint = "; the store is read over the network: check the connection and the credentials, then run again" \
            if remote else ""
        raise DataError(f"{field.file}: reading {field.name!r} failed: {why}{hint}") from None
    return values if field.window is None else field.window.cut(values, positions)


class InterpolatedInputs:
    """Coarse input fields interpolated to a fine grid (lat, lon (H, W) degrees), the channels that share a coarse
    grid together (one regridder per grid; `edge` as the spec's). A grid that moves with time (lat/lon
    (time, y, x)) is interpolated per time, from each time's own grid (`moving_grids.PerTime`)."""

    def __init__(self, fields: list, lat: np.ndarray, lon: np.ndarray, edge: str):
        self.fields, self.shape = fields, lat.shape
        self._regrid, self._groups = {}, {}
        for c, field in enumerate(fields):
            key = (field.lat.tobytes(), field.lon.tobytes())
            if key not in self._regrid:
                where = f"{field.file}: {field.name!r}"
                make = lambda src_lat, src_lon, where=where, mapping=field.mapping: regridder(
                    src_lat, src_lon, lat, lon, where, edge, mapping)
                self._regrid[key] = PerTime(field.lat, field.lon, make) if field.lat.ndim == 3 else \
                    make(field.lat, field.lon)
            self._groups.setdefault(key, []).append(c)

    def read(self, times: np.ndarray, out: np.ndarray) -> None:
        """Write the fields at `times`, interpolated, into out[:, :len(fields)] (time, C, H, W)."""
        for key, channels in self._groups.items():
            coarse = np.stack([read_field(self.fields[c], times) for c in channels], 1)
            out[:, channels] = self.interpolate(self.fields[channels[0]], coarse, times)

    def interpolate(self, field, coarse: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(time, ..., H, W) of `coarse` (time, ..., y, x), values of `field`'s grid at `times`."""
        regrid = self.regridder_of(field)
        if isinstance(regrid, PerTime):
            return regrid(coarse, field_positions(field, times))
        return regrid(coarse)

    def regridder_of(self, field):
        """The regridder of `field`'s coarse grid."""
        return self._regrid[(field.lat.tobytes(), field.lon.tobytes())]


class PairedFields:
    """Lazy access to a spec's inputs, static fields and (optionally) targets on the fine grid."""

    def __init__(self, spec: DatasetSpec | str, with_target: bool = True, input_units: dict[str, str] | None = None):
        """`input_units`: the units to read each input and static channel in (channel: CF units, "" for no
        expectation), overriding the spec's `units`; e.g. those a checkpoint was trained with."""
        self.spec = spec = load_spec(spec)
        if with_target and spec.targets is None:
            raise DataError(f"{spec.where}: no `targets` in the spec; training and scoring need them")
        self._stores = []  # the opened xarray datasets, for close()
        self.inputs = open_fields(spec, spec.inputs, "inputs", opened=self._stores, expected=input_units)
        if any(f.members is not None for f in self.inputs):
            self.close()
            raise DataError(f"{spec.where}: `member: all` under `inputs` downscales every input member at generation "
                            "(`corrdiff generate`, the API); to train, check or compute statistics, choose one "
                            "member (`member: 0`) or their mean (`member: mean`)")
        self.targets = open_fields(spec, spec.targets, "targets", opened=self._stores) if with_target else []
        self.static = open_fields(spec, spec.static, "static", static=True, opened=self._stores,
                                  expected=input_units) if spec.static else []
        grid_targets = self.targets or (open_fields(spec, spec.targets, "targets", opened=self._stores)
                                        if spec.targets is not None and spec.grid is None and not self.static else [])
        self.lat, self.lon = fine_grid(spec, grid_targets, self.static)
        shape = self.lat.shape
        grid_from = f"the spec's grid file {spec.resolve(spec.grid)}" if spec.grid else \
            (grid_targets or self.static)[0].file
        for field in self.targets + self.static:
            if field.grid_shape != shape:
                raise DataError(f"{field.file}: {field.name!r} has grid shape {field.grid_shape}, "
                                f"the fine grid (from {grid_from}) is {shape}; targets, static fields and the "
                                "grid must share one fine grid")
        self.inputs = crop_fields(self.inputs, self.lat, self.lon)  # read only the box the fine grid needs
        self._interpolated = InterpolatedInputs(self.inputs, self.lat, self.lon, spec.edge)
        for field in self.inputs + self.targets:  # an input and a target often share a name (t2m): keep apart
            field.times = pd.Index(time_axis(field))
        self._static_values = None

    def close(self) -> None:
        """Close the files this object opened (xarray keeps them open otherwise)."""
        for store in self._stores:
            store.close()

    # --- channels -------------------------------------------------------------------------------------
    @property
    def input_channels(self) -> list[str]:
        return [f.name for f in self.inputs] + [f.name for f in self.static]

    @property
    def target_channels(self) -> list[str]:
        return [f.name for f in self.targets] if self.targets else list(self.spec.targets.variables) \
            if self.spec.targets else []

    @property
    def target_attrs(self) -> dict[str, dict]:
        return {f.name: f.attrs for f in self.targets}

    @property
    def input_attrs(self) -> dict[str, dict]:
        return {f.name: f.attrs for f in self.inputs + self.static}

    @property
    def input_units(self) -> list[str]:
        """CF units each input channel is read in (inputs, then static fields); "" where nobody says."""
        return [str(f.array.attrs.get("units", "")) for f in self.inputs + self.static]

    # --- times ----------------------------------------------------------------------------------------
    def times(self, split: str | None = None, strict: bool = True) -> np.ndarray:
        """The times of a split (all times for None/'all') where every input and target exists, sorted.

        Targets define the times when there are any; an input missing at one of them is an error that
        lists the first such times (timestamps are matched exactly), unless not `strict` (scoring: the truth at
        the times the inputs have too).
        """
        rule = self.spec.split(split)
        reference = self.targets or self.inputs
        times = np.unique(np.concatenate([f.times.values for f in reference[:1]]))
        for field in reference[1:]:
            times = times[np.isin(times, field.times.values)]
        if rule is not None:
            times = times[rule.select(times)]
        if self.targets:
            for field in self.inputs:
                missing = times[~np.isin(times, field.times.values)]
                if missing.size and not strict:
                    times = times[np.isin(times, field.times.values)]
                elif missing.size:
                    shown = ", ".join(str(t)[:19] for t in missing[:5])
                    raise DataError(f"{field.file}: input {field.name!r} has no data at {missing.size} target "
                                    f"time(s) of split {split or 'all'!r}: {shown}{' …' if missing.size > 5 else ''} "
                                    "(times are matched exactly)")
        if not times.size:
            iso = lambda t: str(np.datetime64(t, "s"))
            spans = "; ".join(f"{kind} ({f.name}) {iso(f.times.min())} … {iso(f.times.max())}"
                              for kind, group in (("inputs", self.inputs), ("targets", self.targets))
                              for f in group[:1] if len(f.times))
            where = f" within {rule.start:%Y-%m-%dT%H:%M} … {rule.end:%Y-%m-%dT%H:%M}" if rule is not None else ""
            raise DataError(f"{self.spec.where}: no time{where} where inputs and targets all exist "
                            f"(split {split or 'all'!r}); the data covers {spans}")
        return times

    # --- reading --------------------------------------------------------------------------------------
    def read_inputs(self, times: np.ndarray) -> np.ndarray:
        """Interpolated inputs and static fields (time, C_in, H, W), float32, physical units."""
        out = np.empty((len(times), len(self.input_channels), *self.lat.shape), dtype=np.float32)
        self._interpolated.read(times, out)
        if self.static:
            out[:, len(self.inputs):] = self.static_values()[None]
        return out

    def read_targets(self, times: np.ndarray) -> np.ndarray:
        """Targets (time, C_out, H, W), float32, physical units."""
        out = np.empty((len(times), len(self.targets), *self.lat.shape), dtype=np.float32)
        for c, field in enumerate(self.targets):
            out[:, c] = read_field(field, times)
        return out

    def static_values(self) -> np.ndarray:
        """Static fields (C_static, H, W), read once."""
        if self._static_values is None:
            self._static_values = np.stack([np.asarray(f.array.values, np.float32) for f in self.static]) \
                if self.static else np.zeros((0, *self.lat.shape), np.float32)
            for field, values in zip(self.static, self._static_values):
                if not np.isfinite(values).all():
                    raise DataError(f"{field.file}: static field {field.name!r} has "
                                    f"{int((~np.isfinite(values)).sum())} NaN/inf values; static fields must be complete")
        return self._static_values

    def input_field(self, name: str):
        """The named input Field (coarse grid) and its regridder."""
        for field in self.inputs:
            if field.name == name:
                return field, self._interpolated.regridder_of(field)
        raise KeyError(name)


def first_nan(values: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> str:
    """'N NaN values, first at y=…, x=… (lat …, lon …)' for a (y, x) field."""
    bad = ~np.isfinite(values)
    y, x = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), bad.shape)
    return f"{int(bad.sum())} NaN/inf values, first at y={y}, x={x} (lat {lat[y, x]:.3f}, lon {lon[y, x]:.3f})"
