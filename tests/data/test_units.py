"""Input units (issue 11 item 7): conversions with known answers, inputs read in the units the model was trained
with, training ranges in the statistics and the checkpoint, and generation through the real CLI."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from corrdiff import checkpoint as ckpt
from corrdiff.data import compute_stats, PairedFields
from corrdiff.data.stats import ChannelRange
from corrdiff.data.units import conversion, STANDARD_GRAVITY
from corrdiff.errors import DataError
from corrdiff.inference import checks
from tests.cli_runner import invoke, TINY_RUN
from tests.data import fixtures

KELVIN = 273.15


# --- the conversions ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("found, expected, scale, offset", [
    ("degC", "K", 1.0, KELVIN),
    ("K", "degC", 1.0, -KELVIN),
    ("hPa", "Pa", 100.0, 0.0),
    ("km h-1", "m s-1", 1 / 3.6, 0.0),
    ("m/s", "m s-1", 1.0, 0.0),  # a spelling, not a conversion
    ("dBZ", "dBZ", 1.0, 0.0),  # unknown to pint, but the same
])
def test_compatible_units_convert_linearly(found, expected, scale, offset):
    change = conversion(found, expected)
    assert change is not None
    assert change.scale == pytest.approx(scale, rel=1e-12) and change.offset == pytest.approx(offset, abs=1e-9)


def test_geopotential_and_height_convert_through_g_only_for_geopotential():
    to_height = conversion("m2 s-2", "m", geopotential=True)
    assert to_height.scale == pytest.approx(1 / STANDARD_GRAVITY) and to_height.offset == 0
    assert conversion("gpm", "m**2 s**-2", geopotential=True).scale == pytest.approx(STANDARD_GRAVITY)
    assert conversion("m2 s-2", "m") is None  # a turbulent kinetic energy is no height


@pytest.mark.parametrize("found, expected", [("m s-1", "K"), ("Pa", "K"), ("dBZ", "K"), ("K", "mm h-1")])
def test_incompatible_units_have_no_conversion(found, expected):
    assert conversion(found, expected) is None


# --- reading inputs in the trained units --------------------------------------------------------------------------
def coarse_with_pressure_and_geopotential(times=fixtures.TIMES) -> xr.Dataset:
    """The fixtures' coarse store plus surface pressure (Pa) and geopotential (m2 s-2), as ERA5 gives them."""
    ds = fixtures.coarse_dataset(times)
    ds["sp"] = (ds["t2m"] * 300).assign_attrs(units="Pa")  # ~ 9e4 Pa
    ds["z"] = (ds["t"] * 200 * STANDARD_GRAVITY).assign_attrs(units="m2 s-2", standard_name="geopotential")
    return ds


def in_other_units(ds: xr.Dataset, drop_units: tuple[str, ...] = ()) -> xr.Dataset:
    """The same fields as a forecast might give them: °C, hPa, km/h, geopotential height in gpm (float64)."""
    other = ds.copy()
    for name, (scale, offset, units) in {"t2m": (1, -KELVIN, "degC"), "t": (1, -KELVIN, "degC"),
                                         "sp": (0.01, 0, "hPa"), "u10": (3.6, 0, "km h-1"),
                                         "z": (1 / STANDARD_GRAVITY, 0, "gpm")}.items():
        attrs = {k: v for k, v in ds[name].attrs.items() if k != "units"}
        values = ds[name].astype(np.float64) * scale + offset
        values.attrs = attrs if name in drop_units else {**attrs, "units": units}
        other[name] = values
    return other


@pytest.fixture
def two_sources(tmp_path):
    """A spec on the original coarse store and one on the same fields in other units."""
    fixtures.write_generic(tmp_path)
    coarse_with_pressure_and_geopotential().to_netcdf(tmp_path / "coarse.nc")
    in_other_units(coarse_with_pressure_and_geopotential()).to_netcdf(tmp_path / "forecast.nc")
    original = fixtures.write_spec(tmp_path)
    raw = yaml.safe_load(original.read_text())
    raw["inputs"]["variables"] = ["t2m", "u10", "t@850", "sp", "z@500"]
    original.write_text(yaml.safe_dump(raw))
    raw["inputs"]["paths"] = "forecast.nc"
    forecast = tmp_path / "forecast.yaml"
    forecast.write_text(yaml.safe_dump(raw))
    return original, forecast


