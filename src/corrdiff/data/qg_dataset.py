"""The embedded demo dataset: two-layer quasi-geostrophic turbulence, coarse-grained ×4, as a downscaling problem.

`build_qg_dataset` runs pyqg-jax's two-layer QG model (Phillips' baroclinic instability on a doubly periodic 64 × 64
grid) to a statistically steady eddying state, saves ~1,400 snapshots and writes, beside a dataset spec:

- `fine.nc`    targets, dims (time, y, x), 2-D lat/lon, on a 32 × 32 grid (every second model point): upper-layer
               `u`, `v` (m s-1) and `vorticity` (s-1), spectrally truncated to the wavenumbers that the 32 × 32
               grid holds (|k| < 16 per axis) before the points are taken, so nothing aliases. The model's own
               de-aliasing filter leaves almost no power at its finest scales (10 decades below the rest past
               about half its Nyquist wavenumber): a target on the model grid would have a spectral cliff
               no downscaling model should be asked to draw, and no real target has;
- `coarse.nc`  inputs, dims (time, lat, lon), 1-D lat/lon: 8 × 8 block means (of model cells) of upper-layer `u`,
               `v` and lower-layer `u2`, `v2`, padded periodically by one coarse cell on every side (10 × 10), so
               that bilinear interpolation reaches every fine point without extrapolating, as a global model would;
- `static.nc`  synthetic `orography` (m) and `land_sea_mask` (1) on the fine grid;
- `spec.yaml`  the dataset spec (train / validation / test splits), then `demo.json`, the cache marker, last.

The model runs in its own units (1,000 km domain, 15.6 km cells); the fields are rescaled to look atmospheric:
a model cell becomes 10 km (0.1° on a lat/lon box at 30–36.3° N, 10–16.3° E, a label rather than a projection), a
fine cell 20 km and a coarse cell 80 km, and
one snapshot interval (72 model hours by default) becomes one hour, so velocities are multiplied by
0.64 × 72 = 46.08 (typical |u| ≈ 10 m s-1) and vorticity by 72 (std ≈ 5e-4 s-1,
strong but consistent with 10 m s-1 eddies a few cells wide). The kinematics stay consistent:
vorticity is the curl of the stored u, v.
"""

import functools
import json
import time
from importlib.metadata import version
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pyqg_jax
import xarray as xr

from corrdiff.file_integrity import atomic_file, atomic_write_text
from corrdiff.progress import bar as progress_bar

# Bump when the generator changes what it writes: cached datasets with another version are rebuilt.
DEMO_VERSION = 2  # 2: fine grid 32 x 32, spectrally truncated (was the model's 64 x 64)

MODEL_SIZE = 64                # QG model grid points per side
MODEL_DEG = 0.1                # model grid spacing, degrees (10 km)
SUBSAMPLE = 2                  # model cells per fine cell, per side
FINE_SIZE = MODEL_SIZE // SUBSAMPLE  # fine grid points per side
COARSEN = 4                    # fine cells per coarse cell, per side
MODEL_COARSEN = COARSEN * SUBSAMPLE  # model cells per coarse cell, per side
GRID_DEG = MODEL_DEG * SUBSAMPLE     # fine grid spacing, degrees
GRID_KM = 20.0                 # nominal fine grid spacing, km
LAT0, LON0 = 30.0, 10.0        # south-west fine grid point, degrees

# Two-layer QG model, in model units (m, s). Weak beta and drag and a deformation radius of ~2.6 cells give eddies
# large enough for 8 × 8 block means to hold their large scales while the small scales stay a real residual.
QG_PARAMS = {"nx": MODEL_SIZE, "L": 1e6, "rd": 40e3, "U1": 0.1, "U2": 0.0, "beta": 0.75e-11, "rek": 3e-7,
             "delta": 0.25, "H1": 500.0}
DT = 2700.0                    # model time step, s: CFL ≤ 0.27 at the fastest flow seen (blow-ups from ~0.5)
INITIAL_Q_STD = 2e-6           # white-noise PV to seed the baroclinic instability, s-1 (equilibrium: ~1e-5)

