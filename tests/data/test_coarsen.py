"""`corrdiff data coarsen`: block and Gaussian means with known answers, coarse lat/lon, raw wrfout, the errors.

Fields are linear in the grid indices wherever an exact answer is wanted: a block mean of a linear field is its
value at the block's centre, and so is any weighted mean with weights symmetric about that centre.
"""

from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from corrdiff.data import PairedFields
from corrdiff.data.canonical import grid_mapping
from corrdiff.data.coarsen import axis_weights, coarse_coords, coarsen_values, Coarsening, TRUNCATE
from corrdiff.data.readers import generic_field, open_files
from corrdiff.data.spec import DatasetSpec, Source
from corrdiff.errors import DataError
from tests.cli_runner import invoke, refused, succeeded
from tests.data import fixtures
from tests.data.real_layouts import latlon_grid, write_latlon_targets, WRF_TIMES

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
WRF_TIP_D2 = REALDATA / "wrf_tip_d2.nc"
WRF_TIP_D1 = REALDATA / "wrf_tip_d1.nc"
KATRINA = REALDATA / "ci_test_file.nc"  # a moving nest


def coarsen(values, factor, method="block", sigma=None):
    """(..., Y, X) → (..., Y', X') with `corrdiff.data.coarsen`, float64."""
    rule = Coarsening(factor, method, sigma)
    ny, nx = np.shape(values)[-2:]
    return coarsen_values(values, axis_weights(ny, rule), axis_weights(nx, rule), dtype=np.float64)


