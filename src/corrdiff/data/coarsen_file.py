"""`corrdiff data coarsen`: fine files → one coarse input file, a perfect-model training pair from fine data alone.

The fine files are opened with corrdiff's readers (`readers.open_files`: whatever NetCDF, Zarr or GRIB they
read, raw wrfout included, brought to one form by `canonical`). The coarse file is CF NetCDF the readers read:

    <name>([time,] [other dims,] y, x)  the fine variable's name, attributes (units, …) and float dtype
                                       (integers become float32); cell_methods extended by the coarsening
    time                               the fine valid times (forecast_reference_time, lead_time if any)
    lat, lon                           1-D dimension coordinates `lat`, `lon` for a regular fine grid, else
                                       2-D on the fine grid's dims (south_north, west_east for wrfout), or
                                       (time, y, x) for a moving nest: the coarse cells' centres
                                       (`corrdiff.data.coarsen`)
    crs, projection_x, projection_y    the fine grid's CF grid mapping, when it has one (WRF: MAP_PROJ, …),
                                       with the coarse cells' projection coordinates (m; not for a moving nest)
    global attributes                  Conventions, title, history, corrdiff_coarsening (how), corrdiff_fine_files,
                                       corrdiff_fine_grid; WRF's projection attributes (MAP_PROJ, TRUELAT1, …),
                                       with DX and DY multiplied by the factor

WRF's staggered variables (U on west_east_stag, V on south_north_stag) are first destaggered to the mass points
(the mean of the two faces); their components stay grid-relative, as in the file. By default every numeric
variable with a time and the grid's dims is coarsened; variables without a time (HGT, LANDMASK) only when named.
The file is computed lazily (memory: a few chunks of fine times), written under a temporary name, then renamed.
"""

import contextlib
import datetime as dt
import glob
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from tqdm.dask import TqdmCallback

from corrdiff import progress as progress_bars
from corrdiff.data.canonical import CONVENTIONS, GRID_MAPPING, LAT_NAMES, LON_NAMES, PROJECTION_ATTRS, projected_xy, \
    TIME
from corrdiff.data.coarsen import axis_weights, coarse_coords, coarsen_values, Coarsening
from corrdiff.data.readers import file_grid_mapping, files_label, grid_names, open_files, SHOWN_NAMES
from corrdiff.errors import DataError, OutputError
from corrdiff.file_integrity import atomic_file
from corrdiff.output_paths import check_output

KIND = "a corrdiff coarsened file"
MARK = "corrdiff_coarsening"  # the global attribute that says a file is one (and how it was made)
WHAT = "fine data"  # the source's name in the readers' errors
CHUNK_BYTES = 32 * 2**20  # fine values (as float64) per task: memory is a few of these per thread
WRF_PROJECTION = ("MAP_PROJ", "MAP_PROJ_CHAR", "TRUELAT1", "TRUELAT2", "STAND_LON", "MOAD_CEN_LAT", "CEN_LAT",
                  "CEN_LON", "POLE_LAT", "POLE_LON")
WRF_SPACING = ("DX", "DY")  # m, multiplied by the factor
DROPPED_ATTRS = ("coordinates", "stagger", "MemoryOrder", "FieldType", "grid_mapping")  # wrong on the coarse grid
LISTED_FILES = 50


@dataclass(frozen=True)
class Coarsened:
    """What `coarsen_files` wrote."""

    path: Path
    variables: list[str]
    fine_shape: tuple[int, int]
    coarse_shape: tuple[int, int]
    times: int
    trimmed: tuple[tuple[int, int], tuple[int, int]]  # fine cells left out: (y start, y end), (x start, x end)
    destaggered: list[str]
    nan_values: dict[str, int]  # NaN values in each coarse variable


def is_coarsened_file(path) -> bool:
    """Whether `path` is a file that `coarsen_files` wrote (its global attribute `corrdiff_coarsening`)."""
    try:
        with xr.open_dataset(path, decode_times=False) as ds:
            return MARK in ds.attrs
    except (OSError, ValueError, RuntimeError):
        return False