LENGTH_SCALE = GRID_KM / SUBSAMPLE * 1e3 / (QG_PARAMS["L"] / MODEL_SIZE)    # metres per model metre
TIME_SCALE = 72.0              # model s per s: a default snapshot interval (96 steps, 72 model h) is 1 h
VELOCITY_SCALE = LENGTH_SCALE * TIME_SCALE
VORTICITY_SCALE = TIME_SCALE

INPUT_VARIABLES = ["u", "v", "u2", "v2"]
TARGET_VARIABLES = ["u", "v", "vorticity"]
STATIC_VARIABLES = ["orography", "land_sea_mask"]
ATTRS = {
    "u": {"units": "m s-1", "long_name": "eastward wind, upper layer", "standard_name": "eastward_wind"},
    "v": {"units": "m s-1", "long_name": "northward wind, upper layer", "standard_name": "northward_wind"},
    "u2": {"units": "m s-1", "long_name": "eastward wind, lower layer", "standard_name": "eastward_wind"},
    "v2": {"units": "m s-1", "long_name": "northward wind, lower layer", "standard_name": "northward_wind"},
    "vorticity": {"units": "s-1", "long_name": "relative vorticity, upper layer",
                  "standard_name": "atmosphere_relative_vorticity"},
    "orography": {"units": "m", "long_name": "surface altitude (synthetic)", "standard_name": "surface_altitude"},
    "land_sea_mask": {"units": "1", "long_name": "land-sea mask (1 = land)", "standard_name": "land_binary_mask"},
}
FILES = ["static.nc", "coarse.nc", "fine.nc", "spec.yaml"]
MARKER = "demo.json"


def build_qg_dataset(out_dir: Path | str, progress: bool = True, force: bool = False, *, times: int = 1400,
               held_out: int = 96, gap: int = 4, spinup_steps: int = 28_800, steps_per_snapshot: int = 96,
               chunk: int = 50, seed: int = 0) -> Path:
    """The path of the demo dataset's spec YAML in `out_dir`, building the dataset unless a complete one is there.

    times: hourly snapshots from 2000-01-01T00; the last `held_out` are the test split, the `held_out` before
    them the validation split, each set off by `gap` unused snapshots; the rest is train.
    spinup_steps: model steps discarded before the first snapshot (from noise to statistically steady eddies),
    rounded up to whole snapshot intervals.
    steps_per_snapshot: model steps (of DT = 45 model minutes) between snapshots.
    chunk: snapshots per compiled simulation call (one progress-bar update each).
    A build reuses `out_dir` when its `demo.json` records the same generator version and parameters (`force`
    rebuilds anyway); files are written under temporary names and renamed, the marker last.
    """
    out_dir = Path(out_dir)
    params = {"times": times, "held_out": held_out, "gap": gap, "spinup_steps": spinup_steps,
              "steps_per_snapshot": steps_per_snapshot, "seed": seed, "dt": DT, "qg": QG_PARAMS,
              "initial_q_std": INITIAL_Q_STD, "grid_km": GRID_KM, "coarsen": COARSEN}
    if min(held_out, steps_per_snapshot, chunk) < 1 or min(gap, spinup_steps) < 0:
        raise ValueError("demo dataset: held_out, steps_per_snapshot and chunk must be >= 1, gap and spinup_steps "
                         ">= 0")
    if times < 2 * held_out + 2 * gap + 1:
        raise ValueError(f"demo dataset: times={times} cannot hold validation and test splits of {held_out} "
                         f"times each, gaps of {gap} and a train split")
    if not force and _is_complete(out_dir, params):
        return out_dir / "spec.yaml"

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    fields = simulate(times, spinup_steps, steps_per_snapshot, chunk, seed, progress)
    time_axis = pd.date_range("2000-01-01T00", periods=times, freq="h")
    attrs = _global_attrs(params)
    lat, lon = fine_axes()
    _write_netcdf(_static_dataset(lat, lon, seed, attrs), out_dir / "static.nc")
    _write_netcdf(_coarse_dataset(fields, time_axis, lat, lon, attrs), out_dir / "coarse.nc")
    _write_netcdf(_fine_dataset(fields, time_axis, lat, lon, attrs), out_dir / "fine.nc")
    atomic_write_text(out_dir / "spec.yaml", _spec_text(time_axis, held_out, gap))
    marker = {"generator": "corrdiff.data.qg_dataset", "version": DEMO_VERSION, "parameters": params,
              "grid_spacing_km": GRID_KM, "coarse_grid_spacing_km": GRID_KM * COARSEN,
              "pyqg_jax": version("pyqg-jax"), "jax": jax.__version__,
              "build_seconds": round(time.perf_counter() - start, 1)}
    atomic_write_text(out_dir / MARKER, json.dumps(marker, indent=2) + "\n")
    return out_dir / "spec.yaml"