def test_inputs_in_other_units_are_read_in_the_trained_units(two_sources):
    original, forecast = two_sources
    trained = PairedFields(original)
    units = dict(zip(trained.input_channels, trained.input_units))
    assert units == {"t2m": "K", "u10": "m s-1", "t@850": "K", "sp": "Pa", "z@500": "m2 s-2", "orography": "m"}
    converted = PairedFields(forecast, with_target=False, input_units=units)
    assert converted.input_units == trained.input_units
    times = trained.times()
    expected, found = trained.read_inputs(times), converted.read_inputs(times)
    np.testing.assert_allclose(found, expected, rtol=2e-7, atol=0)  # float32 round-off
    # Without the trained units the forecast is read as it is: the conversion is what made them equal.
    raw = PairedFields(forecast, with_target=False).read_inputs(times)
    assert np.abs(raw[:, 0] - expected[:, 0]).min() == pytest.approx(KELVIN, abs=1e-3)


def test_the_spec_units_convert_too(two_sources):
    original, _ = two_sources
    raw = yaml.safe_load(original.read_text())
    raw["units"] = {"t2m": "degC", "sp": "hPa"}
    original.write_text(yaml.safe_dump(raw))
    fields = PairedFields(original)
    times = fields.times()[:2]
    inputs = fields.read_inputs(times)
    kelvin = fixtures.coarse_dataset()["t2m"].values
    assert inputs[:, 0].min() > kelvin.min() - KELVIN - 1 and inputs[:, 0].max() < kelvin.max() - KELVIN + 1
    assert fields.input_units[:4] == ["degC", "m s-1", "K", "hPa"]
    assert fields.read_targets(times)[:, 0].min() > 0  # the targets' t2m: also in degC now, ~ 0..40
    assert fields.read_targets(times)[:, 0].max() < 60


def test_incompatible_units_name_file_variable_and_both_units(two_sources):
    original, forecast = two_sources
    units = dict(zip(PairedFields(original).input_channels, PairedFields(original).input_units))
    with pytest.raises(DataError, match=r"forecast.nc: inputs variable 'sp' has units 'hPa', which cannot be "
                                        r"converted to 'K' \(the units the model was trained with\)"):
        PairedFields(forecast, with_target=False, input_units=units | {"sp": "K"})


def test_missing_units_are_assumed_with_one_warning(two_sources, tmp_path, caplog):
    original, forecast = two_sources
    trained = PairedFields(original)
    in_other_units(coarse_with_pressure_and_geopotential(), drop_units=("t2m", "sp")).to_netcdf(tmp_path / "forecast.nc")
    logging.getLogger("corrdiff").propagate = True  # the CLI, run by an earlier test, may have turned it off
    with caplog.at_level(logging.WARNING, logger="corrdiff"):
        fields = PairedFields(forecast, with_target=False, input_units=dict(zip(trained.input_channels,
                                                                                trained.input_units)))
    warnings = [r.getMessage() for r in caplog.records if "without a `units` attribute" in r.getMessage()]
    assert len(warnings) == 1 and "t2m (K), sp (Pa)" in warnings[0] and "forecast.nc" in warnings[0], warnings
    assert fields.input_units[0] == "K"  # assumed: the values stay °C, which the range check then flags


# --- training ranges ------------------------------------------------------------------------------------------------
def test_statistics_record_each_input_range(two_sources):
    original, _ = two_sources
    stats = compute_stats(original, "train", progress=False, save=False)
    fields = PairedFields(original)
    values = fields.read_inputs(fields.times("train"))
    ranges = stats.info["input_ranges"]
    assert list(ranges) == fields.input_channels
    for c, name in enumerate(fields.input_channels):
        found = ChannelRange.from_dict(ranges[name])
        assert found.min == pytest.approx(values[:, c].min()) and found.max == pytest.approx(values[:, c].max())
        assert found.min <= found.low <= found.high <= found.max
        assert found.low == pytest.approx(np.percentile(values[:, c], 0.1), rel=1e-6)
    assert stats.info["input_units"]["sp"] == "Pa"