def block_centres(size, factor):
    """Fine-cell index of each coarse cell's centre: the remainder is left out, half of it at the start."""
    start = (size % factor) // 2
    return start + factor * np.arange(size // factor) + (factor - 1) / 2


def read_pair(spec, split: str | None = None, count: int | None = None):
    """(inputs, targets) of a spec at the first `count` times of `split` (default: all), its files closed again."""
    fields = PairedFields(spec)
    try:
        times = fields.times(split)[:count]
        return fields.read_inputs(times), fields.read_targets(times)
    finally:
        fields.close()


def linear(i, j, t=0.0):
    return 3.0 + 0.7 * i - 1.3 * j + 5.0 * t


# --- the method ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_block_mean_of_a_linear_field_is_its_value_at_the_block_centre(factor):
    shape = (13, 18)  # ragged for 2, 3 and 4 along one axis or both
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    t = np.arange(3.0)[:, None, None, None]
    field = np.broadcast_to(linear(i, j, t), (3, 2, *shape))  # (time, level, y, x): leading dims ride along
    ci, cj = np.meshgrid(block_centres(shape[0], factor), block_centres(shape[1], factor), indexing="ij")
    np.testing.assert_allclose(coarsen(field, factor), np.broadcast_to(linear(ci, cj, t), (3, 2, *ci.shape)),
                               rtol=0, atol=1e-12)


def test_block_mean_is_the_mean_of_each_block():
    values = np.random.default_rng(0).normal(size=(2, 12, 15))
    blocks = values.reshape(2, 4, 3, 5, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(coarsen(values, 3), blocks, rtol=1e-13)


@pytest.mark.parametrize("method,sigma", [("block", None), ("gaussian", None), ("gaussian", 0.7), ("gaussian", 5.0)])
def test_a_constant_field_stays_constant(method, sigma):
    values = np.full((2, 17, 22), 287.25, dtype=np.float32)
    out = coarsen(values, 4, method, sigma)
    assert out.shape == (2, 4, 5)
    np.testing.assert_allclose(out, 287.25, rtol=1e-12)


@pytest.mark.parametrize("factor", [3, 4])
def test_gaussian_mean_of_a_linear_field_is_its_value_at_the_block_centre_inside_the_domain(factor):
    # Inside the domain the weights are symmetric about the block centre; near the edges, where they are cut
    # and renormalised, they are not (and the answer is no longer the centre's value).
    shape = (60, 64)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ci, cj = np.meshgrid(block_centres(shape[0], factor), block_centres(shape[1], factor), indexing="ij")
    reach = TRUNCATE * factor / 2
    inside = ((ci >= reach) & (ci <= shape[0] - 1 - reach))[:, :1] & ((cj >= reach) & (cj <= shape[1] - 1 - reach))[:1]
    out = coarsen(linear(i, j), factor, "gaussian")
    assert inside.sum() >= 4
    np.testing.assert_allclose(out[inside], linear(ci, cj)[inside], rtol=0, atol=1e-10)


def test_gaussian_weights_have_the_documented_width():
    weights = axis_weights(64, Coarsening(4, "gaussian")).toarray()
    row = weights[7] / weights[7].sum()  # a coarse cell far from the edges
    centre = block_centres(64, 4)[7]
    variance = (row * (np.arange(64) - centre) ** 2).sum()
    assert np.isclose(np.sqrt(variance), 2.0, rtol=1e-3)  # σ = factor / 2 fine cells


def test_nan_and_inf_are_left_out_and_a_cell_needs_half_its_weight_finite():
    values = np.arange(16.0).reshape(4, 4)  # four 2×2 blocks
    values[0, 0] = np.nan                   # block (0, 0): 1 of 4 missing → the mean of the other 3
    values[0, 2:] = np.inf                  # block (0, 1): 2 of 4 missing (inf counts) → the mean of 2: kept
    values[2:, 0] = np.nan
    values[2, 1] = -np.inf                  # block (1, 0): 3 of 4 missing → NaN
    out = coarsen(values, 2)
    assert out[0, 0] == pytest.approx((1 + 4 + 5) / 3)
    assert out[0, 1] == pytest.approx((6 + 7) / 2)
    assert np.isnan(out[1, 0])
    assert out[1, 1] == pytest.approx((10 + 11 + 14 + 15) / 4)


def test_coarse_lat_lon_are_the_block_centres_on_regular_and_curvilinear_grids():
    lat, lon = latlon_grid((15, 22))  # regular: 1-D
    coarse_lat, coarse_lon = coarse_coords(lat, lon, Coarsening(4, "gaussian"))  # the same grid for both methods
    np.testing.assert_allclose(coarse_lat, 44.0 + 0.25 * block_centres(15, 4), atol=1e-9)
    np.testing.assert_allclose(coarse_lon, -2.0 + 0.25 * block_centres(22, 4), atol=1e-9)
    lat, lon = fixtures.fine_grid((16, 24))  # curvilinear: 2-D, linear in the indices
    coarse_lat, coarse_lon = coarse_coords(lat, lon, Coarsening(3))
    ci, cj = np.meshgrid(block_centres(16, 3), block_centres(24, 3), indexing="ij")
    np.testing.assert_allclose(coarse_lat, 20.0 + 0.2 * ci + 0.01 * cj, atol=1e-9)
    np.testing.assert_allclose(coarse_lon, 115.0 + 0.25 * cj - 0.01 * ci, atol=1e-9)


@pytest.mark.parametrize("start", [178.5, -181.5])
def test_coarse_longitudes_across_the_date_line(start):
    # A 2-D grid crossing 180°, in −180..180 (jumping from 179.75 to −180) or in 0..360 (running through 180).
    j, i = np.meshgrid(np.arange(8), np.arange(12), indexing="ij")
    lat = 60.0 + 0.1 * j
    lon = (start + 0.25 * i + 180.0) % 360.0 - 180.0 if start < 0 else start + 0.25 * i
    _, coarse_lon = coarse_coords(lat, lon, Coarsening(4))
    expected = (start + 0.25 * block_centres(12, 4)) % 360.0
    convention = (coarse_lon[0] + 180.0) % 360.0 - 180.0 if start < 0 else coarse_lon[0]
    np.testing.assert_allclose(np.mod(coarse_lon[0], 360.0), expected, atol=1e-9)  # 179, 180, 181: never ~0
    np.testing.assert_allclose(coarse_lon[0], convention, atol=1e-9)  # in the fine grid's convention


@pytest.mark.parametrize("factor,method,sigma,message", [
    (1, "block", None, r"--factor 1: .* at least 2"),
    (0, "block", None, r"--factor 0: .* at least 2"),
    (2, "block", 1.0, r"--sigma .* needs --method gaussian"),
    (2, "gaussian", -1.0, r"--sigma -1.0: .* positive"),
    (2, "median", None, r"--method median: expected one of block, gaussian"),
])
def test_bad_coarsening_settings(factor, method, sigma, message):
    with pytest.raises(DataError, match=message):
        Coarsening(factor, method, sigma)


def test_a_factor_larger_than_the_grid_is_refused():
    with pytest.raises(DataError, match=r"--factor 9 is too large for the grid's 17 cells along x: .* at most 8"):
        axis_weights(17, Coarsening(9), "x")


# --- files: a regular grid, end to end -------------------------------------------------------------------
@pytest.fixture
def regular(tmp_path):
    """t2m, u10, v10 on a 16×24 regular lat/lon grid, 8 times."""
    return write_latlon_targets(tmp_path / "fine.nc")


def test_a_regular_grid_coarsened_pairs_with_its_fine_file_in_data_check(regular):
    coarse = regular.parent / "coarse.nc"
    result = succeeded(invoke("data", "coarsen", regular, "--out", coarse, "--factor", "4", "-q"))
    assert "3 variable(s) (t2m, u10, v10), 8 time(s): 16×24 → 4×6" in result.output
    with xr.open_dataset(coarse) as ds, xr.open_dataset(regular) as fine:
        assert ds["t2m"].dims == ("time", "lat", "lon") and ds["t2m"].attrs["units"] == "K"
        np.testing.assert_allclose(ds["t2m"].values, fine["t2m"].values.reshape(8, 4, 4, 6, 4).mean(axis=(2, 4)),
                                   rtol=1e-6)
        np.testing.assert_allclose(ds["lat"].values, fine["lat"].values.reshape(4, 4).mean(1))
        assert (ds["time"].values == fine["time"].values).all()
        assert "cell_methods" in ds["t2m"].attrs and ds.attrs["corrdiff_coarsening"] == "block means of 4×4 fine cells"
    spec = regular.parent / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "inputs": {"paths": "coarse.nc", "variables": ["t2m", "u10"]},
        "targets": {"paths": "fine.nc", "variables": ["t2m", "u10", "v10"]},
        "edge": "nearest",  # block means stop half a coarse cell inside the fine domain
        "splits": {"train": {"start": "2021-01-01T00", "end": "2021-01-01T12"},
                   "test": {"start": "2021-01-01T15", "end": "2021-01-01T21"}}}))
    checked = succeeded(invoke("data", "check", spec))
    assert "fine grid 16×24" in checked.output and "split train" in checked.output
    inputs, targets = read_pair(spec, "train", count=2)
    assert np.isfinite(inputs).all()
    assert np.abs(inputs[:, 0] - targets[:, 0]).mean() < 1.0  # t2m: the fine field's smooth part, back again


