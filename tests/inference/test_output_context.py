"""The ensemble file keeps where its fields came from (issue 11, items 8 and 9): a forecast input's reference and
lead times, the input files, the fine grid's WRF projection; and it is chunked one time × one member × field."""

from types import SimpleNamespace

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

try:  # imported before eccodes (cfgrib) loads: its bundled libproj otherwise breaks pyproj in this process
    import pyproj
except ImportError:
    pyproj = None

from corrdiff import ensemble_file
from corrdiff.data import PairedFields
from corrdiff.data.canonical import canonical, LEAD_TIME, projected_xy, REFERENCE_TIME, wrf_grid_mapping
from corrdiff.inference.context import output_context
from corrdiff.inference.fingerprint import Fingerprint
from corrdiff.inference.writer import EnsembleWriter
from tests.data import real_layouts as rl

LCC = {"MAP_PROJ": 1, "TRUELAT1": 30.0, "TRUELAT2": 60.0, "STAND_LON": 1.0, "MOAD_CEN_LAT": 45.5, "CEN_LAT": 45.6}


def grib_like(cycles=("2021-01-01T00", "2021-01-01T12"), steps=(0, 3, 6)) -> xr.Dataset:
    """cfgrib's layout of a file with several cycles: reference `time` × lead `step`, `valid_time` their sum."""
    reference = np.array(cycles, dtype="datetime64[ns]")
    step = np.array(steps, dtype="timedelta64[h]").astype("timedelta64[ns]")
    values = np.arange(len(cycles) * len(steps) * 2, dtype=np.float32).reshape(len(cycles), len(steps), 2)
    return xr.Dataset({"t2m": (("time", "step", "x"), values)},
                      {"time": reference, "step": step, "valid_time": (("time", "step"), reference[:, None] + step)})


def test_canonical_keeps_reference_and_lead_time_along_the_valid_times():
    ds = canonical(grib_like())
    np.testing.assert_array_equal(ds[REFERENCE_TIME].values, np.repeat(
        np.array(["2021-01-01T00", "2021-01-01T12"], dtype="datetime64[ns]"), 3))
    np.testing.assert_array_equal(ds[LEAD_TIME].values, [0, 3, 6, 0, 3, 6])
    np.testing.assert_array_equal(ds["time"].values, ds[REFERENCE_TIME].values + ds[LEAD_TIME].values.astype(
        "timedelta64[h]"))  # valid = reference + lead, for every field
    assert ds[REFERENCE_TIME].dims == ds[LEAD_TIME].dims == ("time",) and "step" not in ds.variables
    assert ds[LEAD_TIME].attrs == {"standard_name": "forecast_period", "long_name": "lead time", "units": "hours"}
    one = canonical(grib_like().isel(time=1, step=2))  # one field: 0-D valid_time
    assert one[LEAD_TIME].values.tolist() == [6.0] and one.sizes["time"] == 1
    no_step = canonical(grib_like().isel(step=0).drop_vars("step"))  # no lead time in the file: no context
    assert REFERENCE_TIME not in no_step.variables and no_step.sizes["time"] == 2


@pytest.fixture(scope="module")
def gfs_fields(tmp_path_factory):
    """The doc's GFS spec: GRIB2 forecasts (cycles 00 and 12, steps 0-9 h) onto WRF targets with a projection."""
    root = tmp_path_factory.mktemp("gfs")
    rl.write_gfs(root / "gfs")
    for path in rl.write_wrfout(root / "wrf"):
        with netCDF4.Dataset(path, "a") as nc:
            nc.setncatts(LCC)
    pytest.importorskip("cfgrib")
    return PairedFields(rl.write_doc_spec(root, "gfs", "gfs.yaml"), with_target=False)


def as_dataset(fields: PairedFields) -> SimpleNamespace:
    return SimpleNamespace(fields=fields, spec=fields.spec, lat=fields.lat, lon=fields.lon)


def test_output_context_of_a_gfs_forecast_on_a_wrf_grid(gfs_fields):
    times = rl.WRF_TIMES.values[[1, 4, 7]]  # 03 (00 z + 3 h), 12 (12 z + 0 h), 21 (12 z + 9 h)
    context = output_context(as_dataset(gfs_fields), times)
    _, reference, attrs = context.coords[REFERENCE_TIME]
    np.testing.assert_array_equal(reference, pd.to_datetime(["2021-01-01T00", "2021-01-01T12", "2021-01-01T12"]))
    np.testing.assert_array_equal(context.coords[LEAD_TIME][1], [3.0, 0.0, 9.0])
    assert attrs["standard_name"] == "forecast_reference_time"
    files = context.attrs["corrdiff_input_files"].split("; ")
    assert len(files) == 8 and files[0].endswith("gfs.t00z.pgrb2.2p50.f000")
    assert context.attrs["corrdiff_dataset_spec"].endswith("gfs.yaml")
    assert context.grid_mapping == wrf_grid_mapping(LCC)
    assert context.grid_mapping["grid_mapping_name"] == "lambert_conformal_conic"
    assert context.grid_mapping["standard_parallel"] == [30.0, 60.0]


