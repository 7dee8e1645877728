"""What an imported network needs besides its weights: channel names, normalisation and the fine grid.

They come from files given one by one (`read_stats`, `read_grid`) or from a model package laid out as
Earth2Studio (0.19) reads it (`read_package`):

- Earth2Studio's generic CorrDiff package (`earth2studio.models.dx.CorrDiff.load_model`): `regression.mdlus`,
  `diffusion.mdlus`, `metadata.json` (`input_variables`, `output_variables`, `invariant_variables`,
  `hr_mean_conditioning`, `number_of_steps`, `sigma_min`, `sigma_max`, …), `stats.json` (`{"input"|"output"|
  "invariants": {name: {"mean", "std"}}}`), `output_latlon_grid.nc` (`lat`, `lon`: 1-D or 2-D) and optionally
  `invariants.nc` (the static fields, concatenated after the inputs).
- NVIDIA's CorrDiff Taiwan inference package (`earth2studio.models.dx.CorrDiffTaiwan`, NGC
  `corrdiff_inference_package`), unzipped: `checkpoints/{regression,diffusion}.mdlus` and a Zarr dataset under
  `dataset/` whose `era5_center`/`era5_scale` (channels 0-4, 9-12, 17-19) and `cwb_center`/`cwb_scale`
  (channels 0, 17-19) normalise the 12 inputs and 4 outputs named below, and whose `XLAT`/`XLONG` hold the
  output grid with a one-pixel border that Earth2Studio crops.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corrdiff.data import ChannelStats, Normalization
from corrdiff.documents import read_json_object
from corrdiff.errors import CheckpointError

# Earth2Studio 0.19's CorrDiffTaiwan: variable names, and the dataset channels their statistics sit at.
TAIWAN_INPUTS = ("tcwv", "z500", "t500", "u500", "v500", "z850", "t850", "u850", "v850", "t2m", "u10m", "v10m")
TAIWAN_INPUT_INDEX = (0, 1, 2, 3, 4, 9, 10, 11, 12, 17, 18, 19)
TAIWAN_OUTPUTS = ("mrr", "t2m", "u10m", "v10m")
TAIWAN_OUTPUT_INDEX = (0, 17, 18, 19)
LAT_NAMES, LON_NAMES = ("lat", "latitude", "XLAT"), ("lon", "longitude", "XLONG")


@dataclass
class Package:
    """Checkpoints and what generation needs besides them, read from a model package or from files."""

    regression: Path | None
    diffusion: Path | None
    stats: Normalization
    lat: np.ndarray
    """(H, W) degrees north of the fine grid."""
    lon: np.ndarray
    """(H, W) degrees east."""
    layout: str
    notes: list[str] = field(default_factory=list)
    sampler: dict = field(default_factory=dict)
    """Sampler settings the package records (num_steps, sigma_min, sigma_max), in corrdiff's names."""


def _load_json(path: Path, what: str) -> dict:
    return read_json_object(path, CheckpointError, f"{path}: missing ({what})")


def _channel_stats(path: Path, table: dict, names, kind: str) -> ChannelStats:
    try:
        means = [float(table[name]["mean"]) for name in names]
        stds = [float(table[name]["std"]) for name in names]
    except KeyError as err:
        raise CheckpointError(f"{path}: no mean/std for {kind} variable {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {kind} statistics are not numbers ({err})") from None
    if any(not std > 0 for std in stds):
        raise CheckpointError(f"{path}: a {kind} standard deviation is not positive")
    return ChannelStats(list(names), means, stds)


def read_stats(path: str | Path, metadata: dict | None = None) -> Normalization:
    """Normalisation and channel names from a corrdiff statistics file or an Earth2Studio `stats.json`.

    In an Earth2Studio file the channel order is `metadata`'s (`input_variables`, then `invariant_variables`,
    and `output_variables`) if given, else the file's own key order; invariants follow the inputs, as
    Earth2Studio concatenates them.
    """
    path = Path(path)
    data = _load_json(path, "normalisation statistics")
    if data.get("format") == "corrdiff-stats-1":
        try:
            return Normalization.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: not a corrdiff statistics file ({err})") from None
    if not isinstance(data.get("input"), dict) or not isinstance(data.get("output"), dict):
        raise CheckpointError(f"{path}: expected a corrdiff statistics file or Earth2Studio's stats.json "
                              "({\"input\": {name: {\"mean\", \"std\"}}, \"output\": {...}})")
    metadata = metadata or {}
    invariants = data.get("invariants") or {}
    inputs = list(metadata.get("input_variables") or data["input"])
    statics = list(metadata.get("invariant_variables") or invariants)
    outputs = list(metadata.get("output_variables") or data["output"])
    stats_in = _channel_stats(path, data["input"], inputs, "input")
    stats_static = _channel_stats(path, invariants, statics, "invariant")
    return Normalization(
        ChannelStats(inputs + statics, list(stats_in.mean) + list(stats_static.mean),
                     list(stats_in.std) + list(stats_static.std)),
        _channel_stats(path, data["output"], outputs, "output"),
        {"source": str(path), "static_channels": statics})


