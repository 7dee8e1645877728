"""Measure the curvilinear interpolation methods on the Tibetan WRF parent (30 km) → nest (10 km) pair.

    .venv/bin/python scripts/curvilinear_regrid_study.py [REALDATA_FOLDER]

Prints, for `Projected` (bilinear on the Lambert axes), `Triangulated` (linear on Delaunay triangles) and nearest
neighbour: the maximum error of an analytic smooth field sampled on the parent grid and interpolated onto the
nest grid (against the field's exact values there, with the bilinear truncation bound (h_x² |f_xx| + h_y² |f_yy|)/8
beside it), the time to build each regridder, and the parent-vs-nest T2 MAE at their shared time (2005-09-21 00 UTC).
"""

import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.spatial import cKDTree

from corrdiff.data.canonical import wrf_grid_mapping
from corrdiff.data.regrid_curvilinear import Projected, Triangulated, _local_plane, projected_axes

WAVELENGTH = 600e3  # m: the analytic field's scale, 20 parent cells


def analytic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth field of projection coordinates (m) with known second derivatives."""
    k = 2 * np.pi / WAVELENGTH
    return np.sin(k * x) * np.cos(k * y)


def nearest(lat, lon, dst_lat, dst_lon):
    plane = _local_plane(np.concatenate([lat.ravel(), dst_lat.ravel()]), np.concatenate([lon.ravel(), dst_lon.ravel()]))
    _, index = cKDTree(np.column_stack(plane(lat.ravel(), lon.ravel()))).query(
        np.column_stack(plane(dst_lat.ravel(), dst_lon.ravel())))
    return lambda field: field.reshape(*field.shape[:-2], -1)[..., index].reshape(*field.shape[:-2], *dst_lat.shape)


def main(folder: Path) -> None:
    parent, nest = (xr.open_dataset(folder / f"wrf_tip_d{n}.nc") for n in (1, 2))
    lat, lon = parent["XLAT"].values.astype(np.float64), parent["XLONG"].values.astype(np.float64)
    dst_lat, dst_lon = nest["XLAT"].values.astype(np.float64), nest["XLONG"].values.astype(np.float64)
    mapping = wrf_grid_mapping(parent.attrs)
    transformer, y_axis, x_axis = projected_axes(mapping, lat, lon)
    src_x, src_y = transformer.transform(lon, lat)
    dst_x, dst_y = transformer.transform(dst_lon, dst_lat)
    k = 2 * np.pi / WAVELENGTH
    h_x, h_y = np.diff(x_axis).mean(), np.diff(y_axis).mean()
    bound = (h_x ** 2 + h_y ** 2) * k ** 2 / 8
    t2_parent = parent["T2"].isel(Time=0).values.astype(np.float64)
    t2_nest = nest["T2"].isel(Time=0).values.astype(np.float64)
    print(f"parent {lat.shape} ({h_x / 1e3:.1f} km), nest {dst_lat.shape}; analytic wavelength {WAVELENGTH / 1e3:.0f} km; "
          f"bilinear truncation bound {bound:.2e}")
    print("| method | build s | analytic max error | / bound | T2 MAE parent vs nest, K |")
    print("|---|---|---|---|---|")
    builders = {"projected (bilinear on Lambert x/y)": lambda: Projected((transformer, y_axis, x_axis), lat.shape,
                                                                         dst_lat, dst_lon, "study", "error"),
                "triangulated (Delaunay, linear)": lambda: Triangulated(lat, lon, dst_lat, dst_lon, "study", "error"),
                "nearest neighbour": lambda: nearest(lat, lon, dst_lat, dst_lon)}
    for name, build in builders.items():
        start = time.perf_counter()
        regrid = build()
        seconds = time.perf_counter() - start
        error = np.abs(regrid(analytic(src_x, src_y)) - analytic(dst_x, dst_y)).max()
        mae = np.abs(regrid(t2_parent) - t2_nest).mean()
        print(f"| {name} | {seconds:.2f} | {error:.2e} | {error / bound:.2f} | {mae:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "realdata"))