def test_gaussian_output_is_on_the_block_grid(regular):
    block, gauss = regular.parent / "block.nc", regular.parent / "gauss.nc"
    succeeded(invoke("data", "coarsen", regular, "--out", block, "--factor", "3", "-q"))
    result = succeeded(invoke("data", "coarsen", regular, "--out", gauss, "--factor", "3", "--method", "gaussian",
                              "--variable", "t2m,u10", "-q"))
    assert "2 variable(s) (t2m, u10)" in result.output
    assert "left out (the factor does not divide the grid): rows 0 at the start, 1 at the end" in result.output
    with xr.open_dataset(block) as b, xr.open_dataset(gauss) as g:
        assert set(g.data_vars) == {"t2m", "u10"}
        np.testing.assert_array_equal(b["lat"].values, g["lat"].values)
        np.testing.assert_array_equal(b["lon"].values, g["lon"].values)
        assert "σ = 1.5 fine cells" in g.attrs["corrdiff_coarsening"]
        assert np.abs(g["t2m"] - b["t2m"]).mean() < 1.0


# --- files: what a user can get wrong ----------------------------------------------------------------------
def test_missing_file_unknown_variable_and_off_grid_variable(regular):
    out = regular.parent / "coarse.nc"
    assert "nowhere.nc: no such file" in refused(invoke("data", "coarsen", regular.parent / "nowhere.nc",
                                                        "--out", out, "--factor", "2"))
    assert "no file matches" in refused(invoke("data", "coarsen", regular.parent / "none*.nc", "--out", out,
                                               "--factor", "2"))
    message = refused(invoke("data", "coarsen", regular, "--out", out, "--factor", "2", "--variable", "t2m,q2"))
    assert "variable 'q2' not found; the files have t2m, u10, v10" in message
    with xr.open_dataset(regular) as ds:
        ds.assign(station=("time", np.arange(8.0))).to_netcdf(regular.parent / "with_series.nc")
    message = refused(invoke("data", "coarsen", regular.parent / "with_series.nc", "--out", out, "--factor", "2",
                             "--variable", "station"))
    assert "'station' (dims ('time',), float64) is not a numeric field on the grid (lat, lon)" in message
    assert not out.exists()