def fine_paths(files) -> list[Path]:
    """The fine files, globs expanded (in sorted order); a DataError for a file or glob that names nothing."""
    found = []
    for name in map(str, files):
        if Path(name).exists():
            found.append(Path(name))
        elif any(ch in name for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(name))
            if not matches:
                raise DataError(f"{name}: no file matches; give the fine files (or a glob that names them)")
            found += matches
        else:
            raise DataError(f"{name}: no such file; give the fine files (NetCDF, Zarr or GRIB) to coarsen")
    if not found:
        raise DataError("no fine files given; name the files to coarsen")
    return found


def coarsen_files(files, out, coarsening: Coarsening, variables: list[str] | None = None, overwrite: bool = False,
                  progress: bool = True) -> Coarsened:
    """Coarsen `variables` (default: every numeric one with a time and the grid's dims) of the fine `files` into
    the NetCDF file `out` (the module docstring's layout); never over one of `files`, and over an existing file
    only with `overwrite` when it is an earlier output of this function (`corrdiff.output_paths`)."""
    files = fine_paths(files)
    out = check_output(out, {"a fine input": files}, KIND, is_coarsened_file, overwrite)
    if out.suffix.lower() == ".zarr":
        raise OutputError(f"--out {out}: the coarse file is NetCDF; name it .nc")
    ds = open_files(files, WHAT, keep=set(variables) if variables else None)
    try:
        label = ds.encoding["corrdiff_files"]
        lat_name, lon_name, y_dim, x_dim = grid_names(ds, label, WHAT)
        names = selected_variables(ds, variables, y_dim, x_dim, label)
        lat, lon = (grid_values(ds[name], y_dim, x_dim) for name in (lat_name, lon_name))
        fine_shape = (ds.sizes[y_dim], ds.sizes[x_dim])
        wy, wx = axis_weights(fine_shape[0], coarsening, y_dim), axis_weights(fine_shape[1], coarsening, x_dim)
        coarse_lat, coarse_lon = coarse_coords(lat, lon, coarsening, (y_dim, x_dim))
        grid_dims = ("lat", "lon") if lat.ndim == 1 else (y_dim, x_dim)
        fields, destaggered = {}, []
        for name in names:
            array, moved = on_mass_points(ds[name], {y_dim: fine_shape[0], x_dim: fine_shape[1]}, label)
            fields[name] = coarse_field(array, y_dim, x_dim, grid_dims, wy, wx, coarsening)
            destaggered += [name] if moved else []
        coarse = coarse_dataset(ds, fields, coarse_lat, coarse_lon, grid_dims, coarsening, files, fine_shape)
        nan_values = write(coarse, out, progress)
        times = ds.sizes.get(TIME, 0)
    finally:
        ds.close()
    trimmed = (coarsening.trimmed(fine_shape[0]), coarsening.trimmed(fine_shape[1]))
    return Coarsened(out, names, fine_shape, (wy.shape[0], wx.shape[0]), times, trimmed, destaggered, nan_values)


def grid_values(coord: xr.DataArray, y_dim: str, x_dim: str) -> np.ndarray:
    """Latitude or longitude as float64: (y,) or (x,) on a regular grid, (y, x) on a curvilinear one, (time, y, x)
    on a grid that moves with time."""
    if coord.ndim == 1:
        return np.asarray(coord.values, np.float64)
    return np.asarray(coord.transpose(..., y_dim, x_dim).values, np.float64)


def selected_variables(ds: xr.Dataset, variables: list[str] | None, y_dim: str, x_dim: str, label: str) -> list[str]:
    """The variables to coarsen: those named (each must exist and be a numeric field on the grid, staggered or
    not), else every numeric one with a time and the grid's dims."""
    mass = {f"{y_dim}_stag": y_dim, f"{x_dim}_stag": x_dim}
    on_grid = lambda name: {y_dim, x_dim} <= {mass.get(d, d) for d in ds[name].dims} \
        and np.issubdtype(ds[name].dtype, np.number) and name not in LAT_NAMES + LON_NAMES  # noqa: E731
    if variables:
        missing = [name for name in variables if name not in ds.data_vars]
        if missing:
            raise DataError(f"{label}: variable {missing[0]!r} not found; the files have {_listed(ds)}")
        off = [name for name in variables if not on_grid(name)]
        if off:
            raise DataError(f"{label}: variable {off[0]!r} (dims {ds[off[0]].dims}, {ds[off[0]].dtype}) is not a "
                            f"numeric field on the grid ({y_dim}, {x_dim}); name fields on the grid with --variable")
        return list(dict.fromkeys(variables))
    chosen = [str(name) for name in ds.data_vars if TIME in ds[name].dims and on_grid(name)]
    if not chosen:
        raise DataError(f"{label}: no numeric variable with a time and the grid's dims ({y_dim}, {x_dim}); name "
                        f"the ones to coarsen with --variable (the files have {_listed(ds)})")
    return chosen


