"""Opening what evaluation reads — ensembles, baselines, truth — and aligning them on common times.

Every forecast is held in the layout of `corrdiff.ensemble_file`: one variable per channel with dims
(time, member, y, x) in physical units, 2-D `lat(y, x)`, `lon(y, x)` coordinates. Deterministic forecasts
(baselines, the regression mean) are ensembles of one member. Truth is a Dataset with dims (time, y, x).
Everything stays lazy (dask), chunked over time.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from corrdiff import ensemble_file
from corrdiff.data import load_spec, open_coarse_on_fine, open_targets
from corrdiff.data.readers import UNIT_ALIASES
from corrdiff.ensemble_file import ENSEMBLE_DIMS, ensemble_variables, FIELD_DIMS, FLAG, regression_name
from corrdiff.errors import DataError, EvaluationError
from corrdiff.evaluation.placement import place

CHUNK_BYTES = 64 * 2**20  # dask blocks of about this size: big enough to amortise overhead, small for memory


def open_rechunked(path) -> xr.Dataset:
    """A NetCDF file or Zarr store (`ensemble_file.open`), rechunked over time for scoring."""
    return rechunk_over_time(ensemble_file.open(path))


def linked(derived: xr.Dataset, source: xr.Dataset) -> xr.Dataset:
    """`derived` with `close()` closing the files of `source` (xarray does not pass it on through every
    operation, and an open file blocks a later writer in the same process)."""
    derived.set_close(source.close)
    return derived


def rechunk_over_time(ds: xr.Dataset) -> xr.Dataset:
    """Chunks of whole fields, several times per chunk, so that the largest variable's chunk is ~CHUNK_BYTES."""
    if "time" not in ds.dims:
        return ds
    per_time = max((v.nbytes // max(v.sizes["time"], 1) for v in ds.data_vars.values() if "time" in v.dims),
                   default=1)
    times = int(max(1, min(ds.sizes["time"], CHUNK_BYTES // max(per_time, 1))))
    whole = {d: -1 for d in ds.dims if d != "time"}
    return linked(ds.chunk({"time": times, **whole}), ds)


def source_of(ds: xr.Dataset) -> str:
    return ds.encoding.get("source", "<in memory>")


def as_ensemble(fields: xr.Dataset, variables=None) -> xr.Dataset:
    """A (time, y, x) Dataset turned into a one-member ensemble (time, member, y, x), attributes kept."""
    names = variables or [n for n, v in fields.data_vars.items() if set(v.dims) == set(FIELD_DIMS)]
    ens = xr.Dataset({n: fields[n].transpose(*FIELD_DIMS).expand_dims(member=[0], axis=1) for n in names},
                     attrs=dict(fields.attrs))
    ens.encoding["source"] = source_of(fields)
    return ens


def regression_forecast(predictions: xr.Dataset, variables=None) -> xr.Dataset | None:
    """The regression mean `<name>_regression` of an ensemble file as a one-member forecast, or None."""
    names = [n for n in variables or ensemble_variables(predictions) if regression_name(n) in predictions]
    if not names:
        return None
    fields = xr.Dataset({n: predictions[regression_name(n)] for n in names}, attrs=dict(predictions.attrs))
    for n in names:
        fields[n].attrs.update(predictions[n].attrs)  # units and long_name of the channel itself
    fields.encoding["source"] = f"{source_of(predictions)} (regression mean)"
    return as_ensemble(fields, names)


def is_spec(path: Path) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml")


def open_truth(source, split: str | None = None) -> xr.Dataset:
    """Truth (time, y, x): from a NetCDF/Zarr store, or a dataset spec YAML through `corrdiff.data`."""
    source = Path(source)
    if not is_spec(source):
        return open_rechunked(source)
    truth = open_targets(load_spec(source), split=split)
    truth.encoding["source"] = str(source)
    return rechunk_over_time(truth)


def open_interpolation(spec, split: str | None = None) -> xr.Dataset:
    """The bilinear-interpolation baseline: coarse inputs on the fine grid, as a one-member ensemble."""
    fields = open_coarse_on_fine(load_spec(spec), split=split)
    fields.encoding["source"] = f"{spec} (bilinear interpolation)"
    return rechunk_over_time(linked(as_ensemble(fields), fields))


def open_forecast(path, name: str) -> xr.Dataset:
    """A baseline or other forecast file: generate's layout, or plain (time, y, x) fields (one member)."""
    ds = open_rechunked(path)
    forecast = ensemble_variables(ds)
    if forecast:
        ensemble_file.validate(ds, path)
    ds = ensemble_file.complete_times(ds)
    if forecast:
        return linked(ds[forecast], ds)
    fields = [n for n, v in ds.data_vars.items() if set(v.dims) == set(FIELD_DIMS)]
    if not fields:
        raise EvaluationError(f"{path} ({name}): no variable with dims {ENSEMBLE_DIMS} or {FIELD_DIMS}")
    return linked(as_ensemble(ds, fields), ds)


def parse_baselines(items) -> dict[str, Path]:
    """{name: path} from `NAME=FILE` strings; errors name the malformed item."""
    baselines = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise EvaluationError(f"--baseline {item!r}: expected NAME=FILE, e.g. interp=interp.nc")
        if name in baselines or name in ("corrdiff", "regression"):
            raise EvaluationError(f"--baseline {item!r}: the name {name!r} is already taken")
        baselines[name] = Path(path)
    return baselines


def spacing_km(*datasets: xr.Dataset) -> float:
    """Grid spacing: the first `grid_spacing_km` attribute found, else estimated from 2-D lat/lon."""
    for ds in datasets:
        if "grid_spacing_km" in ds.attrs:
            return float(ds.attrs["grid_spacing_km"])
    for ds in datasets:
        if "lat" in ds.coords and "lon" in ds.coords and ds["lat"].ndim == 2:
            return ensemble_file.grid_spacing_km(np.asarray(ds["lat"].values), np.asarray(ds["lon"].values))
    raise EvaluationError(f"{source_of(datasets[0])}: no grid_spacing_km attribute and no 2-D lat/lon to estimate it")


@dataclass
class Evaluation:
    """Forecasts and truth on the same times and grid, with what was left out and why."""

    truth: xr.Dataset  # (time, y, x) per variable, physical units
    models: dict[str, xr.Dataset]  # name -> (time, member, y, x) per variable; "corrdiff" first
    variables: list[str]  # scored variables: in the predictions and in truth
    spacing_km: float
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # "truth" and each model -> the file it came from

    def members(self, model: str) -> int:
        return int(self.models[model].sizes["member"])

    def source(self, name: str) -> str:
        """The file that truth ("truth") or a model was read from, for messages."""
        data = self.truth if name == "truth" else self.models[name]
        return self.sources.get(name) or source_of(data)

    @property
    def pixels(self) -> int:
        """Pixel-times per variable: times × y × x."""
        return self.truth.sizes["time"] * self.truth.sizes["y"] * self.truth.sizes["x"]

    @property
    def predictions(self) -> xr.Dataset:
        return next(iter(self.models.values()))

    def close(self) -> None:
        """Close the files behind truth and the forecasts."""
        for ds in (self.truth, *self.models.values()):
            ds.close()


def collect(predictions, truth_source, baselines=None, split: str | None = None, interp: bool | None = None,
            variables: list[str] | None = None, same_grid: bool = False) -> Evaluation:
    """Open and align the prediction file, truth, the regression mean and baselines.

    `baselines`: {name: path} or `NAME=FILE` strings. `interp`: add the bilinear-interpolation baseline
    (needs truth given as a dataset spec); None adds it when truth is a spec, it has the coarse variables
    and no baseline is named "interp". `variables`: score only these (default: every predicted one, each
    of which truth must have). Times are cut to those every source has. Every file is placed against truth by
    its lat/lon; one without them is scored only with `same_grid` (the user says it is on truth's grid).
    """
    opened = open_rechunked(predictions)
    ensemble_file.validate(opened, predictions)
    pred = ensemble_file.complete_times(opened)
    predicted = ensemble_variables(pred)
    if pred.sizes["time"] == 0:
        raise EvaluationError(f"{predictions}: no time is complete ({FLAG} is 0 everywhere); "
                              "finish it by rerunning the same `corrdiff generate` command")
    variables = list(variables or predicted)
    unknown = [v for v in variables if v not in predicted]
    if unknown:
        raise EvaluationError(f"{predictions}: no forecast variable {unknown}; it has {predicted}")
    truth = open_truth(truth_source, split)
    check_truth(truth, truth_source, variables, predictions)
    models = {"corrdiff": linked(pred[variables], pred)}
    regression = regression_forecast(pred, variables)
    if regression is not None:
        models["regression"] = regression
    named = parse_baselines(baselines) if not isinstance(baselines, dict) else dict(baselines)
    notes = []
    if interp or (interp is None and is_spec(truth_source) and "interp" not in named):
        models["interp"], note = _interpolation_or_note(truth_source, split, required=bool(interp))
        if models["interp"] is None:
            del models["interp"]
            notes.append(note)
    for name, path in named.items():
        models[name] = open_forecast(path, name)
    return align(truth, models, variables, notes, quiet={"interp"} - set(named), same_grid=same_grid)


def check_truth(truth: xr.Dataset, source, variables, predictions) -> None:
    """Every scored variable in truth with dims (time, y, x); errors name the files and the variable."""
    for v in variables:
        if v not in truth:
            have = [n for n in truth.data_vars]
            raise EvaluationError(f"{source}: truth has no variable {v!r}, which {predictions} predicts "
                                  f"(truth has {have}); score a subset with --variable")
        if set(truth[v].dims) != set(FIELD_DIMS):
            raise EvaluationError(f"{source}: truth variable {v!r} has dims {truth[v].dims}; "
                                  f"expected {FIELD_DIMS}")


def _interpolation_or_note(truth_source, split, required: bool):
    """(interpolation baseline, None), or (None, why not) when it cannot be made and was not asked for."""
    if not is_spec(truth_source):
        raise EvaluationError(f"--truth {truth_source}: the interpolation baseline needs truth given as a "
                              "dataset spec (.yaml); or write it with `corrdiff baseline interp` and pass --baseline")
    try:
        return open_interpolation(truth_source, split), None
    except DataError as err:
        if required:
            raise
        return None, f"no interpolation baseline: {err}"


def align(truth: xr.Dataset, models: dict[str, xr.Dataset], variables, notes=None, quiet=(),
          same_grid: bool = False) -> Evaluation:
    """Restrict every model and truth to the times they all have; check that the grids match, point by point
    (`placement`: a file without lat/lon only with `same_grid`).

    Times a model loses are noted, except for models in `quiet` (derived from truth, which spans more)."""
    notes, placed = list(notes or []), {}
    for name, ds in models.items():
        check_ensemble_shape(ds, name, truth)
        new_ds, new_truth, note = place(ds, f"{source_of(ds)} ({name})", truth, source_of(truth), same_grid)
        placed[name] = ds if new_ds is ds else linked(new_ds, ds)
        truth = truth if new_truth is truth else linked(new_truth, truth)
        notes += [note] if note else []
        notes += check_units(ds, name, truth, variables)
        absent = [v for v in variables if v not in ds]
        if absent and name != "corrdiff":
            notes.append(f"{name} has no {', '.join(absent)}: left blank in its rows")
    models = placed
    times = np.asarray(truth["time"].values)
    for ds in models.values():
        times = np.intersect1d(times, ds["time"].values)
    if times.size == 0:
        ranges = "; ".join(f"{n} {time_range(ds)} ({source_of(ds)})" for n, ds in [("truth", truth), *models.items()])
        raise EvaluationError(f"the predictions, truth and baselines have no time in common: {ranges}")
    for name, ds in models.items():
        dropped = ds.sizes["time"] - times.size
        if dropped and name not in quiet:
            notes.append(f"{name}: {dropped} of its {ds.sizes['time']} times not shared by all inputs, left out")
    sources = {"truth": source_of(truth)} | {name: source_of(ds) for name, ds in models.items()}
    truth = linked(rechunk_over_time(truth[variables].sel(time=times)), truth)
    models = {name: linked(rechunk_over_time(ds[[v for v in variables if v in ds]].sel(time=times)), ds)
              for name, ds in models.items()}
    return Evaluation(truth, models, list(variables), spacing_km(models["corrdiff"], truth), notes, sources)


CELSIUS = {"°c": "degC", "degc": "degC", "deg_c": "degC", "degree_c": "degC", "degree_celsius": "degC",
           "degrees_celsius": "degC"}  # spellings the readers' table lacks


def canonical_units(units) -> str:
    """A CF units string in one spelling (`m/s` and `m s-1`, `°C` and `degC` alike), case-folded; by
    `corrdiff.data.readers.UNIT_ALIASES`. Only spellings are matched: K and degC stay different."""
    text = str(units).strip()
    return (UNIT_ALIASES.get(text.lower()) or CELSIUS.get(text.lower()) or text).casefold()


def check_units(ds: xr.Dataset, name: str, truth: xr.Dataset, variables) -> list[str]:
    """Refuse a forecast whose CF `units` differ from truth's for a variable (a truth in °C against a forecast
    in K would give an MAE of 273); notes for variables whose units are not given on one side."""
    notes = []
    for v in variables:
        if v not in ds:
            continue
        mine, theirs = ds[v].attrs.get("units"), truth[v].attrs.get("units")
        if mine is None or theirs is None:
            missing = source_of(ds) if mine is None else source_of(truth)
            notes.append(f"{v}: no `units` attribute in {missing}; units of {name} and truth not checked")
            continue
        if canonical_units(mine) != canonical_units(theirs):
            raise EvaluationError(
                f"{source_of(ds)} ({name}): {v!r} is in {mine!r} but truth ({source_of(truth)}) is in {theirs!r}; "
                "corrdiff does not convert units: convert one of the files (e.g. K = °C + 273.15) so both carry "
                "the same CF `units`, or correct a wrong `units` attribute")
    return notes


def check_ensemble_shape(ds: xr.Dataset, name: str, truth: xr.Dataset) -> None:
    """The ensemble dims and the same grid size as truth (whether the points are the same: `placement.place`)."""
    missing = [d for d in ENSEMBLE_DIMS if d not in ds.dims]
    if missing:
        raise EvaluationError(f"{source_of(ds)} ({name}): no dims {missing}; expected {ENSEMBLE_DIMS}")
    shape = (truth.sizes.get("y"), truth.sizes.get("x"))
    if (ds.sizes["y"], ds.sizes["x"]) != shape:
        raise EvaluationError(f"{source_of(ds)} ({name}): grid {ds.sizes['y']}×{ds.sizes['x']} differs from "
                              f"truth's {shape[0]}×{shape[1]} ({source_of(truth)})")


def time_range(ds: xr.Dataset) -> str:
    times = ds["time"].values
    if times.size == 0:
        return "no times"
    return f"{str(times.min())[:16]}..{str(times.max())[:16]}"
