"""Build the downscaling cases of the calibration study (docs/method.md, "Residual normalisation").

usage: python scripts/calibration_cases.py CASE OUT_DIR [--demo-data DIR] [--wrf FILE]

CASE is one of
  qg2, qg4   the demo's QG turbulence with inputs of 2 × 2 or 4 × 4 block means of the fine u and v (the demo
             itself uses 8 × 8): residuals small next to the targets' variability. Reads the demo data folder
             (`corrdiff demo` builds it in demo-out/data).
  wrf-tip    real WRF output: 2 m temperature of the Tibetan Plateau nest (wrf_tip_d2.nc, 10 km, 180 × 270,
             2 times; ../shared/realdata/), cut into overlapping 32 × 32 crops that serve as samples, with inputs
             the 4 × 4 block means of a 40 × 40 crop around each (40 km, one coarse cell of margin). Train on the
             west of the domain, validate and test on the east (first and second time), apart by 10 columns.
Writes coarse.nc, fine.nc (and static.nc for qg) and spec.yaml in OUT_DIR, as `corrdiff` reads them.
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

CROP, FACTOR, STRIDE = 32, 4, 8


def block_means(field: np.ndarray, factor: int) -> np.ndarray:
    """Means of factor × factor blocks over the last two axes (float64 sums)."""
    *lead, ny, nx = field.shape
    blocks = field.reshape(*lead, ny // factor, factor, nx // factor, factor).astype(np.float64)
    return blocks.mean(axis=(-3, -1)).astype(np.float32)


def qg_case(demo_data: Path, out: Path, factor: int) -> None:
    fine = xr.open_dataset(demo_data / "fine.nc")
    lat, lon = fine["lat"].values[:, 0], fine["lon"].values[0]
    spacing = lat[1] - lat[0]
    blocks = np.arange(-1, len(lat) // factor + 1)
    centre = spacing * (factor * blocks + (factor - 1) / 2)
    coords = {"time": fine["time"].values,
              "lat": ("lat", np.round(lat[0] + centre, 6), {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", np.round(lon[0] + centre, 6), {"units": "degrees_east", "standard_name": "longitude"})}
    data = {}
    for name in ("u", "v"):
        means = block_means(fine[name].values, factor)
        data[name] = (("time", "lat", "lon"), np.pad(means, [(0, 0), (1, 1), (1, 1)], mode="wrap"),
                      dict(fine[name].attrs))
    xr.Dataset(data, coords, {"title": f"QG u, v: {factor} x {factor} block means, padded periodically"}) \
        .to_netcdf(out / "coarse.nc")
    spec = (demo_data / "spec.yaml").read_text()
    spec = spec.replace("paths: coarse.nc", f"paths: {out / 'coarse.nc'}").replace("variables: [u, v, u2, v2]",
                                                                                 "variables: [u, v]")
    spec = spec.replace("paths: fine.nc", f"paths: {demo_data / 'fine.nc'}")
    spec = spec.replace("paths: static.nc", f"paths: {demo_data / 'static.nc'}")
    (out / "spec.yaml").write_text(f"# QG case with {factor} x {factor} block-mean inputs "
                                   "(scripts/calibration_cases.py)\n" + spec)


def wrf_case(path: Path, out: Path) -> None:
    t2 = xr.open_dataset(path)["T2"].values.astype(np.float32)  # (Time, south_north, west_east), K
    margin = FACTOR  # one coarse cell each side
    _, ny, nx = t2.shape
    rows = range(margin, ny - CROP - margin + 1, STRIDE)
    west = [x for x in range(margin, nx - CROP - margin + 1, STRIDE) if x + CROP + margin <= 180]
    east = [x for x in range(margin, nx - CROP - margin + 1, STRIDE) if x - margin >= 190]
    picks = {"train": [(t, y, x) for t in range(len(t2)) for y in rows for x in west],
             "validation": [(0, y, x) for y in rows for x in east],
             "test": [(1, y, x) for y in rows for x in east]}
    order = picks["train"] + picks["validation"] + picks["test"]
    fine = np.stack([t2[t, y:y + CROP, x:x + CROP] for t, y, x in order])
    wide = np.stack([t2[t, y - margin:y + CROP + margin, x - margin:x + CROP + margin] for t, y, x in order])
    coarse = block_means(wide, FACTOR)
    times = pd.date_range("2000-01-01T00", periods=len(order), freq="h")
    spacing = 0.09  # degrees, about the nest's 10 km: a nominal grid (every crop is placed on it)
    lat = np.round(30.0 + spacing * np.arange(CROP), 6)
    lon = np.round(90.0 + spacing * np.arange(CROP), 6)
    coarse_axis = lambda start: np.round(start + spacing * (FACTOR * np.arange(-1, CROP // FACTOR + 1)
                                                            + (FACTOR - 1) / 2), 6)
    attrs = {"units": "K", "long_name": "2 m temperature", "standard_name": "air_temperature"}
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    source = {"source": f"{path.name} (WRF V3.3.1, Tibetan Plateau nest), 32 x 32 crops as samples"}
    xr.Dataset({"T2": (("time", "y", "x"), fine, attrs)},
               {"time": times, "lat": (("y", "x"), lat2d, {"units": "degrees_north"}),
                "lon": (("y", "x"), lon2d, {"units": "degrees_east"})}, source).to_netcdf(out / "fine.nc")
    xr.Dataset({"T2": (("time", "lat", "lon"), coarse, attrs)},
               {"time": times, "lat": ("lat", coarse_axis(30.0), {"units": "degrees_north"}),
                "lon": ("lon", coarse_axis(90.0), {"units": "degrees_east"})},
               {**source, "title": "4 x 4 block means of 40 x 40 crops"}).to_netcdf(out / "coarse.nc")
    bounds, start = {}, 0
    for split in ("train", "validation", "test"):
        bounds[split] = (times[start], times[start + len(picks[split]) - 1])
        start += len(picks[split])
    splits = "\n".join(f'  {name}: {{start: "{a:%Y-%m-%dT%H}", end: "{b:%Y-%m-%dT%H}"}}'
                       for name, (a, b) in bounds.items())
    (out / "spec.yaml").write_text(
        "# wrf_tip_d2 T2 crops, 4x block means (scripts/calibration_cases.py)\n"
        f"inputs:\n  paths: {out / 'coarse.nc'}\n  variables: [T2]\ntargets:\n  paths: {out / 'fine.nc'}\n"
        f"  variables: [T2]\nsplits:\n{splits}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["qg2", "qg4", "wrf-tip"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--demo-data", type=Path, default=Path("demo-out/data"))
    parser.add_argument("--wrf", type=Path, default=Path("../shared/realdata/wrf_tip_d2.nc"))
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.case == "wrf-tip":
        wrf_case(args.wrf, args.out)
    else:
        qg_case(args.demo_data.resolve(), args.out, int(args.case[2:]))


if __name__ == "__main__":
    main()
