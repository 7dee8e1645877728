"""CF-1.11 compliance (issue 11, item 10; issue 21, item 7): the IOOS compliance checker finds no error in an
ensemble file written by the real writer (with and without forecast context and a WRF projection), in what
`corrdiff generate` writes from a run folder and from an exported model package on a Lambert grid (with the
standard names of `corrdiff.data.cf_names`), nor in a scores file written by `write_scores`. "Error" is the checker's high priority (weight 3); its recommendations are not asserted (the one
left on the ensemble is the member dimension's place, which CF would put before time: the layout's contract)."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

try:  # imported before eccodes (cfgrib) loads: its bundled libproj otherwise breaks pyproj, which the checker uses
    import pyproj  # noqa: F401
except ImportError:
    pass

from corrdiff import ensemble_file
from corrdiff.data.canonical import projected_xy, wrf_grid_mapping
from corrdiff.evaluation.evaluate import evaluate, write_scores
from corrdiff.inference.context import PROJECTION_ATTRS
from corrdiff.inference.fingerprint import Fingerprint
from corrdiff.inference.writer import EnsembleWriter
from tests.api_fixtures import projected, trained  # noqa: F401  (fixtures)
from tests.evaluation import evaluation_fixtures as fx

checker = pytest.importorskip("compliance_checker.runner", reason="compliance-checker is in the test extra")
pytestmark = pytest.mark.filterwarnings("ignore:The ioos_sos checker is deprecated:DeprecationWarning")

HIGH = 3  # the checker's weight of a "high priority" (must) rule


def cf_errors(path: Path) -> list[str]:
    """The CF 1.11 checker's failed high-priority rules on `path`, and any error of the checker itself."""
    suite = checker.CheckSuite()
    suite.load_all_available_checkers()
    results, crashes = suite.run_all(suite.load_dataset(str(path)), ["cf:1.11"], skip_checks=[])["cf:1.11"]
    failed = [f"{r.name}: {r.msgs}" for r in results
              if r.weight == HIGH and (r.value[0] < r.value[1] if isinstance(r.value, tuple) else not r.value)]
    return failed + [f"checker error: {crash}" for crash in crashes]


def write_ensemble(path: Path, forecast: bool, projection: bool, series: bool = False) -> Path:
    """One time of a 2-member ensemble of t2m and u, written through EnsembleWriter (`series`: with the
    `series_start` flag of members as time series)."""
    lat, lon = fx.grid((6, 8))
    times = fx.time_axis(3)
    coords, mapping = {}, None
    if forecast:
        reference = np.full(3, times[0])
        coords = {"forecast_reference_time": (("time",), reference, {"standard_name": "forecast_reference_time"}),
                  "lead_time": (("time",), (times - reference) / np.timedelta64(1, "h"),
                                {"standard_name": "forecast_period", "units": "hours"})}
    if projection:
        mapping = wrf_grid_mapping({"MAP_PROJ": 1, "TRUELAT1": 10.0, "TRUELAT2": 40.0, "STAND_LON": 120.0,
                                    "MOAD_CEN_LAT": 22.0})
        x, y = projected_xy(mapping, lat, lon)
        coords.update(projection_x=(("x",), x, PROJECTION_ATTRS["x"]), projection_y=(("y",), y, PROJECTION_ATTRS["y"]))
    if series:
        coords.update(ensemble_file.series_coords([True, False, True]))
    attrs = {"t2m": {"units": "K", "long_name": "2 m temperature", "standard_name": "air_temperature"},
             "u": fx.attrs_of("u")}
    writer = EnsembleWriter(path, times, 2, lat, lon, ["t2m", "u"], attrs, {"title": "CorrDiff downscaled ensemble"},
                            "netcdf", fingerprint=Fingerprint({"test": 1}), coords=coords, grid_mapping=mapping)
    fields = np.stack([np.full((2, *lat.shape), 280.0), np.ones((2, *lat.shape))], axis=1).astype(np.float32)
    writer.write(0, fields, fields[0])
    writer.close()
    return path


@pytest.mark.parametrize("forecast, projection, series", [(False, False, False), (True, True, False),
                                                          (True, False, True)],
                         ids=["plain", "forecast-on-wrf-grid", "forecast-members-as-time-series"])
def test_ensemble_file_has_no_cf_errors(tmp_path, forecast, projection, series):
    path = write_ensemble(tmp_path / "ens.nc", forecast, projection, series)
    assert cf_errors(path) == []


@pytest.mark.parametrize("source", ["run", "from_package"])
def test_generated_files_have_standard_names_and_no_cf_errors(projected, source):
    """Run folder and model package alike: every channel named, the projection kept, nothing CF calls an error."""
    with xr.open_dataset(projected[source]) as ds:
        assert ds["t2m"].attrs["standard_name"] == ds["t2m_regression"].attrs["standard_name"] == "air_temperature"
        assert ds["u10"].attrs["standard_name"] == "eastward_wind"
        assert ds["refl"].attrs["standard_name"] == "equivalent_reflectivity_factor"
        assert ds["t2m"].attrs["long_name"] == "2 m temperature"  # the target file's own, not the table's
        assert ds["crs"].attrs["grid_mapping_name"] == "lambert_conformal_conic"
    assert cf_errors(projected[source]) == []


@pytest.mark.parametrize("variables", [("u", "v", "vorticity"), ("u", "v")], ids=["mixed-units", "one-unit"])
def test_scores_file_has_no_cf_errors(tmp_path, variables):
    predictions, truth, _ = fx.write_case(tmp_path, times=3, members=3, shape=(16, 16), variables=variables)
    result = evaluate(predictions, truth, spectra_times=2)
    path = write_scores(result.scores, tmp_path / "scores.nc")
    assert cf_errors(path) == []


def test_the_checker_finds_what_the_issue_reported(tmp_path):
    """The same rules on a file with the faults corrdiff's files had: the check is not vacuous."""
    import netCDF4

    path = write_ensemble(tmp_path / "ens.nc", forecast=False, projection=False)
    with netCDF4.Dataset(path, "a") as nc:
        nc["y"].axis = "Y"  # an index coordinate without units
        del nc["generation_complete"].long_name
    errors = "\n".join(cf_errors(path))
    assert "must define units" in errors and "generation_complete" in errors