def test_bad_factors_are_refused_in_one_line(regular):
    out = regular.parent / "coarse.nc"
    assert "--factor 1: " in refused(invoke("data", "coarsen", regular, "--out", out, "--factor", "1"))
    message = refused(invoke("data", "coarsen", regular, "--out", out, "--factor", "9"))
    assert "--factor 9 is too large for the grid's 16 cells along lat" in message and "at most 8" in message
    assert "needs --method gaussian" in refused(invoke("data", "coarsen", regular, "--out", out, "--factor", "2",
                                                       "--sigma", "1"))
    assert not out.exists()


def test_the_output_is_never_an_input_and_replaced_only_when_it_is_an_earlier_output(regular):
    folder = regular.parent
    message = refused(invoke("data", "coarsen", regular, "--out", regular, "--factor", "2", "--overwrite"))
    assert "is a fine input" in message and "never writes over its own inputs" in message
    (folder / "link.nc").symlink_to(regular)
    assert "never writes over its own inputs" in refused(invoke("data", "coarsen", folder / "link.nc", "--out",
                                                                regular, "--factor", "2", "--overwrite"))
    other = folder / "notes.nc"
    other.write_text("not mine")
    assert "exists and is not a corrdiff coarsened file" in refused(
        invoke("data", "coarsen", regular, "--out", other, "--factor", "2", "--overwrite"))
    assert other.read_text() == "not mine"
    out = folder / "coarse.nc"
    succeeded(invoke("data", "coarsen", regular, "--out", out, "--factor", "2", "-q"))
    assert "pass --overwrite" in refused(invoke("data", "coarsen", regular, "--out", out, "--factor", "4"))
    succeeded(invoke("data", "coarsen", regular, "--out", out, "--factor", "4", "--overwrite", "-q"))
    with xr.open_dataset(out) as ds:
        assert ds.sizes["lat"] == 4
    assert sorted(p.name for p in folder.iterdir()) == ["coarse.nc", "fine.nc", "link.nc", "notes.nc"]  # no temporary
    assert "the coarse file is NetCDF" in refused(invoke("data", "coarsen", regular, "--out", folder / "c.zarr",
                                                         "--factor", "2"))


def test_nan_cells_are_counted(regular):
    with xr.open_dataset(regular) as ds:
        holes = ds.load()
    holes["t2m"][0, :4, :4] = np.nan  # one whole 4×4 block at the first time
    holes["t2m"][1, 0, 0] = np.nan    # one cell of a block: the others make its mean
    holes.to_netcdf(regular.parent / "holes.nc")
    out = regular.parent / "coarse.nc"
    result = succeeded(invoke("data", "coarsen", regular.parent / "holes.nc", "--out", out, "--factor", "4", "-q"))
    assert "t2m: 1 coarse values are NaN" in result.output and "u10:" not in result.output
    with xr.open_dataset(out) as ds:
        assert np.isnan(ds["t2m"][0, 0, 0]) and np.isfinite(ds["t2m"][1]).all()


