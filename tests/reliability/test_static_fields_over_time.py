"""Static fields given with a time dimension: used when the same at every time, else a time must be named."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from corrdiff.data import DataError, PairedFields
from tests.data import fixtures


def write_static_over_time(folder, change: float) -> np.ndarray:
    static = fixtures.static_dataset()
    times = pd.date_range("2021-01-01", periods=3, freq="D")
    values = np.stack([static["orography"].values + change * k for k in range(3)])
    timed = xr.Dataset({"orography": (("time", *static["orography"].dims), values, {"units": "m"})},
                       coords={"time": times, **static.coords})
    (folder / "static.nc").unlink()
    timed.to_netcdf(folder / "static.nc")
    return values


def test_a_constant_static_field_over_time_is_used(tmp_path):
    fixtures.write_generic(tmp_path)
    values = write_static_over_time(tmp_path, 0.0)
    np.testing.assert_array_equal(PairedFields(tmp_path / "spec.yaml").static_values()[0], values[0])


def test_a_changing_static_field_needs_its_time_named(tmp_path):
    spec = fixtures.write_generic(tmp_path)
    values = write_static_over_time(tmp_path, 5.0)
    with pytest.raises(DataError, match=r"static variable 'orography' has 3 times and changes along them \(by up "
                                        r"to 10\); .*name its time with `time: <time>` under `static`"):
        PairedFields(spec)
    raw = yaml.safe_load(spec.read_text())
    raw["static"]["time"] = "2021-01-02"
    spec.write_text(yaml.safe_dump(raw))
    np.testing.assert_allclose(PairedFields(spec).static_values()[0], values[1])
    raw["static"]["time"] = "2021-02-01"
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=r"static variable 'orography' has no time 2021-02-01 00:00:00 \(it has 3 "
                                        r"times, 2021-01-01T00:00 … 2021-01-03T00:00\)"):
        PairedFields(spec)
