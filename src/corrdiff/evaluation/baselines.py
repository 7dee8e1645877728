"""Baselines written in the layout of `corrdiff generate`, so that `corrdiff score` reads them like an ensemble.

- interp: the coarse input bilinearly interpolated to the fine grid (`corrdiff.data.open_coarse_on_fine`),
  for the target variables that are also inputs.
- rf: per-pixel random forests (scikit-learn `RandomForestRegressor`), one per target channel, 100 trees
  each by default. The features of a pixel are the normalised interpolated inputs there (static fields
  included) and four sinusoidal position features, sin and cos of 2π·row/H and 2π·column/W (the networks'
  sinusoidal grid embedding at its lowest frequency, `corrdiff.models.embeddings.sinusoidal_grid`); the
  output of forest c is normalised target channel c there. The forests are fitted on one random subsample
  of (time, pixel) points of the train split (`samples` points from at most `max_times` times), then predict
  every pixel of every time of the chosen split, denormalised to physical units.

Both are deterministic: files in the layout of `corrdiff.ensemble_file` with one member, no regression
mean, and the flag set for every time. `check_baseline_output` is what the commands check before they start.
"""

import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from corrdiff import ensemble_file
from corrdiff.data import DownscalingDataset, load_spec, open_coarse_on_fine
from corrdiff.ensemble_file import FIELD_DIMS
from corrdiff.errors import CorrdiffError, EvaluationError
from corrdiff.evaluation.evaluate import progress_bar
from corrdiff.models.embeddings import sinusoidal_grid
from corrdiff.output_paths import check_output, spec_files
from corrdiff.progress import bar as make_bar
from corrdiff.seeding import derive_seed

RF_TREES = 100
RF_SAMPLES = 50_000
RF_MIN_SAMPLES_LEAF = 5
RF_MAX_TIMES = 256  # each time read for fitting costs a whole field; the points are drawn from these
POSITION_FEATURES = 4  # sin, cos of 2π·row/H and of 2π·column/W
BASELINE_KIND = "a corrdiff baseline file"


def is_baseline_file(path: Path) -> bool:
    """Whether `path` is a file written by `write_forecast` (its `baseline` attribute says which)."""
    try:
        ds = ensemble_file.open(path)
    except CorrdiffError:
        return False
    with ds:
        return "baseline" in ds.attrs


def check_baseline_output(out, spec, overwrite: bool, reads_stats: bool = False) -> Path:
    """Refuse an output that is one of the spec's files, or that exists unless `overwrite` and it is a baseline."""
    spec = load_spec(spec)
    inputs = {"a file of the dataset spec": spec_files(spec)}
    if reads_stats:
        inputs["the spec's statistics"] = [spec.stats_path]
    return check_output(out, inputs, BASELINE_KIND, is_baseline_file, overwrite)


def write_forecast(fields: xr.Dataset, out, title: str, extra_attrs: dict | None = None,
                   overwrite: bool = False) -> Path:
    """Write (time, y, x) fields with 2-D lat/lon as a one-member, complete ensemble file (NetCDF, or Zarr
    for .zarr); returns the path. An existing `out` is replaced only with `overwrite`, and only once the new
    file is complete.

    `fields` may be lazy (dask): it is written chunk by chunk, so memory stays bounded.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise EvaluationError(f"{out} exists; choose another --out, or pass --overwrite to replace it")
    names = list(fields.data_vars)
    ds = ensemble_file.template(fields["time"].values, 1, fields["lat"].values, fields["lon"].values, names,
                                {name: fields[name].attrs for name in names}, {"title": title, **(extra_attrs or {})},
                                regression=False, complete=True, command="corrdiff baseline")
    for name in names:  # the template's lazy NaNs replaced by the fields, still lazy
        ds[name] = ds[name].copy(data=fields[name].transpose(*FIELD_DIMS).astype(np.float32).data[:, None])
    return ensemble_file.write(ds, out, ensemble_file.format_of(out))  # whole, and only then in the place of `out`


def interpolation_baseline(spec, out, split: str | None = "test", overwrite: bool = False,
                           progress: bool = False) -> Path:
    """Write the bilinear interpolation of the coarse inputs for the split's times; returns the path."""
    check_baseline_output(out, spec, overwrite)
    fields = open_coarse_on_fine(load_spec(spec), split=split)
    with progress_bar("interpolating", progress):
        return write_forecast(fields, out, "corrdiff baseline: bilinear interpolation of the coarse input",
                              {"baseline": "interp", "dataset_spec": str(spec), "split": str(split)}, overwrite)


def position_features(shape: tuple[int, int]) -> np.ndarray:
    """(4, y, x) float32: sin and cos of 2π·row/H and of 2π·column/W (the lowest-frequency grid embedding)."""
    return sinusoidal_grid(POSITION_FEATURES, shape).numpy()


def pixel_features(inputs: np.ndarray) -> np.ndarray:
    """Per-pixel features (y·x, C_in + 4): the normalised inputs (C_in, y, x) and the position features."""
    channels, height, width = inputs.shape
    stacked = np.concatenate([inputs, position_features((height, width)).astype(inputs.dtype)])
    return stacked.reshape(channels + POSITION_FEATURES, -1).T


