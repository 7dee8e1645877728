"""Baselines written in the layout of `corrdiff generate`, so that `corrdiff score` reads them like an ensemble.

- interp: the coarse input bilinearly interpolated to the fine grid (`corrdiff.data.open_coarse_on_fine`),
  for the target variables that are also inputs.
- rf: a per-pixel random forest (scikit-learn), as in the CorrDiff paper: the features of a pixel are the
  normalised interpolated inputs there (static fields included) and its position; the outputs are the
  normalised targets there. It is fitted on a random subsample of (time, pixel) points of the train split,
  then predicts every pixel of every time of the chosen split, denormalised to physical units.

Both are deterministic: files in the layout of `corrdiff.ensemble_file` with one member, no regression
mean, and the flag set for every time.
"""

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from corrdiff import ensemble_file
from corrdiff.data import DownscalingDataset, load_spec, open_coarse_on_fine
from corrdiff.ensemble_file import FIELD_DIMS
from corrdiff.errors import EvaluationError


def write_forecast(fields: xr.Dataset, out, title: str, extra_attrs: dict | None = None) -> Path:
    """Write (time, y, x) fields with 2-D lat/lon as a one-member, complete ensemble file (NetCDF, or Zarr
    for .zarr); returns the path.

    `fields` may be lazy (dask): it is written chunk by chunk, so memory stays bounded.
    """
    out = Path(out)
    if out.exists():
        raise EvaluationError(f"{out} exists; choose another --out or delete it")
    names = list(fields.data_vars)
    ds = ensemble_file.template(fields["time"].values, 1, fields["lat"].values, fields["lon"].values, names,
                                {name: fields[name].attrs for name in names}, {"title": title, **(extra_attrs or {})},
                                regression=False, complete=True, command="corrdiff baseline")
    for name in names:  # the template's lazy NaNs replaced by the fields, still lazy
        ds[name] = ds[name].copy(data=fields[name].transpose(*FIELD_DIMS).astype(np.float32).data[:, None])
    return ensemble_file.write(ds, out, ensemble_file.format_of(out))


def interpolation_baseline(spec, out, split: str | None = "test") -> Path:
    """Write the bilinear interpolation of the coarse inputs for the split's times; returns the path."""
    fields = open_coarse_on_fine(load_spec(spec), split=split)
    return write_forecast(fields, out, "corrdiff baseline: bilinear interpolation of the coarse input",
                          {"baseline": "interp", "dataset_spec": str(spec), "split": str(split)})


def pixel_features(inputs: np.ndarray) -> np.ndarray:
    """Per-pixel features (y·x, C_in + 2): the normalised inputs (C_in, y, x) and the position in [-1, 1]."""
    channels, height, width = inputs.shape
    row, col = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    stacked = np.concatenate([inputs, row[None].astype(inputs.dtype), col[None].astype(inputs.dtype)])
    return stacked.reshape(channels + 2, -1).T


def fit_random_forest(dataset, samples: int = 50_000, trees: int = 32, seed: int = 0, jobs: int = 1,
                      min_samples_leaf: int = 5, max_times: int = 256):
    """A RandomForestRegressor fitted on `samples` random (time, pixel) points of a DownscalingDataset,
    drawn from at most `max_times` of its times (each read costs a whole field)."""
    from sklearn.ensemble import RandomForestRegressor

    if len(dataset) == 0:
        raise EvaluationError(f"{dataset.spec.where}: the train split has no times to fit the random forest on")
    rng = np.random.default_rng(seed)
    times = rng.choice(len(dataset), size=min(len(dataset), samples, max_times), replace=False)
    per_time = np.bincount(rng.integers(0, times.size, samples), minlength=times.size)  # points per chosen time
    features, targets = [], []
    for index, count in zip(times, per_time):
        if count == 0:
            continue
        sample = dataset[int(index)]
        pixels = rng.choice(sample.input[0].numel(), size=min(int(count), sample.input[0].numel()), replace=False)
        features.append(pixel_features(sample.input.numpy())[pixels])
        targets.append(sample.target.numpy().reshape(sample.target.shape[0], -1).T[pixels])
    forest = RandomForestRegressor(n_estimators=trees, min_samples_leaf=min_samples_leaf, n_jobs=jobs,
                                   random_state=seed)
    return forest.fit(np.concatenate(features), np.concatenate(targets))


def random_forest_baseline(spec, out, split: str | None = "test", samples: int = 50_000, trees: int = 32,
                           seed: int = 0, jobs: int = 1) -> Path:
    """Fit the per-pixel random forest on the train split, predict `split`, write it; returns the path."""
    spec = load_spec(spec)
    train = DownscalingDataset(spec, "train")
    forest = fit_random_forest(train, samples, trees, seed, jobs)
    test = DownscalingDataset(spec, split, stats=train.stats)
    if len(test) == 0:
        raise EvaluationError(f"{spec.where}: split {split!r} has no times to predict")
    height, width = test.lat.shape
    channels = test.target_channels

    def predict(block_index: np.ndarray) -> np.ndarray:
        """Physical-unit predictions (time, channel, y, x) for the times in one block."""
        out = []
        for index in block_index:
            sample = test[int(index)]
            normalised = forest.predict(pixel_features(sample.input.numpy())).T.reshape(len(channels), height, width)
            out.append(np.asarray(test.stats.denormalize_target(normalised.astype(np.float32))))
        return np.stack(out).astype(np.float32)

    index = da.arange(len(test), chunks=8)
    values = index.map_blocks(predict, new_axis=[1, 2, 3], chunks=(index.chunks[0], (len(channels),), (height,), (width,)),
                              dtype=np.float32)
    attrs = test.target_attrs
    fields = xr.Dataset({name: (("time", "y", "x"), values[:, c], attrs.get(name, {})) for c, name in enumerate(channels)},
                        coords={"time": test.times, "lat": (("y", "x"), test.lat), "lon": (("y", "x"), test.lon)})
    with dask.config.set(scheduler="synchronous"):  # the dataset reader is not shared between threads
        return write_forecast(fields, out, "corrdiff baseline: per-pixel random forest on the interpolated inputs",
                              {"baseline": "rf", "dataset_spec": str(spec.where), "split": str(split),
                               "rf_samples": samples, "rf_trees": trees, "rf_seed": seed})
