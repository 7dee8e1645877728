"""Files as the real sources write them (issue 11): raw WRF output, ERA5 from the CDS, GFS GRIB2 as downloaded,
names that differ between sources, targets on a regular lat/lon grid, and inputs that stop just inside the
fine domain. The example specs are read from docs/data-format.md, so the page and the code agree."""

import logging

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from corrdiff.data import DataError, load_spec, open_targets, PairedFields
from tests.data import real_layouts as rl


def edit(path, change):
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def assert_inputs_are_exact(fields: PairedFields, times, atol=2e-3):
    """The inputs are linear in lat/lon/time, so interpolation must give the analytic values at the fine points."""
    inputs = fields.read_inputs(times)
    for c, channel in enumerate(fields.input_channels):
        scale = max(1.0, abs(rl.COEFFS[channel][0]) * 1e-5)  # z is ~5e4 m² s⁻²: relative tolerance there
        np.testing.assert_allclose(inputs[:, c], rl.expected(channel, fields.lat, fields.lon, times),
                                   atol=atol * scale, err_msg=channel)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """One folder with every source the doc's specs name: era5/, wrf/, analysis/, gfs/."""
    root = tmp_path_factory.mktemp("real")
    rl.write_era5_cds(root / "era5")
    rl.write_wrfout(root / "wrf")
    rl.write_latlon_targets(root / "analysis" / "analysis_2021-01.nc")
    rl.write_gfs(root / "gfs")
    return root


@pytest.mark.parametrize("per_file, xtime_units", [(1, True), (3, False)], ids=["one-time-per-file", "Times-only"])
def test_raw_wrf_output_is_read_as_written(tmp_path, sources, per_file, xtime_units):
    rl.write_wrfout(tmp_path / "wrf", per_file=per_file, xtime_units=xtime_units)
    (tmp_path / "era5").symlink_to(sources / "era5")
    spec = rl.write_doc_spec(tmp_path, "wrf")
    fields = PairedFields(spec)
    assert fields.target_channels == ["t2m", "u10", "v10", "refl"]
    times = fields.times("all")
    np.testing.assert_array_equal(times, rl.WRF_TIMES.values)  # from XTIME, or from Times when XTIME is not CF
    lat, lon = rl.wrf_grid()
    np.testing.assert_allclose(fields.lat, lat, atol=1e-5)  # XLAT(Time, y, x): the first time's
    targets = fields.read_targets(times)
    np.testing.assert_allclose(targets[:, 0], rl.expected("t2m", lat, lon, times) + 0.01 * np.sin(lat * 7),
                               atol=1e-3)
    np.testing.assert_array_equal(targets[:, 3], rl.wrf_reflectivity(times).max(axis=1))  # REFL_10CM@max
    assert fields.target_attrs["refl"]["units"] == "dBZ"
    assert_inputs_are_exact(fields, times)

    edit(spec, lambda raw: raw["targets"]["rename"].update(refl="REFL_10CM@0"))
    lowest = PairedFields(spec).read_targets(times[:2])[:, 3]
    np.testing.assert_array_equal(lowest, rl.wrf_reflectivity(times)[:2, 0])


def test_era5_as_the_cds_delivers_it_with_targets_on_a_lat_lon_grid(tmp_path, sources):
    spec = rl.write_doc_spec(sources, "era5", "era5.yaml")
    fields = PairedFields(spec)
    times = fields.times("train")
    np.testing.assert_array_equal(times, rl.WRF_TIMES[:5].values)  # valid_time; the inputs have more hours
    lat, lon = rl.latlon_grid()
    np.testing.assert_array_equal(fields.lat, np.broadcast_to(lat[:, None], (16, 24)))
    assert_inputs_are_exact(fields, times)
    truth = open_targets(spec, "test")  # 1-D lat/lon dims used to crash here
    assert dict(truth.sizes) == {"time": 3, "y": 16, "x": 24} and truth["lon"].shape == (16, 24)
    np.testing.assert_array_equal(truth["u10"].values, fields.read_targets(fields.times("test"))[:, 1])