# --- raw wrfout --------------------------------------------------------------------------------------------
WRF_SHAPE = (10, 14)  # south_north × west_east: ragged for a factor of 3 or 4
WRF_PROJECTION = {"MAP_PROJ": np.int32(1), "MAP_PROJ_CHAR": "Lambert Conformal", "TRUELAT1": np.float32(30.0),
                  "TRUELAT2": np.float32(60.0), "STAND_LON": np.float32(10.0), "MOAD_CEN_LAT": np.float32(45.0),
                  "CEN_LAT": np.float32(45.2), "CEN_LON": np.float32(10.3), "POLE_LAT": np.float32(90.0),
                  "POLE_LON": np.float32(0.0), "DX": np.float32(3000.0), "DY": np.float32(3000.0)}


def write_raw_wrfout(path: Path, times=WRF_TIMES[:3], moving: bool = False) -> Path:
    """One wrfout file as WRF writes it: Times (Time, DateStrLen) characters, XLAT/XLONG per time, staggered U
    on west_east_stag and V on south_north_stag (with their own XLAT_U, ...), the projection as global attributes;
    `moving`: a nest moving north by one row per time.

    Fields are linear in the grid indices: T2 = linear(j, i, t); U on face k (west of mass cell k) = 2k + t;
    V on face k (south of mass cell k) = −3k; HGT = 100 + 10 j."""
    ny, nx = WRF_SHAPE
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    lat, lon = 44.0 + 0.03 * j + 0.002 * i, 9.5 + 0.04 * i - 0.002 * j
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.TITLE = " OUTPUT FROM WRF V4.5 MODEL"
        nc.START_DATE = f"{pd.Timestamp(times[0]):%Y-%m-%d_%H:%M:%S}"
        nc.setncatts({**WRF_PROJECTION, "WEST-EAST_GRID_DIMENSION": np.int32(nx + 1),
                      "SOUTH-NORTH_GRID_DIMENSION": np.int32(ny + 1)})
        for dim, size in (("Time", None), ("DateStrLen", 19), ("south_north", ny), ("west_east", nx),
                          ("bottom_top", 2), ("south_north_stag", ny + 1), ("west_east_stag", nx + 1)):
            nc.createDimension(dim, size)
        chars = nc.createVariable("Times", "S1", ("Time", "DateStrLen"))
        chars[:] = netCDF4.stringtochar(np.array([f"{pd.Timestamp(t):%Y-%m-%d_%H:%M:%S}" for t in times], "S19"))

        def variable(name, dims, values, units, stagger="", description=""):
            var = nc.createVariable(name, "f4", dims)
            var.FieldType, var.MemoryOrder, var.description, var.units, var.stagger = \
                np.int32(104), "XY " if len(dims) == 3 else "XYZ", description, units, stagger
            if not name.startswith(("XLAT", "XLONG")):
                var.coordinates = {"X": "XLONG_U XLAT_U", "Y": "XLONG_V XLAT_V"}.get(stagger, "XLONG XLAT") + " XTIME"
            var[:] = np.broadcast_to(values, var.shape)

        grid, t = ("Time", "south_north", "west_east"), np.arange(len(times), dtype=float)[:, None, None]
        variable("XLAT", grid, lat + 0.03 * t * moving, "degree_north", description="LATITUDE, SOUTH IS NEGATIVE")
        variable("XLONG", grid, lon, "degree_east", description="LONGITUDE, WEST IS NEGATIVE")
        variable("XLAT_U", ("Time", "south_north", "west_east_stag"), 44.0 + 0.03 * np.arange(ny)[:, None]
                 + 0.002 * (np.arange(nx + 1) - 0.5), "degree_north", "X")
        variable("XLONG_U", ("Time", "south_north", "west_east_stag"), 9.5 + 0.04 * (np.arange(nx + 1) - 0.5)
                 - 0.002 * np.arange(ny)[:, None], "degree_east", "X")
        variable("XLAT_V", ("Time", "south_north_stag", "west_east"), 44.0 + 0.03 * (np.arange(ny + 1)[:, None] - 0.5)
                 + 0.002 * np.arange(nx), "degree_north", "Y")
        variable("XLONG_V", ("Time", "south_north_stag", "west_east"), 9.5 + 0.04 * np.arange(nx)
                 - 0.002 * (np.arange(ny + 1)[:, None] - 0.5), "degree_east", "Y")
        xtime = nc.createVariable("XTIME", "f4", ("Time",))
        xtime.units = f"minutes since {pd.Timestamp(times[0]):%Y-%m-%d %H:%M:%S}"
        xtime[:] = ((pd.DatetimeIndex(times) - times[0]) / pd.Timedelta("1min")).to_numpy()
        variable("T2", grid, linear(j, i, t), "K", description="TEMP at 2 M")
        variable("HGT", grid, 100.0 + 10.0 * j, "m", description="Terrain Height")
        variable("U", ("Time", "bottom_top", "south_north", "west_east_stag"),
                 2.0 * np.arange(nx + 1) + t[:, None], "m s-1", "X", "x-wind component")
        variable("V", ("Time", "bottom_top", "south_north_stag", "west_east"),
                 -3.0 * np.arange(ny + 1)[:, None] + 0 * t[:, None], "m s-1", "Y", "y-wind component")
    return path