def training_points(dataset, samples: int, seed: int, max_times: int = RF_MAX_TIMES, progress: bool = False):
    """(features (n, C_in + 4), normalised targets (n, C_out)) at `samples` random (time, pixel) points of a
    DownscalingDataset, drawn from at most `max_times` of its times."""
    if len(dataset) == 0:
        raise EvaluationError(f"{dataset.spec.where}: the train split has no times to fit the random forest on")
    rng = np.random.default_rng(seed)
    times = rng.choice(len(dataset), size=min(len(dataset), samples, max_times), replace=False)
    per_time = np.bincount(rng.integers(0, times.size, samples), minlength=times.size)  # points per chosen time
    features, targets = [], []
    for index, count in make_bar(list(zip(times, per_time)), desc="reading training points", unit="time",
                                 leave=False, disable=not progress):
        if count == 0:
            continue
        sample = dataset[int(index)]
        pixels = rng.choice(sample.input[0].numel(), size=min(int(count), sample.input[0].numel()), replace=False)
        features.append(pixel_features(sample.input.numpy())[pixels])
        targets.append(sample.target.numpy().reshape(sample.target.shape[0], -1).T[pixels])
    return np.concatenate(features), np.concatenate(targets)


def fit_random_forest(dataset, samples: int = RF_SAMPLES, trees: int = RF_TREES, seed: int = 0, jobs: int = 1,
                      min_samples_leaf: int = RF_MIN_SAMPLES_LEAF, max_times: int = RF_MAX_TIMES,
                      progress: bool = False) -> list:
    """One RandomForestRegressor per target channel of a DownscalingDataset (in its order), each fitted on
    the same `training_points`; forest c has seed derive_seed(seed, c)."""
    from sklearn.ensemble import RandomForestRegressor

    features, targets = training_points(dataset, samples, seed, max_times, progress)
    step = max(1, os.cpu_count() or 1) if jobs < 0 else max(1, jobs)  # trees grown between progress updates
    bar = make_bar(total=targets.shape[1] * trees, desc="fitting random forests", unit="tree", leave=False,
                   disable=not progress)
    forests = []
    for c in range(targets.shape[1]):
        # warm start grows the same trees as one fit (sklearn draws the skipped trees' seeds): progress is free
        forest = RandomForestRegressor(n_estimators=0, min_samples_leaf=min_samples_leaf, n_jobs=jobs,
                                       random_state=derive_seed(seed, c) % 2**32, warm_start=True)
        grown = 0
        while grown < trees:
            more = min(trees, grown + step)
            forest.set_params(n_estimators=more).fit(features, targets[:, c])
            bar.update(more - grown)
            grown = more
        forests.append(forest)
    bar.close()
    return forests


def predict_random_forest(forests: list, inputs: np.ndarray) -> np.ndarray:
    """Normalised predictions (C_out, y, x) of the forests from normalised inputs (C_in, y, x)."""
    features = pixel_features(inputs)
    height, width = inputs.shape[1:]
    return np.stack([forest.predict(features).reshape(height, width) for forest in forests]).astype(np.float32)


def random_forest_baseline(spec, out, split: str | None = "test", samples: int = RF_SAMPLES, trees: int = RF_TREES,
                           seed: int = 0, jobs: int = 1, overwrite: bool = False, progress: bool = False) -> Path:
    """Fit the per-pixel random forests on the train split, predict `split`, write it; returns the path."""
    check_baseline_output(out, spec, overwrite, reads_stats=True)
    spec = load_spec(spec)
    train = DownscalingDataset(spec, "train")
    forests = fit_random_forest(train, samples, trees, seed, jobs, progress=progress)
    test = DownscalingDataset(spec, split, stats=train.stats)
    if len(test) == 0:
        raise EvaluationError(f"{spec.where}: split {split!r} has no times to predict")
    height, width = test.lat.shape
    channels = test.target_channels
    bar = make_bar(total=len(test), desc="predicting", unit="time", leave=False, disable=not progress)

    def predict(block_index: np.ndarray) -> np.ndarray:
        """Physical-unit predictions (time, channel, y, x) for the times in one block."""
        out = []
        for index in block_index:
            normalised = predict_random_forest(forests, test[int(index)].input.numpy())
            out.append(np.asarray(test.stats.denormalize_target(normalised)))
            bar.update()
        return np.stack(out).astype(np.float32)

    index = da.arange(len(test), chunks=8)
    values = index.map_blocks(predict, new_axis=[1, 2, 3], chunks=(index.chunks[0], (len(channels),), (height,), (width,)),
                              dtype=np.float32)
    attrs = test.target_attrs
    fields = xr.Dataset({name: (("time", "y", "x"), values[:, c], attrs.get(name, {})) for c, name in enumerate(channels)},
                        coords={"time": test.times, "lat": (("y", "x"), test.lat), "lon": (("y", "x"), test.lon)})
    try:
        with dask.config.set(scheduler="synchronous"):  # the dataset reader is not shared between threads
            return write_forecast(fields, out, "corrdiff baseline: per-pixel random forests on the interpolated "
                                  "inputs and sinusoidal position features, one forest per target channel",
                                  {"baseline": "rf", "dataset_spec": str(spec.where), "split": str(split),
                                   "rf_samples": samples, "rf_trees": trees, "rf_seed": seed,
                                   "rf_min_samples_leaf": RF_MIN_SAMPLES_LEAF,
                                   "rf_features": "normalised interpolated inputs and static fields; sin and cos "
                                                  "of 2*pi*row/H and 2*pi*column/W"}, overwrite)
    finally:
        bar.close()