def test_time_dim_names_any_other_time_axis(tmp_path, sources):
    target = xr.open_dataset(sources / "analysis" / "analysis_2021-01.nc").load()
    target.rename(time="date").to_netcdf(tmp_path / "dated.nc")
    spec = rl.write_doc_spec(sources, "era5", "dated.yaml")
    edit(spec, lambda raw: raw["targets"].update(paths=str(tmp_path / "dated.nc")))
    with pytest.raises(DataError, match=r"dated.nc: targets variable 't2m' has no time dimension \(dims \('date'"):
        PairedFields(spec)
    edit(spec, lambda raw: raw["targets"].update(time_dim="date"))
    np.testing.assert_array_equal(PairedFields(spec).times("all"), rl.WRF_TIMES.values)
    edit(spec, lambda raw: raw["targets"].update(time_dim="when"))
    with pytest.raises(DataError, match=r"dated.nc: time_dim 'when' is not a dimension of the file; it has dims "
                                        r"date, lat, lon"):
        PairedFields(spec)


def test_gfs_grib2_as_downloaded(sources, capfd):
    spec = rl.write_doc_spec(sources, "gfs", "gfs.yaml")
    fields = PairedFields(spec)
    assert fields.input_channels == ["u10", "v10", "t2m", "t@850", "z@500"]
    times = fields.times("all")
    np.testing.assert_array_equal(times, rl.WRF_TIMES.values)  # cycle + step of each file
    assert_inputs_are_exact(fields, times)  # a global 0..360 grid around a domain across the prime meridian
    assert "Traceback" not in capfd.readouterr().err  # cfgrib's skipped-variable tracebacks are kept quiet
    assert not list(sources.rglob("*.idx"))


def test_two_forecast_cycles_in_one_grib_file(tmp_path, sources):
    (path,) = rl.write_gfs(tmp_path / "gfs", one_file="gfs.t00z.t12z.pgrb2.grib2")
    with xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": "", "filter_by_keys": {
            "typeOfLevel": "heightAboveGround", "level": 2}}, decode_timedelta=False) as raw:
        assert raw["t2m"].dims[:2] == ("time", "step")  # the layout under test: cycles × steps
    (tmp_path / "wrf").symlink_to(sources / "wrf")
    spec = edit(rl.write_doc_spec(tmp_path, "gfs"), lambda raw: raw["inputs"].update(paths="gfs/*.grib2"))
    fields = PairedFields(spec)
    times = fields.times("all")
    np.testing.assert_array_equal(times, rl.WRF_TIMES.values)
    per_file = PairedFields(rl.write_doc_spec(sources, "gfs", "gfs.yaml"))
    np.testing.assert_array_equal(fields.read_inputs(times), per_file.read_inputs(times))


def test_grib_names_short_names_and_levels(tmp_path, sources):
    spec = rl.write_doc_spec(sources, "gfs", "names.yaml")
    edit(spec, lambda raw: raw["inputs"].update(variables=["2t", "t2m", "10u", "t", "gh@850"], rename={}))
    fields = PairedFields(spec)
    inputs = fields.read_inputs(fields.times("train")[:1])[0]
    np.testing.assert_array_equal(inputs[0], inputs[1])  # shortName 2t and cfgrib's t2m are one field
    np.testing.assert_allclose(inputs[3], 285.0)  # `t` alone: the single-level (surface) field
    np.testing.assert_allclose(inputs[4], rl.expected("z@850", fields.lat, fields.lon, fields.times("train")[:1])[0],
                               rtol=1e-6)
    for variables, message in (
            (["q@850"], r"(?s)gfs.t00z.pgrb2.2p50.f000: inputs variable 'q' not found; map a channel to one of "
                        r"the file's fields with `rename` under `inputs`; by kind of level, it has:\n"
                        r"  heightAboveGround: .*u10 \(10u\).*\n  isobaricInhPa: .*t@500/850/1000"),
            (["t@700"], r"(?s)inputs variable 't@700': level 700 not found; name one the file has:\n"
                        r"  isobaricInhPa: t@500/850/1000\n  surface: t"),
            (["gh"], r"inputs variable 'gh' has 3 levels \(500, 850, 1000\); name one, e.g. gh@500")):
        edit(spec, lambda raw: raw["inputs"].update(variables=variables))
        with pytest.raises(DataError, match=message):
            PairedFields(spec)