def _is_complete(out_dir: Path, params: dict) -> bool:
    """Whether `out_dir` holds every file of a finished build with these parameters."""
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    # Round-trip through JSON so tuples and lists compare equal.
    same = marker.get("version") == DEMO_VERSION and marker.get("parameters") == json.loads(json.dumps(params))
    return same and all((out_dir / name).is_file() for name in FILES)


def simulate(times: int, spinup_steps: int, steps_per_snapshot: int, chunk: int, seed: int,
             progress: bool = True) -> dict[str, np.ndarray]:
    """Snapshots of the QG model, scaled to atmospheric units: arrays (times, y, x) float32 named as in `ATTRS`.

    `u`, `v` are the upper-layer and `u2`, `v2` the lower-layer total velocities (background flow included),
    `vorticity` the upper-layer relative vorticity; y runs south to north, x west to east.
    """
    # Spin up in whole snapshot intervals, in the same compiled calls as the sampling: the chunk size then
    # changes nothing in the data.
    spinup_intervals = -(-spinup_steps // steps_per_snapshot)
    bar = progress_bar(total=(spinup_intervals + times) * steps_per_snapshot, unit="step", unit_scale=True,
                       desc="demo: QG turbulence", disable=not progress)
    # pyqg-jax computes its wavenumbers in float64 (its docs ask for x64); the state stays float32.
    with jax.enable_x64(True):
        model = pyqg_jax.steppers.SteppedModel(model=pyqg_jax.qg_model.QGModel(**QG_PARAMS),
                                               stepper=pyqg_jax.steppers.AB3Stepper(dt=DT))
        key = jax.random.key(seed)
        noise = INITIAL_Q_STD * jax.random.normal(key, (2, MODEL_SIZE, MODEL_SIZE), jnp.float32)
        state = model.initialize_stepper_state(model.model.create_initial_state(key).update(q=noise))
        for size in _chunk_sizes(spinup_intervals, chunk):
            state, _ = _advance(model, state, size, steps_per_snapshot)
            bar.update(size * steps_per_snapshot)
        snapshots = []
        for size in _chunk_sizes(times, chunk):
            state, out = _advance(model, state, size, steps_per_snapshot)
            snapshots.append(jax.tree_util.tree_map(np.asarray, out))
            bar.update(size * steps_per_snapshot)
        background = np.asarray(model.model.Ubg, dtype=np.float32)
    bar.close()
    u, v, vorticity = (np.concatenate(part) for part in zip(*snapshots))
    if not (np.isfinite(u).all() and np.isfinite(vorticity).all()):
        raise RuntimeError("demo dataset: the QG model blew up (non-finite velocities); lower DT")
    u = u + background[:, None, None]
    return {"u": VELOCITY_SCALE * u[:, 0], "v": VELOCITY_SCALE * v[:, 0],
            "u2": VELOCITY_SCALE * u[:, 1], "v2": VELOCITY_SCALE * v[:, 1],
            "vorticity": VORTICITY_SCALE * vorticity}


def _chunk_sizes(total: int, chunk: int) -> list[int]:
    return [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])


@functools.partial(jax.jit, static_argnames=("n_snapshots", "steps_per_snapshot"))
def _advance(model, state, n_snapshots: int, steps_per_snapshot: int):
    """The state after `n_snapshots * steps_per_snapshot` steps, and per snapshot: u, v (n, 2, ny, nx) anomalies
    of both layers and the upper-layer vorticity (n, ny, nx), in model units."""
    def step(state, _):
        return model.step_model(state), None

    def snapshot(state, _):
        state, _ = jax.lax.scan(step, state, None, length=steps_per_snapshot)
        full = model.get_full_state(state)
        # Relative vorticity is the Laplacian of the streamfunction: -|k|² ψ̂ in spectral space.
        vorticity = jnp.fft.irfftn(-model.model.wv2 * full.ph[0], s=full.u.shape[-2:], axes=(-2, -1))
        return state, (full.u, full.v, vorticity.astype(full.u.dtype))

    return jax.lax.scan(snapshot, state, None, length=n_snapshots)


