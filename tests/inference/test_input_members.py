"""Ensemble inputs (`number`, as ERA5's EDA, GEFS or ECMWF ENS deliver them): one member, their mean, or every
member with K diffusion members each; through the spec, `generate --input-member` and the API."""

import numpy as np
import pytest
import xarray as xr
import yaml

import corrdiff
from corrdiff.data import DataError, PairedFields
from corrdiff.inference.input_members import INPUT_MEMBER
from tests.api_fixtures import TIMES, trained, model  # noqa: F401  (fixtures)
from tests.cli_runner import invoke, refused, succeeded
from tests.data import fixtures

OFFSETS = np.array([0.0, 1.5, -2.0])  # K added to member k's temperatures (u10 follows from t2m)


def ensemble_of(coarse: xr.Dataset) -> xr.Dataset:
    """The coarse inputs as a 3-member ensemble with a `number` dimension, as the CDS writes one."""
    members = [coarse + offset for offset in OFFSETS]
    for member in members:
        for name in coarse.data_vars:
            member[name].attrs = coarse[name].attrs
    return xr.concat(members, dim=xr.DataArray(np.arange(len(OFFSETS)), dims="number", name="number"))


@pytest.fixture(scope="module")
def ensemble_file(trained):
    folder, _ = trained
    path = folder / "data" / "coarse_ens.nc"
    if not path.exists():
        with xr.open_dataset(folder / "data" / "coarse.nc") as coarse:
            ensemble_of(coarse.load()).to_netcdf(path)
    return path


def test_spec_member_picks_one_or_the_mean_and_refuses_none_naming_the_members(tmp_path):
    fixtures.write_generic(tmp_path)
    with xr.open_dataset(tmp_path / "coarse.nc") as coarse:
        ensemble_of(coarse.load()).to_netcdf(tmp_path / "coarse_ens.nc")
    plain = PairedFields(tmp_path / "spec.yaml")
    times = plain.times()[:2]
    expected = plain.read_inputs(times)
    spec = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    spec["inputs"]["paths"] = "coarse_ens.nc"
    path = tmp_path / "ens.yaml"
    for member, shift in ((1, OFFSETS[1]), ("mean", OFFSETS.mean())):
        spec["inputs"]["member"] = member
        path.write_text(yaml.safe_dump(spec))
        read = PairedFields(path).read_inputs(times)
        np.testing.assert_allclose(read[:, 0], expected[:, 0] + shift, atol=1e-4)  # t2m
    spec["inputs"]["member"] = 7
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match=r"inputs variable 't2m': no member 7; it has number 0, 1, 2"):
        PairedFields(path)
    del spec["inputs"]["member"]
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match=r"'t2m' has 3 ensemble members \(number 0, 1, 2\); choose one with "
                                        r"`member: 0`, their mean with `member: mean`, or every one with `member: all`"):
        PairedFields(path)
    spec["inputs"]["member"] = "all"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match=r"`member: all` under `inputs` downscales every input member at generation"):
        PairedFields(path)  # training, checks and statistics need one member
    spec["inputs"].update(paths="coarse.nc", member=0)
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match=r"has no ensemble dimension .* to take `member: 0` from; leave `member` out"):
        PairedFields(path)


def test_every_input_member_gives_its_own_block_of_members(model, ensemble_file):
    members = 2
    ens = model.downscale(ensemble_file, members=members, seed=3, times=TIMES, member="all")
    assert ens.sizes["member"] == members * len(OFFSETS)
    np.testing.assert_array_equal(ens[INPUT_MEMBER].values, np.repeat(np.arange(len(OFFSETS)), members))
    first = model.downscale(ensemble_file, members=members, seed=3, times=TIMES, member=0)
    np.testing.assert_array_equal(ens["t2m"].values[:, :members], first["t2m"].values)  # the same seeds
    blocks = ens["t2m"].values.reshape(len(TIMES), len(OFFSETS), members, *ens["t2m"].shape[2:])
    assert not np.allclose(blocks[:, 1], blocks[:, 2])  # other inputs, other members
    regressions = [model.regression(ensemble_file, times=TIMES, member=k)["t2m_regression"].values
                   for k in range(len(OFFSETS))]
    np.testing.assert_allclose(ens["t2m_regression"].values, np.mean(regressions, axis=0), rtol=1e-6, atol=1e-5)