def test_raw_wrfout_coarsens_destaggered_with_its_projection_and_reads_back(tmp_path):
    fine = write_raw_wrfout(tmp_path / "wrfout_d02_2021-01-01_00:00:00")
    out = tmp_path / "coarse.nc"
    result = succeeded(invoke("data", "coarsen", fine, "--out", out, "--factor", "3", "-q"))
    assert "4 variable(s) (T2, HGT, U, V), 3 time(s): 10×14 → 3×4" in result.output
    assert "destaggered to the mass points first: U, V" in result.output
    assert "rows 0 at the start, 1 at the end; columns 1 at the start, 1 at the end" in result.output
    ci, cj = np.meshgrid(block_centres(10, 3), block_centres(14, 3), indexing="ij")  # (3, 4): rows 0..8, cols 1..12
    t = np.arange(3.0)[:, None, None]
    with xr.open_dataset(out) as ds:
        assert ds["T2"].dims == ("time", "south_north", "west_east") and ds["T2"].attrs["units"] == "K"
        np.testing.assert_allclose(ds["T2"].values, linear(ci, cj, t), atol=1e-4)
        np.testing.assert_allclose(ds["U"].values, np.broadcast_to(2 * (cj + 0.5) + t[:, None], (3, 2, 3, 4)),
                                   atol=1e-5)  # the faces' mean at the mass points, then the block's
        np.testing.assert_allclose(ds["V"].values, np.broadcast_to(-3 * (ci + 0.5), (3, 2, 3, 4)), atol=1e-5)
        np.testing.assert_allclose(ds["lat"].values, 44.0 + 0.03 * ci + 0.002 * cj, atol=1e-5)
        np.testing.assert_allclose(ds["lon"].values, 9.5 + 0.04 * cj - 0.002 * ci, atol=1e-5)
        assert ds.attrs["MAP_PROJ"] == 1 and ds.attrs["TRUELAT2"] == 60.0 and ds.attrs["DX"] == 9000.0
        assert "WEST-EAST_GRID_DIMENSION" not in ds.attrs  # the fine grid's size is no longer true
        mapping = grid_mapping(ds)
        assert mapping["grid_mapping_name"] == "lambert_conformal_conic"
        assert list(mapping["standard_parallel"]) == [30.0, 60.0] and ds["T2"].attrs["grid_mapping"] == "crs"
        assert np.allclose(np.diff(ds["projection_x"]), 9000.0, rtol=0.05)  # ≈ 3 × 3 km on the projection
        assert "XLAT_U" not in ds.variables and "stagger" not in ds["U"].attrs
    # Read back as inputs are: corrdiff's readers, the channel and its level picked as a spec names them.
    spec = DatasetSpec(inputs=Source(paths=str(out), variables=["t2m", "U@0"], rename={"t2m": "T2"}))
    ds = open_files([out], "inputs")
    try:
        t2m = generic_field(spec, ds, "t2m", "inputs", in_files="T2")
        wind = generic_field(spec, ds, "U@0", "inputs")
        assert t2m.array.shape == (3, 3, 4) and t2m.lat.shape == (3, 4) and wind.array.shape == (3, 3, 4)
        assert (t2m.array["time"].values == np.asarray(WRF_TIMES[:3], "datetime64[ns]")).all()
    finally:
        ds.close()
    only = tmp_path / "hgt.nc"
    succeeded(invoke("data", "coarsen", fine, "--out", only, "--factor", "2", "--variable", "HGT", "-q"))
    with xr.open_dataset(only) as ds:
        np.testing.assert_allclose(ds["HGT"][0].values[:, 0], 100.0 + 10.0 * (2 * np.arange(5) + 0.5), atol=1e-4)