def fine_axes() -> tuple[np.ndarray, np.ndarray]:
    """The fine grid's latitudes (y) and longitudes (x), 1-D, degrees, ascending."""
    steps = np.arange(FINE_SIZE)
    return np.round(LAT0 + GRID_DEG * steps, 6), np.round(LON0 + GRID_DEG * steps, 6)


def coarse_axes() -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes of the coarse cells' centres, padded by one cell on each side (1-D, ascending)."""
    blocks = np.arange(-1, MODEL_SIZE // MODEL_COARSEN + 1)
    centre = MODEL_DEG * (MODEL_COARSEN * blocks + (MODEL_COARSEN - 1) / 2)
    return np.round(LAT0 + centre, 6), np.round(LON0 + centre, 6)


def coarsen(field: np.ndarray) -> np.ndarray:
    """Block means of MODEL_COARSEN × MODEL_COARSEN model cells of (..., y, x) float32, padded periodically by one
    block each side."""
    *lead, ny, nx = field.shape
    blocks = field.reshape(*lead, ny // MODEL_COARSEN, MODEL_COARSEN, nx // MODEL_COARSEN, MODEL_COARSEN)
    means = blocks.astype(np.float64).mean(axis=(-3, -1)).astype(np.float32)
    return np.pad(means, [(0, 0)] * len(lead) + [(1, 1), (1, 1)], mode="wrap")


def subsample(field: np.ndarray) -> np.ndarray:
    """(..., FINE_SIZE, FINE_SIZE) float32: a periodic model field (..., MODEL_SIZE, MODEL_SIZE) cut to the
    wavenumbers |k| < FINE_SIZE / 2 on each axis (an ideal low-pass, by FFT), then every SUBSAMPLE-th point:
    what the fine grid can hold, without aliasing."""
    spectrum = np.fft.rfft2(field.astype(np.float64))
    k = np.fft.fftfreq(MODEL_SIZE, 1.0 / MODEL_SIZE)
    keep = (np.abs(k)[:, None] < FINE_SIZE / 2) & (np.arange(spectrum.shape[-1])[None, :] < FINE_SIZE / 2)
    smooth = np.fft.irfft2(spectrum * keep, s=field.shape[-2:])
    return smooth[..., ::SUBSAMPLE, ::SUBSAMPLE].astype(np.float32)


def _fine_dataset(fields, time_axis, lat, lon, attrs) -> xr.Dataset:
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    data = {name: (("time", "y", "x"), subsample(fields[name]), ATTRS[name]) for name in TARGET_VARIABLES}
    coords = {"time": time_axis, **_lat_lon_2d(lat2d, lon2d)}
    return xr.Dataset(data, coords, {**attrs, "title": "corrdiff demo: fine targets (QG turbulence, 10 km)"})


def _coarse_dataset(fields, time_axis, lat, lon, attrs) -> xr.Dataset:
    coarse_lat, coarse_lon = coarse_axes()
    data = {name: (("time", "lat", "lon"), coarsen(fields[name]), ATTRS[name]) for name in INPUT_VARIABLES}
    coords = {"time": time_axis,
              "lat": ("lat", coarse_lat, {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", coarse_lon, {"units": "degrees_east", "standard_name": "longitude"})}
    title = (f"corrdiff demo: coarse inputs ({MODEL_COARSEN} x {MODEL_COARSEN} block means of model cells, padded "
             "periodically by one cell)")
    return xr.Dataset(data, coords, {**attrs, "title": title})


def _static_dataset(lat, lon, seed: int, attrs) -> xr.Dataset:
    """Synthetic smooth hills: a sum of Gaussians less a sea level; land where they rise above it."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.arange(MODEL_SIZE), np.arange(MODEL_SIZE), indexing="ij")  # hills in model cells
    elevation = np.full(y.shape, -300.0)  # sea level: about a third to a half of the box is land
    for _ in range(5):
        cy, cx = rng.uniform(0, MODEL_SIZE, 2)
        width = rng.uniform(4, 10)
        elevation += rng.uniform(400, 2500) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width ** 2))
    elevation = elevation[::SUBSAMPLE, ::SUBSAMPLE]  # smooth: widths of 4-10 model cells
    land = (elevation > 0).astype(np.float32)
    orography = np.maximum(elevation, 0).astype(np.float32)
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    data = {"orography": (("y", "x"), orography, ATTRS["orography"]),
            "land_sea_mask": (("y", "x"), land, ATTRS["land_sea_mask"])}
    return xr.Dataset(data, _lat_lon_2d(lat2d, lon2d), {**attrs, "title": "corrdiff demo: static fields"})


def _lat_lon_2d(lat2d, lon2d) -> dict:
    return {"lat": (("y", "x"), lat2d, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": (("y", "x"), lon2d, {"units": "degrees_east", "standard_name": "longitude"})}


def _global_attrs(params: dict) -> dict:
    qg = ", ".join(f"{key}={value}" for key, value in QG_PARAMS.items())
    return {
        "Conventions": "CF-1.8",
        "source": f"pyqg-jax {version('pyqg-jax')} two-layer QGModel, AB3 time stepping, float32",
        "history": (f"corrdiff.data.qg_dataset.build_qg_dataset (version {DEMO_VERSION}): pyqg-jax QGModel({qg}), "
                    f"dt={DT} s, seed={params['seed']}, spin-up {params['spinup_steps']} steps, a snapshot every "
                    f"{params['steps_per_snapshot']} steps; velocities x{VELOCITY_SCALE:g}, "
                    f"vorticity x{VORTICITY_SCALE:g} (10 km cells, {TIME_SCALE:g} model h per hour)"),
        "grid_spacing_km": GRID_KM,
    }


def split_bounds(time_axis: pd.DatetimeIndex, held_out: int, gap: int) -> dict[str, tuple[str, str]]:
    """Inclusive (start, end) timestamps of train, validation and test, as 'YYYY-MM-DDTHH'."""
    n = len(time_axis)
    test = (n - held_out, n - 1)
    validation = (test[0] - gap - held_out, test[0] - gap - 1)
    train = (0, validation[0] - gap - 1)
    stamp = lambda i: time_axis[i].strftime("%Y-%m-%dT%H")
    return {name: (stamp(a), stamp(b)) for name, (a, b) in
            {"train": train, "validation": validation, "test": test}.items()}


def _spec_text(time_axis, held_out: int, gap: int) -> str:
    splits = "\n".join(f'  {name}: {{start: "{start}", end: "{end}"}}'
                       for name, (start, end) in split_bounds(time_axis, held_out, gap).items())
    return (f"# corrdiff dataset spec (written by `corrdiff data demo`)\n"
            f"# two-layer QG turbulence (pyqg-jax); fine grid {FINE_SIZE} x {FINE_SIZE} at {GRID_KM:g} km "
            f"({GRID_DEG:g} deg), inputs {COARSEN} x {COARSEN} block means ({GRID_KM * COARSEN:g} km)\n"
            f"inputs:\n  paths: coarse.nc\n  variables: [{', '.join(INPUT_VARIABLES)}]\n"
            f"targets:\n  paths: fine.nc\n  variables: [{', '.join(TARGET_VARIABLES)}]\n"
            f"static:\n  paths: static.nc\n  variables: [{', '.join(STATIC_VARIABLES)}]\n"
            f"splits:\n{splits}\n")


def _write_netcdf(dataset: xr.Dataset, path: Path) -> None:
    """Write float32 variables with zlib level 1 under a temporary name, then rename it into place."""
    encoding = {name: {"dtype": "float32", "zlib": True, "complevel": 1} for name in dataset.data_vars}
    if "time" in dataset.coords:
        encoding["time"] = {"units": "hours since 2000-01-01 00:00:00", "calendar": "proleptic_gregorian"}
    with atomic_file(path) as tmp:
        dataset.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