def test_generate_input_member_all_equals_the_api(trained, model, ensemble_file):
    folder, config = trained
    out = folder / "ens_all.nc"
    succeeded(invoke("generate", config, "--out", out, "--input", ensemble_file, "--input-member", "all",
                     "--quiet", "--times", TIMES[0], "--times", TIMES[1]))
    api = model.downscale(ensemble_file, members=2, seed=0, times=TIMES, member="all")
    with xr.open_dataset(out) as written:
        np.testing.assert_array_equal(written["u10"].values, api["u10"].values)
        np.testing.assert_array_equal(written[INPUT_MEMBER].values, api[INPUT_MEMBER].values)
    line = refused(invoke("generate", config, "--out", folder / "x.nc", "--input", ensemble_file,
                          "--input-member", "third"))
    assert line == "error: --input-member 'third': give a member's number (e.g. 0), mean or all"


def test_api_errors_speak_of_arguments(model, ensemble_file):
    with pytest.raises(DataError, match=r"choose one with member=0, their mean with member=mean, or every one "
                                        r"with member=all$"):
        model.downscale(ensemble_file, members=1, times=TIMES[:1])
    with pytest.raises(DataError, match=r"variable 'TMP' \(channel 't2m'\) not found; .*with rename=\{'t2m': "
                                        r"'<name in the file>'\}"):
        model.downscale(ensemble_file, members=1, times=TIMES[:1], member=0, rename={"t2m": "TMP"})


def test_open_inputs_reads_as_the_spec_does_and_feeds_downscale(model, ensemble_file):
    opened = corrdiff.open_inputs(ensemble_file, ["t2m", "u10", "t@850"], member="mean")
    assert list(opened.data_vars) == ["t2m", "u10", "t@850"] and opened["t2m"].dims == ("time", "lat", "lon")
    with xr.open_dataset(ensemble_file) as raw:
        np.testing.assert_allclose(opened["t@850"].values, raw["t"].sel(level=850).mean("number").values, rtol=1e-6)
        assert opened["t2m"].attrs["units"] == "K"
    from_opened = model.downscale(opened, members=2, times=TIMES)
    from_path = model.downscale(ensemble_file, members=2, times=TIMES, member="mean")
    np.testing.assert_array_equal(from_opened["t2m"].values, from_path["t2m"].values)
    with pytest.raises(DataError, match=r"variable 'q' not found; .*with rename=\{'q': '<name in the file>'\}"):
        corrdiff.open_inputs(ensemble_file, ["q"], member=0)
    with pytest.raises(DataError, match=r"inputs .*nothere\.nc: no such file"):
        corrdiff.open_inputs(ensemble_file.parent / "nothere.nc", ["t2m"])


def test_a_model_package_downscales_every_input_member_as_the_run_does(trained, ensemble_file, tmp_path):
    folder, config = trained
    package = tmp_path / "model"
    succeeded(invoke("export", folder / "run", "--out", package))
    from_package, from_run = tmp_path / "pkg.nc", tmp_path / "run.nc"
    for out, source in ((from_package, ["--model", package]), (from_run, [config])):
        succeeded(invoke("generate", *source, "--out", out, "--input", ensemble_file, "--input-member", "all",
                         "--quiet", "--times", TIMES[0]))
    with xr.open_dataset(from_package) as a, xr.open_dataset(from_run) as b:
        assert a.sizes["member"] == 2 * len(OFFSETS)
        np.testing.assert_array_equal(a["t2m"].values, b["t2m"].values)
        np.testing.assert_array_equal(a[INPUT_MEMBER].values, b[INPUT_MEMBER].values)