def _coordinate(ds, names, path: Path, what: str) -> np.ndarray:
    for name in names:
        if name in ds.variables:
            return np.asarray(ds[name].values, dtype=np.float64)
    raise CheckpointError(f"{path}: no {what} variable (looked for {', '.join(names)})")


def read_grid(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon), each (H, W) in degrees, from a NetCDF or Zarr file with 1-D or 2-D lat/lon (or XLAT/XLONG)."""
    import xarray as xr

    path = Path(path)
    try:
        ds = xr.open_zarr(path) if path.suffix == ".zarr" or (path / ".zgroup").exists() else xr.open_dataset(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such grid file") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable NetCDF or Zarr grid ({' '.join(str(err).split())[:200]})") \
            from None
    with ds:
        lat, lon = _coordinate(ds, LAT_NAMES, path, "latitude"), _coordinate(ds, LON_NAMES, path, "longitude")
    lat, lon = np.squeeze(lat), np.squeeze(lon)  # WRF's XLAT carries a leading Time axis of length 1
    if lat.ndim == 1 and lon.ndim == 1:
        lon, lat = np.meshgrid(lon, lat)
    if lat.ndim != 2 or lat.shape != lon.shape:
        raise CheckpointError(f"{path}: latitude {lat.shape} and longitude {lon.shape} do not form one (H, W) grid")
    return lat, lon


def _generic(folder: Path) -> Package:
    metadata = _load_json(folder / "metadata.json", "Earth2Studio package metadata")
    stats = read_stats(folder / "stats.json", metadata)
    lat, lon = read_grid(folder / "output_latlon_grid.nc")
    notes = []
    if stats.info.get("static_channels"):
        notes.append(f"static channels {stats.info['static_channels']} (invariants.nc) follow the inputs: give them "
                     "to corrdiff as the spec's static fields")
    sampler = {key: metadata[name] for key, name in (("num_steps", "number_of_steps"), ("sigma_min", "sigma_min"),
                                                     ("sigma_max", "sigma_max")) if metadata.get(name) is not None}
    if metadata.get("sampler_type", "stochastic") == "deterministic" and metadata.get("solver", "euler") != "heun":
        notes.append(f"the package samples with the deterministic {metadata.get('solver', 'euler')} solver; corrdiff "
                     "samples with EDM's Heun solver")
    regression, diffusion = folder / "regression.mdlus", folder / "diffusion.mdlus"
    return Package(regression if regression.exists() else None, diffusion if diffusion.exists() else None, stats,
                   lat, lon, "earth2studio", notes, sampler)


def _taiwan_root(folder: Path) -> Path | None:
    for candidate in (folder, folder / "corrdiff_inference_package"):
        if (candidate / "checkpoints").is_dir() and (candidate / "dataset").is_dir():
            return candidate
    return None


def _taiwan(root: Path) -> Package:
    import zarr

    stores = sorted((root / "dataset").glob("*.zarr"))
    if len(stores) != 1:
        raise CheckpointError(f"{root / 'dataset'}: expected one Zarr dataset, found {len(stores)}")
    try:
        group = zarr.open_group(str(stores[0]), mode="r")
        arrays = {name: np.asarray(group[name][:], dtype=np.float64)
                  for name in ("era5_center", "era5_scale", "cwb_center", "cwb_scale", "XLAT", "XLONG")}
    except (KeyError, OSError, ValueError) as err:
        raise CheckpointError(f"{stores[0]}: not the CorrDiff Taiwan dataset ({' '.join(str(err).split())[:200]})") \
            from None
    stats = Normalization(
        ChannelStats(list(TAIWAN_INPUTS), arrays["era5_center"][list(TAIWAN_INPUT_INDEX)],
                     arrays["era5_scale"][list(TAIWAN_INPUT_INDEX)]),
        ChannelStats(list(TAIWAN_OUTPUTS), arrays["cwb_center"][list(TAIWAN_OUTPUT_INDEX)],
                     arrays["cwb_scale"][list(TAIWAN_OUTPUT_INDEX)]),
        {"source": str(stores[0])})
    lat, lon = np.squeeze(arrays["XLAT"]), np.squeeze(arrays["XLONG"])
    notes = ["the grid is the dataset's XLAT/XLONG without its one-pixel border, as Earth2Studio crops it"]
    return Package(root / "checkpoints" / "regression.mdlus", root / "checkpoints" / "diffusion.mdlus", stats,
                   lat[1:-1, 1:-1], lon[1:-1, 1:-1], "corrdiff-taiwan", notes)


def read_package(folder: str | Path) -> Package:
    """The checkpoints, statistics and grid of an Earth2Studio CorrDiff package or the CorrDiff Taiwan package."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".zip":
        raise CheckpointError(f"{folder}: unzip the package first (as Earth2Studio does) and pass the folder")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such package folder")
    if (folder / "metadata.json").exists() and (folder / "stats.json").exists():
        return _generic(folder)
    root = _taiwan_root(folder)
    if root is not None:
        return _taiwan(root)
    raise CheckpointError(f"{folder}: not an Earth2Studio CorrDiff package (metadata.json, stats.json, "
                          "output_latlon_grid.nc) nor the CorrDiff Taiwan package (checkpoints/, dataset/)")
