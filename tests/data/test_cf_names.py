"""CF names of output channels (issue 21, item 7): the table's standard names are real CF names with the canonical
units it says, the variable's units pick among a name's quantities, the files' own attributes win, and every
channel of an ensemble file gets a long_name (and a standard_name where one is known)."""

import numpy as np
import pytest

from corrdiff import ensemble_file
from corrdiff.data import units
from corrdiff.data.cf_names import cf_name, KNOWN, with_cf_names


def test_every_standard_name_is_in_the_cf_table_with_its_canonical_units():
    util = pytest.importorskip("compliance_checker.cf.util", reason="compliance-checker is in the test extra")
    table = util.StandardNameTable()
    for name, candidates in KNOWN.items():
        for c in candidates:
            assert c.standard_name in table._names, f"{name}: {c.standard_name} is not a CF standard name (entry)"
            canonical = table[c.standard_name].canonical_units
            assert units.conversion(c.canonical_units, canonical) is not None, (name, c.canonical_units, canonical)


@pytest.mark.parametrize("channel, channel_units, standard_name", [
    ("t2m", "K", "air_temperature"), ("T2", "degC", "air_temperature"), ("u10", "m s-1", "eastward_wind"),
    ("V10", "km h-1", "northward_wind"), ("msl", "hPa", "air_pressure_at_mean_sea_level"),
    ("sp", "Pa", "surface_air_pressure"), ("REFL_10CM", "dBZ", "equivalent_reflectivity_factor"),
    ("tp", "kg m-2", "precipitation_amount"), ("tp", "kg m-2 s-1", "precipitation_flux"),
    ("tp", "mm", "lwe_thickness_of_precipitation_amount"), ("tp", "mm h-1", "lwe_precipitation_rate"),
    ("z", "m2 s-2", "geopotential"), ("z", "m", "geopotential_height"), ("gh", None, "geopotential_height"),
    ("q2", "kg kg-1", "humidity_mixing_ratio"), ("rh", "%", "relative_humidity"), ("t@850", "K", "air_temperature"),
    ("t2m", "m s-1", None), ("mystery", "K", None),
])
def test_the_units_pick_the_quantity(channel, channel_units, standard_name):
    known = cf_name(channel, channel_units)
    assert (known.standard_name if known else None) == standard_name


def test_file_attributes_win_and_unknown_channels_are_named_by_themselves():
    own = {"units": "K", "long_name": "temperature at 2 m", "standard_name": "air_temperature"}
    assert with_cf_names("t2m", own) == own
    assert with_cf_names("t2m", {"units": "K", "long_name": "mine"}) == {
        "units": "K", "long_name": "mine", "standard_name": "air_temperature"}
    assert with_cf_names("mystery", {"units": "1"}) == {"units": "1", "long_name": "mystery"}
    assert with_cf_names("refl@max", {"units": "dBZ"})["long_name"] == "column maximum of radar reflectivity"
    assert with_cf_names("t@850", {"units": "K"})["long_name"] == "air temperature at level 850"
    assert with_cf_names("t@top", {"units": "K"})["long_name"] == "t@top"  # no spec level: named by itself


def test_every_channel_of_an_ensemble_file_has_names():
    lat, lon = np.meshgrid(np.linspace(20, 21, 3), np.linspace(120, 121, 4), indexing="ij")
    ds = ensemble_file.template(np.array(["2021-01-01"], dtype="datetime64[ns]"), 2, lat, lon,
                                ["t2m", "refl", "mystery"],
                                {"t2m": {"units": "K"}, "refl": {"units": "dBZ", "long_name": "radar reflectivity "
                                                                                             "at 1 km"}})
    assert ds["t2m"].attrs["standard_name"] == "air_temperature"
    assert ds["t2m"].attrs["long_name"] == "2 m air temperature"
    assert ds["t2m_regression"].attrs["standard_name"] == "air_temperature"
    assert ds["t2m_regression"].attrs["long_name"] == "regression mean of 2 m air temperature"
    assert ds["refl"].attrs["long_name"] == "radar reflectivity at 1 km"  # the file's own
    assert ds["refl"].attrs["standard_name"] == "equivalent_reflectivity_factor"
    assert ds["mystery"].attrs["long_name"] == "mystery" and "standard_name" not in ds["mystery"].attrs