@pytest.mark.parametrize("attrs, name", [(LCC, "lambert_conformal_conic"),
                                         ({**LCC, "MAP_PROJ": 2, "TRUELAT1": 60.0}, "polar_stereographic"),
                                         ({**LCC, "MAP_PROJ": 2, "TRUELAT1": -60.0}, "polar_stereographic"),
                                         ({**LCC, "MAP_PROJ": 3, "TRUELAT1": 20.0}, "mercator")])
def test_projection_coordinates_agree_with_proj(attrs, name):
    if pyproj is None:
        pytest.skip("pyproj (installed with compliance-checker, the test extra) is the reference")
    mapping = wrf_grid_mapping(attrs)
    assert mapping["grid_mapping_name"] == name
    lat, lon = rl.wrf_grid()
    lat = lat if attrs["TRUELAT1"] > 0 else -lat
    to_map = pyproj.Transformer.from_crs(pyproj.CRS.from_proj4("+proj=longlat +R=6370000 +no_defs"),
                                         pyproj.CRS.from_cf(mapping), always_xy=True)
    x, y = to_map.transform(lon, lat)
    mine_x, mine_y = projected_xy(mapping, lat, lon)
    np.testing.assert_allclose(mine_x, x.mean(axis=0), atol=1e-3)  # metres
    np.testing.assert_allclose(mine_y, y.mean(axis=1), atol=1e-3)


def test_no_projection_without_wrf_attributes():
    assert wrf_grid_mapping({"MAP_PROJ": 1, "DX": 2000.0}) is None  # the parallels are missing
    assert wrf_grid_mapping({**LCC, "MAP_PROJ": 6}) is None  # WRF's lat/lon grid


@pytest.mark.parametrize("fmt, name", [("netcdf", "e.nc"), ("zarr", "e.zarr")])
def test_writer_keeps_the_context_and_chunks_one_member_field(tmp_path, gfs_fields, fmt, name):
    times = rl.WRF_TIMES.values[:3]
    context = output_context(as_dataset(gfs_fields), times)
    lat, lon = gfs_fields.lat, gfs_fields.lon
    members, (height, width) = 2, lat.shape
    writer = EnsembleWriter(tmp_path / name, times, members, lat, lon, ["t2m"], {"t2m": {"units": "K"}},
                            {"title": "test", **context.attrs}, fmt, fingerprint=Fingerprint({"test": 1}),
                            **context.template_options())
    ensemble = np.full((members, 1, height, width), 280.0, np.float32)
    writer.write(1, ensemble, ensemble[0])
    writer.close()
    with ensemble_file.open(tmp_path / name) as ds:
        np.testing.assert_array_equal(ds[LEAD_TIME].values, [0.0, 3.0, 6.0])
        np.testing.assert_array_equal(ds[REFERENCE_TIME].values, np.full(3, np.datetime64("2021-01-01T00", "ns")))
        assert ds[LEAD_TIME].attrs["units"] == "hours" and ds["t2m"].attrs["grid_mapping"] == "crs"
        assert set(ds["t2m"].encoding["coordinates"].split()) == {"lat", "lon", REFERENCE_TIME, LEAD_TIME,
                                                                "projection_x", "projection_y"}
        assert ds["crs"].attrs["grid_mapping_name"] == "lambert_conformal_conic"
        assert ds["projection_x"].attrs["standard_name"] == "projection_x_coordinate"
        assert np.all(np.diff(ds["projection_x"].values) > 0)  # x grows eastward across the grid
        assert ds.attrs["corrdiff_input_files"] == context.attrs["corrdiff_input_files"]
        assert ds["t2m"].chunks == ((1,) * 3, (members,), (height,), (width,))  # read: one time, every member
        np.testing.assert_array_equal(ensemble_file.complete_times(ds)["t2m"].values[0], ensemble[:, 0])
    if fmt == "netcdf":
        with netCDF4.Dataset(tmp_path / name) as nc:
            assert nc["t2m"].chunking() == [1, 1, height, width]
            assert nc["t2m_regression"].chunking() == [1, height, width]
            for coord in ("time", "lat", "lon", LEAD_TIME, REFERENCE_TIME, "member", "projection_x"):
                assert "_FillValue" not in nc[coord].ncattrs(), coord
    else:
        with xr.open_zarr(tmp_path / name, consolidated=False) as raw:
            assert raw["t2m"].encoding["chunks"] == (1, 1, height, width)


def test_merged_rank_parts_keep_the_forecast_context(tmp_path, gfs_fields):
    from corrdiff.inference.generate import merge_parts, part_path

    times = rl.WRF_TIMES.values[:4]
    lat, lon = gfs_fields.lat, gfs_fields.lon
    out = tmp_path / "e.nc"
    for rank in range(2):
        mine = times[rank::2]
        context = output_context(as_dataset(gfs_fields), mine)
        writer = EnsembleWriter(part_path(out, rank, 2), mine, 1, lat, lon, ["t2m"], {}, {}, "netcdf",
                                fingerprint=Fingerprint({"test": 1}), **context.template_options())
        for slot in range(len(mine)):
            writer.write(slot, np.zeros((1, 1, *lat.shape), np.float32), np.zeros((1, *lat.shape), np.float32))
        writer.close()
    merge_parts(out, 2)
    with ensemble_file.open(out) as ds:
        np.testing.assert_array_equal(ds["time"].values, times)
        np.testing.assert_array_equal(ds[LEAD_TIME].values, [0.0, 3.0, 6.0, 9.0])