def test_a_staggered_dim_not_cut_with_its_grid_is_refused(tmp_path):
    fine = write_raw_wrfout(tmp_path / "wrfout_d02_2021-01-01_00:00:00")
    with xr.open_dataset(fine, decode_times=False) as ds:  # cut along west_east, not along west_east_stag
        ds.isel(west_east=slice(0, 8)).to_netcdf(tmp_path / "cut.nc")
    message = refused(invoke("data", "coarsen", tmp_path / "cut.nc", "--out", tmp_path / "c.nc", "--factor", "2"))
    assert "'U' has 15 points along west_east_stag, expected one more than the grid's 8 along west_east" in message
    result = succeeded(invoke("data", "coarsen", tmp_path / "cut.nc", "--out", tmp_path / "c.nc", "--factor", "2",
                              "--variable", "T2,V", "--variable", "T2", "-q"))
    assert "2 variable(s) (T2, V)" in result.output  # named twice: coarsened once


def test_coarsened_wrfout_pairs_with_its_fine_file_in_data_check(tmp_path):
    # Curvilinear coarse inputs are interpolated to the fine grid (data/regrid_curvilinear.py): the pair is usable.
    fine = write_raw_wrfout(tmp_path / "wrfout_d02_2021-01-01_00:00:00")
    succeeded(invoke("data", "coarsen", fine, "--out", tmp_path / "coarse.nc", "--factor", "2", "-q"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"inputs": {"paths": "coarse.nc", "variables": ["t2m", "u"],
                                               "rename": {"t2m": "T2", "u": "U@0"}},
                                    "targets": {"paths": fine.name, "variables": ["t2m"], "rename": {"t2m": "T2"}},
                                    "edge": "nearest"}))
    assert "fine grid 10×14" in succeeded(invoke("data", "check", spec)).output
    inputs, targets = read_pair(spec)
    assert np.isfinite(inputs).all()
    inside = (slice(None), slice(1, -1), slice(1, -1))  # T2 is linear: interpolation gives it back inside the rim
    np.testing.assert_allclose(inputs[:, 0][inside], targets[:, 0][inside], atol=0.05)


def test_a_moving_nest_coarsens_on_each_time_s_grid(tmp_path):
    fine = write_raw_wrfout(tmp_path / "wrfout_d02_2021-01-01_00:00:00", moving=True)
    out = tmp_path / "coarse.nc"
    succeeded(invoke("data", "coarsen", fine, "--out", out, "--factor", "2", "--variable", "T2", "-q"))
    ci, cj = np.meshgrid(block_centres(10, 2), block_centres(14, 2), indexing="ij")
    t = np.arange(3.0)[:, None, None]
    with xr.open_dataset(out) as ds:
        assert ds["lat"].dims == ("time", "south_north", "west_east") and "projection_x" not in ds.coords
        np.testing.assert_allclose(ds["lat"].values, 44.0 + 0.03 * (ci + t) + 0.002 * cj, atol=1e-5)
    ds = open_files([out], "inputs")
    try:
        field = generic_field(DatasetSpec(inputs=Source(paths=str(out), variables=["T2"])), ds, "T2", "inputs")
        assert field.lat.shape == (3, 5, 7)  # read as a moving input grid, interpolated per time
    finally:
        ds.close()