def test_out_of_range_is_one_line_per_channel():
    trained = ChannelRange(min=250.0, max=300.0, low=255.0, high=295.0)
    celsius = np.linspace(-20, 25, 100)
    line = checks.out_of_range("t@850", celsius, trained, "K", np.datetime64("2021-01-01T06"), "run/diffusion")
    assert line.count("\n") == 0 and "'t@850'" in line and "100%" in line and "250 … 300 K" in line
    assert checks.out_of_range("t@850", celsius + KELVIN, trained, "K", "t", "c") is None
    assert checks.out_of_range("t@850", np.r_[celsius[:1], np.full(199, 280.0)], trained, "K", "t", "c") is None


# --- through the CLI: a trained run, and forecasts in other units --------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("units")
    spec = fixtures.write_generic(root / "data")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"data": str(spec), "run_dir": str(root / "run"), **TINY_RUN}))
    for kind in ("regression", "diffusion"):
        result = invoke("train", kind, config, "--quiet")
        assert result.exit_code == 0, result.output
    yield config
    torch.set_num_threads(threads)


def generate_from(config: Path, forecast: xr.Dataset, out: Path):
    forecast.to_netcdf(out.with_suffix(".input.nc"))
    return invoke("generate", config, "--input", out.with_suffix(".input.nc"), "--out", out, "--quiet")


def test_checkpoint_records_input_units_and_ranges(trained):
    meta = ckpt.load_model(trained.parent / "run" / "diffusion").meta
    assert meta.input_units == ("K", "m s-1", "K", "m")
    assert len(meta.input_ranges) == 4 and meta.input_ranges[0].min > 250  # t2m in K


def test_forecast_in_celsius_gives_the_ensemble_of_the_same_forecast_in_kelvin(trained, tmp_path):
    kelvin = fixtures.coarse_dataset().astype(np.float64)
    celsius = kelvin.copy()
    for name in ("t2m", "t"):
        celsius[name] = (kelvin[name] - KELVIN).assign_attrs(units="degC")
    in_kelvin = generate_from(trained, kelvin, tmp_path / "k.nc")
    assert in_kelvin.exit_code == 0, in_kelvin.output
    result = generate_from(trained, celsius, tmp_path / "c.nc")
    assert result.exit_code == 0, result.output
    assert "outside the range" not in result.output
    with xr.open_dataset(tmp_path / "k.nc") as a, xr.open_dataset(tmp_path / "c.nc") as b:
        for name in ("t2m", "u10", "refl"):
            # float64 °C + 273.15, cast to float32 as every input is: the same inputs, the same ensemble
            np.testing.assert_array_equal(b[name].values, a[name].values)


def test_forecast_far_outside_the_training_range_warns_once_per_channel(trained, tmp_path):
    celsius = fixtures.coarse_dataset()
    celsius["t"] = celsius["t"] - KELVIN
    celsius["t"].attrs = {}  # °C, and no units attribute to say so
    result = generate_from(trained, celsius, tmp_path / "c.nc")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assumed = [line for line in lines if "without a `units` attribute" in line]
    outside = [line for line in lines if "outside the range" in line]
    assert len(assumed) == 1 and "t@850 (K)" in assumed[0], result.output
    assert len(outside) == 1 and "'t@850'" in outside[0] and "units" in outside[0], result.output


def test_checkpoint_without_units_and_ranges_still_loads(trained, tmp_path):
    folder = ckpt.resolve(trained.parent / "run" / "diffusion")
    old = tmp_path / folder.name
    shutil.copytree(folder, old)
    meta = json.loads((old / ckpt.MODEL_META).read_text())
    del meta["input_units"], meta["input_ranges"]
    (old / ckpt.MODEL_META).write_text(json.dumps(meta))
    loaded = ckpt.load_model(old)
    assert loaded.meta.input_units == () and loaded.meta.input_ranges == ()
    assert checks.trained_input_units(loaded.meta) is None
    assert checks.InputRanges(loaded.meta).check(np.zeros((4, 16, 24), np.float32), "t") == []
    assert ckpt.CheckpointMeta.from_json(loaded.meta.to_json()).to_json() == loaded.meta.to_json()