def test_names_differ_between_sources(tmp_path, sources):
    spec = rl.write_doc_spec(sources, "wrf", "plain.yaml")
    edit(spec, lambda raw: raw["targets"].pop("rename"))
    with pytest.raises(DataError, match=r"wrfout_d01_2021-01-01_00:00:00, .* …: targets variable 't2m' not found; "
                                        r"the file has PSFC, REFL_10CM, T2, Times, U10, V10; give the name it has "
                                        r"there with `rename: \{t2m: <name in the file>\}` under `targets`"):
        PairedFields(spec)
    edit(spec, lambda raw: raw["targets"].update(rename={"t2m": "T2", "u10": "U10", "v10": "V10",
                                                         "refl": "REFL_10CM@max", "q2": "Q2"}))  # unused: allowed
    assert PairedFields(spec).target_channels == ["t2m", "u10", "v10", "refl"]
    edit(spec, lambda raw: raw["inputs"].update(variables=["t@850", "t@500"], rename={"t": "T@850"}))
    with pytest.raises(DataError, match=r"inputs: .*rename: t: 'T@850' names a level, but 't@850' names its own"):
        load_spec(spec)


def block_means(fine: np.ndarray, k: int) -> np.ndarray:
    *lead, ny, nx = fine.shape
    return fine.reshape(*lead, ny // k, k, nx // k, k).mean(axis=(-3, -1))


def test_inputs_that_stop_inside_the_fine_domain_need_edge_nearest(tmp_path, caplog):
    """The perfect-model set-up: inputs are 4×4 block means of the targets, so their cell centres lie 1.5 fine
    cells inside the fine domain, and a rim of 2 fine points on each side is outside the input grid."""
    lat, lon = rl.latlon_grid()
    rl.write_latlon_targets(tmp_path / "fine.nc", lat=lat, lon=lon)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    times = rl.WRF_TIMES
    fine_t2m = rl.expected("t2m", grid_lat, grid_lon, times)
    coarse = xr.Dataset({"t2m": (("time", "lat", "lon"), block_means(fine_t2m, 4))},
                        coords={"time": times, "lat": lat.reshape(-1, 4).mean(1), "lon": lon.reshape(-1, 4).mean(1)})
    coarse.to_netcdf(tmp_path / "coarse.nc")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"inputs": {"paths": "coarse.nc", "variables": ["t2m"]},
                                    "targets": {"paths": "fine.nc", "variables": ["t2m"]}}))
    with pytest.raises(DataError, match=r"coarse.nc: 't2m': 144 of 384 fine-grid points lie outside the input grid "
                                        r"\(first at y=0, x=0: lat 44, lon -2\); the inputs cover lat 44.375..47.375, "
                                        r"lon -1.625..3.375; the fine grid spans lat 44..47.75, lon -2..3.75\. .*"
                                        r"set `edge: nearest`"):
        PairedFields(spec)
    edit(spec, lambda raw: raw.update(edge="nearest"))
    with caplog.at_level(logging.WARNING, logger="corrdiff"):
        fields = PairedFields(spec)
    assert "edge: nearest: 144 of 384 fine-grid points lie up to one input cell outside" in caplog.text
    inputs = fields.read_inputs(times[:1])[0, 0]
    exact = rl.expected("t2m", grid_lat, grid_lon, times[:1])[0]
    np.testing.assert_allclose(inputs[2:-2, 2:-2], exact[2:-2, 2:-2], atol=1e-4)  # inside: bilinear, exact
    np.testing.assert_allclose(inputs[0, 0], coarse["t2m"].values[0, 0, 0], atol=1e-4)  # corner: nearest value
    edge_row = rl.expected("t2m", np.full(20, 44.375), lon[2:-2], times[:1])[0]  # the inputs' southern centres
    np.testing.assert_allclose(inputs[:2, 2:-2], np.stack([edge_row, edge_row]), atol=1e-4)  # the rim: nearest
