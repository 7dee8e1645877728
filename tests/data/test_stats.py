"""Statistics: NaN/inf counted per channel in the one pass over the data, the spec's nan_policy applied there,
and the statistics file never written over the data or over an earlier file without `overwrite`."""

import numpy as np
import pytest
import yaml

from corrdiff.data import compute_stats, DataError, PairedFields
from corrdiff.data.stats import is_stats_file, NonFinite
from corrdiff.errors import OutputError
from tests.data import fixtures


@pytest.fixture
def holed(tmp_path):
    """A spec whose target t2m has inf at one pixel of 2021-01-01T06 and NaN at two of T09."""
    spec = fixtures.write_generic(tmp_path)
    fine = fixtures.fine_dataset()
    fine["t2m"][2, 3, 4] = np.inf
    fine["t2m"][3, 0, :2] = np.nan
    fine.to_netcdf(tmp_path / "fine_holed.nc")
    raw = yaml.safe_load(spec.read_text())
    raw["targets"]["paths"] = "fine_holed.nc"
    spec.write_text(yaml.safe_dump(raw))
    return spec


def with_policy(spec, policy):
    raw = yaml.safe_load(spec.read_text())
    raw["nan_policy"] = policy
    spec.write_text(yaml.safe_dump(raw))
    return spec


def test_nonfinite_counts_values_and_times_and_finds_the_first():
    lat, lon = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
    values = np.zeros((3, 2, 3, 4))
    values[1, 1, 2, 3] = np.nan
    values[2, 1, 0, 0] = -np.inf
    counts = NonFinite(["input 'a'", "target 'b'"], ["a.nc", "b.nc"])
    clean = counts.add(np.array(["T0", "T1", "T2"]), values, lat, lon)
    assert clean.tolist() == [True, False, False]
    assert counts.values.tolist() == [0, 2] and counts.times.tolist() == [0, 2] and counts.total == 2
    (line,) = counts.lines(3)
    assert line.startswith("target 'b': 2 NaN/inf values in 2 of 3 times, first at T1 (b.nc; 1 NaN/inf values, "
                           "first at y=2, x=3")


def test_error_policy_names_file_variable_time_and_counts(holed):
    with pytest.raises(DataError, match=r"spec.yaml: split 'train' has NaN/inf values and `nan_policy` is 'error': "
                                        r"target 't2m': 3 NaN/inf values in 2 of 9 times, first at "
                                        r"2021-01-01T06:00:00 \(.*fine_holed.nc; 1 NaN/inf values, first at y=3, x=4"):
        compute_stats(holed, progress=False)
    assert not (holed.parent / "stats.json").exists()


def test_fill_counts_and_keeps_every_time(holed):
    stats = compute_stats(with_policy(holed, "fill"), progress=False)
    assert stats.info["nonfinite"]["target"]["t2m"] == 3 and stats.info["nonfinite"]["input"]["t2m"] == 0
    assert stats.info["nonfinite_times"]["target"]["t2m"] == 2
    assert stats.info["times"] == 9 and stats.info["dropped_times"] == 0 and stats.info["nan_policy"] == "fill"
    assert np.isfinite(stats.target.mean).all()


def test_drop_leaves_the_times_out_of_the_statistics_as_training_does(holed):
    stats = compute_stats(with_policy(holed, "drop"), progress=False, save=False)
    assert stats.info["times"] == 7 and stats.info["dropped_times"] == 2
    fields = PairedFields(holed)
    times = fields.times("train")
    kept = np.delete(times, [2, 3])
    expected = fields.read_targets(kept)[:, 0].astype(np.float64).mean()
    np.testing.assert_allclose(stats.target.mean[0], expected, rtol=1e-9)


def test_the_statistics_file_is_replaced_only_with_overwrite_and_never_over_the_data(tmp_path):
    spec = fixtures.write_generic(tmp_path)
    compute_stats(spec, progress=False)
    assert is_stats_file(tmp_path / "stats.json") and not is_stats_file(tmp_path / "fine.nc")
    with pytest.raises(OutputError, match=r"stats.json exists \(a corrdiff statistics file\); pass --overwrite"):
        compute_stats(spec, progress=False)
    compute_stats(spec, progress=False, overwrite=True)
    compute_stats(spec, progress=False, save=False)  # nothing written: nothing checked
    raw = yaml.safe_load(spec.read_text())
    raw["stats"] = "static.nc"
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(OutputError, match=r"static.nc is a file of the dataset spec .*never writes over"):
        compute_stats(spec, progress=False, overwrite=True)