def _listed(ds: xr.Dataset) -> str:
    names = ds.encoding.get("corrdiff_names") or sorted(map(str, ds.data_vars))
    more = f" … ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else ""
    return (", ".join(names[:SHOWN_NAMES]) + more) or "no variables"


def on_mass_points(array: xr.DataArray, grid: dict[str, int], label: str) -> tuple[xr.DataArray, bool]:
    """(the array lazily chunked over time, destaggered from WRF's `<dim>_stag` to the `grid`'s dims ({dim: size}),
    whether it was staggered). A staggered dim holds one more point than its grid dim; the mean of two faces is the
    cell's."""
    array = array.reset_coords(drop=True)
    per_time = 8 * int(np.prod([size for dim, size in array.sizes.items() if dim != TIME]))
    array = array.chunk({dim: max(1, CHUNK_BYTES // per_time) if dim == TIME else -1 for dim in array.dims})
    moved = False
    for grid_dim, size in grid.items():
        stag = f"{grid_dim}_stag"
        if stag not in array.dims:
            continue
        if array.sizes[stag] != size + 1:  # a file cut along the grid's dims but not along the staggered ones
            raise DataError(f"{label}: {array.name!r} has {array.sizes[stag]} points along {stag}, expected one more "
                            f"than the grid's {size} along {grid_dim}; cut {stag} with the grid, or leave "
                            f"{array.name!r} out (--variable)")
        faces = array.variable
        mean = 0.5 * (faces.isel({stag: slice(None, -1)}) + faces.isel({stag: slice(1, None)}))
        array = xr.DataArray(mean.data, dims=[grid_dim if d == stag else d for d in mean.dims], name=array.name,
                             attrs=array.attrs, coords={TIME: array[TIME]} if TIME in array.dims else None)
        moved = True
    return array, moved


def coarse_field(array: xr.DataArray, y_dim: str, x_dim: str, grid_dims: tuple[str, str], wy, wx,
                 coarsening: Coarsening) -> xr.DataArray:
    """The lazy coarse field ([time,] [other dims,] Y', X') of a chunked fine one, with its attributes."""
    others = [d for d in array.dims if d not in (y_dim, x_dim)]
    array = array.transpose(*others, y_dim, x_dim)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float32)
    data = array.data.rechunk({array.ndim - 2: -1, array.ndim - 1: -1})
    coarse = data.map_blocks(partial(coarsen_values, wy=wy, wx=wx, dtype=dtype), dtype=dtype,
                             chunks=data.chunks[:-2] + ((wy.shape[0],), (wx.shape[0],)))
    attrs = {k: v for k, v in array.attrs.items() if k not in DROPPED_ATTRS}
    previous = str(attrs.get("cell_methods", "")).strip()
    attrs["cell_methods"] = f"{previous} {coarsening.cell_method()}".strip()
    return xr.DataArray(coarse, dims=(*others, *grid_dims), attrs=attrs)


def coarse_dataset(ds: xr.Dataset, fields: dict, lat: np.ndarray, lon: np.ndarray, grid_dims: tuple[str, str],
                   coarsening: Coarsening, files: list[Path], fine_shape: tuple[int, int]) -> xr.Dataset:
    """The coarse fields with their coordinates, grid mapping and global attributes (module docstring)."""
    lat_dims = {1: grid_dims[:1], 2: grid_dims, 3: (TIME, *grid_dims)}[lat.ndim]
    lon_dims = {1: grid_dims[1:], 2: grid_dims, 3: (TIME, *grid_dims)}[lon.ndim]
    centre = "the centre of each coarse cell (mean of its fine cells)"
    coords = {"lat": (lat_dims, lat, {"standard_name": "latitude", "units": "degrees_north",
                                      "long_name": f"latitude of {centre}"}),
              "lon": (lon_dims, lon, {"standard_name": "longitude", "units": "degrees_east",
                                      "long_name": f"longitude of {centre}"})}
    if TIME in ds.dims:
        coords[TIME] = (TIME, ds[TIME].values, {"standard_name": "time", "long_name": "time", "axis": "T"})
        coords |= {str(name): (TIME, c.values, dict(c.attrs)) for name, c in ds.coords.items()
                   if name != TIME and c.dims == (TIME,)}  # a forecast's reference and lead times
    out = xr.Dataset(fields, coords=coords, attrs=global_attrs(ds, coarsening, files, fine_shape))
    mapping = file_grid_mapping(files[0])  # the mapping's variable may not be among the variables kept
    if mapping is not None:
        out[GRID_MAPPING] = xr.DataArray(np.int32(0), attrs=mapping)
        for name in fields:
            out[name].attrs["grid_mapping"] = GRID_MAPPING
        grid_lat, grid_lon = (np.meshgrid(lat, lon, indexing="ij") if lat.ndim == 1 else (lat, lon))
        xy = projected_xy(mapping, grid_lat, grid_lon) if lat.ndim < 3 else None  # a moving grid has no fixed x, y
        if xy is not None:
            out = out.assign_coords(projection_x=(grid_dims[1:], xy[0], dict(PROJECTION_ATTRS["x"])),
                                    projection_y=(grid_dims[:1], xy[1], dict(PROJECTION_ATTRS["y"])))
    return out


def global_attrs(ds: xr.Dataset, coarsening: Coarsening, files: list[Path], fine_shape: tuple[int, int]) -> dict:
    """Conventions, title, history, how the file was made and from what; WRF's projection attributes."""
    listed = "; ".join(str(f) for f in files[:LISTED_FILES])
    more = f"; … and {len(files) - LISTED_FILES} more" if len(files) > LISTED_FILES else ""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = {"Conventions": CONVENTIONS, "title": f"fine fields coarsened by {coarsening.factor} "
             f"({coarsening.method}) by corrdiff data coarsen",
             "history": f"{now} corrdiff data coarsen --factor {coarsening.factor} --method {coarsening.method} "
                        f"{files_label(files)}",
             MARK: coarsening.describe(), "corrdiff_coarsening_factor": np.int32(coarsening.factor),
             "corrdiff_fine_files": listed + more, "corrdiff_fine_grid": f"{fine_shape[0]}×{fine_shape[1]}"}
    attrs |= {name: ds.attrs[name] for name in WRF_PROJECTION if name in ds.attrs}
    attrs |= {name: ds.attrs[name] * coarsening.factor for name in WRF_SPACING if name in ds.attrs}
    return attrs


def write(coarse: xr.Dataset, out: Path, progress: bool) -> dict[str, int]:
    """Write `coarse` (lazy) to `out` through a temporary name; the number of NaN values of each field."""
    encoding = {name: {"_FillValue": None} for name in coarse.coords}
    for name, field in coarse.data_vars.items():
        if name != GRID_MAPPING:
            chunks = tuple(1 if d == TIME else size for d, size in zip(field.dims, field.shape))
            encoding[name] = {"zlib": True, "complevel": 1, "_FillValue": field.dtype.type(np.nan),
                              "chunksizes": chunks}
    nan_counts = {str(name): da.isnan(field.data).sum() for name, field in coarse.data_vars.items()
                  if name != GRID_MAPPING}
    bar = TqdmCallback(tqdm_class=progress_bars.bar, desc="coarsening", leave=False) if progress \
        else contextlib.nullcontext()
    try:
        with atomic_file(out) as tmp:  # a full disk, an interrupt: no half-written temporary is left behind
            writing = coarse.to_netcdf(tmp, engine="netcdf4", encoding=encoding, compute=False)
            with bar:
                _, counts = dask.compute(writing, nan_counts)  # one pass: the fields are computed once for both
    except OSError as err:
        raise OutputError(f"--out {out}: writing failed ({err}); free some space or choose another path") from None
    return {name: int(count) for name, count in counts.items()}