# --- the real file -----------------------------------------------------------------------------------------
@pytest.mark.skipif(not WRF_TIP_D2.exists(), reason=f"{REALDATA} is absent")
def test_real_wrf_nest_coarsened_by_its_ratio_lands_on_its_parent_grid(tmp_path):
    # wrf_tip_d2 is a 10 km nest of the 30 km wrf_tip_d1 (PARENT_GRID_RATIO 3): its 3×3 blocks are the parent's
    # cells, so their centres must be the parent's grid points.
    out = tmp_path / "d2_by_3.nc"
    result = succeeded(invoke("data", "coarsen", WRF_TIP_D2, "--out", out, "--factor", "3", "-q"))
    assert "1 variable(s) (T2), 2 time(s): 180×270 → 60×90" in result.output
    ds = open_files([out], "inputs")
    try:
        spec = DatasetSpec(inputs=Source(paths=str(out), variables=["T2"]))
        t2 = generic_field(spec, ds, "T2", "inputs")
        coarse = np.asarray(t2.array.values)
        assert coarse.shape == (2, 60, 90) and np.isfinite(coarse).all() and t2.array.attrs["units"] == "K"
        assert ds.attrs["DX"] == 30000.0 and grid_mapping(ds)["grid_mapping_name"] == "lambert_conformal_conic"
    finally:
        ds.close()
    with xr.open_dataset(WRF_TIP_D2) as d2, xr.open_dataset(WRF_TIP_D1) as d1:
        fine = d2["T2"].values
        np.testing.assert_allclose(coarse, fine.reshape(2, 60, 3, 90, 3).mean(axis=(2, 4)), rtol=1e-6)
        j0, i0 = int(d2.attrs["J_PARENT_START"]) - 1, int(d2.attrs["I_PARENT_START"]) - 1
        parent_lat = np.squeeze(d1["XLAT"].values)[j0:j0 + 60, i0:i0 + 90]
        parent_lon = np.squeeze(d1["XLONG"].values)[j0:j0 + 60, i0:i0 + 90]
    np.testing.assert_allclose(t2.lat, parent_lat, atol=1e-4)
    np.testing.assert_allclose(t2.lon, parent_lon, atol=1e-4)
    # Paired with the nest itself as targets: data check passes, and the coarse T2 interpolated back is close.
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"inputs": {"paths": out.name, "variables": ["T2"]},
                                    "targets": {"paths": str(WRF_TIP_D2), "variables": ["T2"]}, "edge": "nearest"}))
    assert "fine grid 180×270" in succeeded(invoke("data", "check", spec)).output
    inputs, targets = read_pair(spec)
    assert np.isfinite(inputs).all() and np.abs(inputs - targets).mean() < 1.0  # K (0.59 when written)


@pytest.mark.skipif(not KATRINA.exists(), reason=f"{REALDATA} is absent")
def test_real_moving_nest_coarsens_on_each_time_s_grid(tmp_path):
    out = tmp_path / "katrina_by_4.nc"
    result = succeeded(invoke("data", "coarsen", KATRINA, "--out", out, "--factor", "4", "--variable", "T2,U", "-q"))
    assert "48×48 → 12×12" in result.output and "destaggered to the mass points first: U" in result.output
    with xr.open_dataset(out) as ds, xr.open_dataset(KATRINA) as fine:
        lat = fine["XLAT"].values  # (Time, 48, 48), moving
        np.testing.assert_allclose(ds["lat"].values, lat.reshape(4, 12, 4, 12, 4).mean(axis=(2, 4)), atol=1e-5)
        assert ds.attrs["DX"] == 4 * fine.attrs["DX"] and grid_mapping(ds)["grid_mapping_name"] == "mercator"
