"""Bad input gets an error that names the file, the variable and what was expected."""

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

from corrdiff.data import DataError, DownscalingDataset, load_spec, PairedFields
from tests.data import fixtures


def edit_spec(path, change):
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def generic(tmp_path):
    return fixtures.write_generic(tmp_path)


def test_spec_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("inputs: {paths: a.nc, variables: [t@high]}\nsplitz: {}\n")
    with pytest.raises(DataError, match=r"spec.yaml: inputs.variables: .*'t@high'.*; splitz: Extra inputs"):
        load_spec(path)
    path.write_text("inputs: {paths: a.nc, variables: [t]}\nsplits: {train: {start: 2021-02-01, end: 2021-01-01}}\n")
    with pytest.raises(DataError, match="splits.train: .*end 2021-01-01.*before start"):
        load_spec(path)
    with pytest.raises(DataError, match="missing.yaml does not exist"):
        load_spec(tmp_path / "missing.yaml")


def test_missing_files_variables_and_levels(generic):
    edit_spec(generic, lambda raw: raw["inputs"].update(paths="nowhere/*.nc"))
    with pytest.raises(DataError, match=r"inputs.paths: no file matches .*nowhere/\*.nc"):
        PairedFields(generic)
    edit_spec(generic, lambda raw: raw["inputs"].update(paths="coarse.nc", variables=["t2m", "q"]))
    with pytest.raises(DataError, match=r"coarse.nc: inputs variable 'q' not found; the file has t, t2m, u10"):
        PairedFields(generic)
    edit_spec(generic, lambda raw: raw["inputs"].update(variables=["t@700"]))
    with pytest.raises(DataError, match=r"coarse.nc: inputs variable 't@700': level 700 not found; level has 500, 850"):
        PairedFields(generic)
    edit_spec(generic, lambda raw: raw["inputs"].update(variables=["t"]))
    with pytest.raises(DataError, match=r"'t' has 2 levels \(500, 850\); name one, e.g. t@500"):
        PairedFields(generic)


def test_units_that_disagree_with_the_spec(generic):
    # Compatible units (degC for K) are converted (tests/data/test_units.py); incompatible ones are refused.
    edit_spec(generic, lambda raw: raw.update(units={"t2m": "m s-1", "u10": "m/s"}))
    with pytest.raises(DataError, match=r"coarse.nc: inputs variable 't2m' has units 'K', which cannot be converted "
                                        r"to 'm s-1' \(the spec's `units`\)"):
        PairedFields(generic)
    edit_spec(generic, lambda raw: raw.update(units={"t2m": "K", "u10": "m/s"}))  # m/s and m s-1 are the same unit
    PairedFields(generic)


def test_time_matching_is_exact_and_lists_unmatched_times(tmp_path):
    fixtures.write_generic(tmp_path)
    coarse = fixtures.coarse_dataset()
    shifted = coarse.assign_coords(time=coarse.time + np.timedelta64(30, "m"))
    shifted.to_netcdf(tmp_path / "shifted.nc")
    spec = fixtures.write_spec(tmp_path, inputs="shifted.nc")
    with pytest.raises(DataError, match=r"shifted.nc: input 't2m' has no data at 9 target time\(s\) of split 'train': "
                                        r"2021-01-01T00:00:00, 2021-01-01T03:00:00"):
        PairedFields(spec).times("train")
    late = fixtures.write_spec(tmp_path, splits={"train": {"start": "2030-01-01", "end": "2030-02-01"}})
    with pytest.raises(DataError, match=r"no time within 2030-01-01T00:00 … 2030-02-01T00:00 .*the data covers inputs \(t2m\) 2021-01-01T00:00:00 … 2021-01-02T09:00:00; targets"):
        PairedFields(late).times("train")
    with pytest.raises(DataError, match=r"no split 'valid'; the spec has \['train'\]"):
        PairedFields(late).times("valid")


def test_grids_that_do_not_overlap(tmp_path):
    fixtures.write_generic(tmp_path)
    coarse = fixtures.coarse_dataset()
    coarse.assign_coords(latitude=coarse.latitude - 60).to_netcdf(tmp_path / "south.nc")
    with pytest.raises(DataError, match=r"south.nc: 't2m': the input and target grids do not overlap"):
        PairedFields(fixtures.write_spec(tmp_path, inputs="south.nc"))


def test_nan_policies(tmp_path):
    fixtures.write_generic(tmp_path)
    coarse = fixtures.coarse_dataset()
    coarse["u10"][2, 5:8, 7:9] = np.nan  # the third time; a patch inside the fine domain
    coarse.to_netcdf(tmp_path / "holes.nc")
    spec = fixtures.write_spec(tmp_path, inputs="holes.nc")
    fixtures.write_generic(tmp_path / "stats-source")
    stats = DownscalingDataset(tmp_path / "stats-source" / "spec.yaml", "train").stats
    dataset = DownscalingDataset(spec, "train", stats=stats)
    dataset[1]
    with pytest.raises(DataError, match=r"holes.nc: input 'u10' at 2021-01-01T06:00:00: \d+ NaN/inf values, first at "
                                        r"y=\d+, x=\d+ \(lat .*\); set `nan_policy: fill`"):
        dataset[2]
    edit_spec(spec, lambda raw: raw.update(nan_policy="fill"))
    filled = DownscalingDataset(spec, "train", stats=stats)[2].input
    assert torch_isfinite(filled) and (filled[1] == 0).any()  # filled with the channel mean (0 once normalised)
    edit_spec(spec, lambda raw: raw.update(nan_policy="drop"))
    dropped = DownscalingDataset(spec, "train", stats=stats)
    assert len(dropped) == len(dataset) - 1 and np.datetime64("2021-01-01T06") not in dropped.times


def torch_isfinite(tensor) -> bool:
    return bool(tensor.isfinite().all())


def test_statistics_for_other_channels_are_refused(generic):
    DownscalingDataset(generic, "train")  # computes and saves stats.json
    edit_spec(generic, lambda raw: raw["inputs"].update(variables=["t2m", "u10"]))
    with pytest.raises(DataError, match=r"stats.json: the statistics are for input channels .*'t@850'.*recompute"):
        DownscalingDataset(generic, "train")


def test_cli_reports_data_errors_in_one_line(generic):
    from corrdiff.cli import app

    edit_spec(generic, lambda raw: raw["inputs"].update(variables=["nope"]))
    result = CliRunner().invoke(app, ["data", "stats", str(generic), "--quiet"])
    assert result.exit_code == 2
    assert "coarse.nc: inputs variable 'nope' not found" in result.output


def test_cli_stats_and_check(generic):
    from corrdiff.cli import app

    result = CliRunner().invoke(app, ["data", "stats", str(generic), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (generic.parent / "stats.json").exists() and "target refl" in result.output
    result = CliRunner().invoke(app, ["data", "check", str(generic)])
    assert result.exit_code == 0, result.output
    assert "split train" in result.output and "16×24" in result.output
