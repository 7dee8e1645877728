"""The pieces generation's guarantees rest on, at unit size: the fingerprint, the format rule, the grid check,
the writer's refusal of non-finite fields and of someone else's file."""

import numpy as np
import pytest
import xarray as xr

from corrdiff.errors import ConfigError, DataError, OutputError
from corrdiff.inference import checks, EnsembleWriter
from corrdiff.inference.fingerprint import Fingerprint, generation_fingerprint

LAT, LON = np.meshgrid(np.linspace(20, 21, 4), np.linspace(118, 119, 5), indexing="ij")
TIMES = np.datetime64("2021-01-01T00") + np.arange(3) * np.timedelta64(6, "h")


def fingerprint(**changes) -> Fingerprint:
    settings = dict(regression_sha256="a" * 64, diffusion_sha256="b" * 64, sampler={"num_steps": 18, "S_max": float("inf")},
                    seed=0, members=4, channels=["t2m"], bf16=False, patch_shape=None, patch_overlap=(8, 8),
                    times=TIMES, lat=LAT, lon=LON, input_files=[], spec_file=None, version="1")
    return generation_fingerprint(**(settings | changes))


def test_fingerprint_round_trips_through_attributes_and_names_what_changed():
    plain = fingerprint()
    assert Fingerprint.from_attrs(plain.attrs()).digest == plain.digest  # inf survives JSON
    assert fingerprint().digest == plain.digest
    assert fingerprint(patch_overlap=(4, 4)).digest == plain.digest  # unused without patches
    assert fingerprint(tf32=False).digest == plain.digest  # kept only when on: older files' digests stand
    for change, text in [({"seed": 1}, "seed: 0 → 1"), ({"diffusion_sha256": "c" * 64}, "diffusion_checkpoint_sha256"),
                         ({"lat": LAT + 0.1}, "grid_sha256"), ({"times": TIMES[:2]}, "times: "),
                         ({"patch_shape": (2, 2)}, "patch_shape: null → [2, 2]"), ({"tf32": True}, "tf32")]:
        other = fingerprint(**change)
        assert other.digest != plain.digest and text in plain.differences(other), change
    assert Fingerprint.from_attrs({"title": "x"}) is None


def test_input_files_enter_by_size_and_modification_time(tmp_path):
    data = tmp_path / "coarse.nc"
    data.write_bytes(b"1234")
    first = fingerprint(input_files=[data])
    data.write_bytes(b"12345")
    assert "input_files" in first.differences(fingerprint(input_files=[data]))


@pytest.mark.parametrize("name, configured, explicit, expected", [
    ("e.zarr", "netcdf", False, "zarr"), ("e.nc", "netcdf", False, "netcdf"), ("e.NC4", "zarr", False, "netcdf"),
    ("e", "zarr", True, "zarr"), ("e", "netcdf", False, "netcdf"),
])
def test_the_format_follows_the_suffix(name, configured, explicit, expected, tmp_path):
    assert checks.output_format(tmp_path / name, configured, explicit) == expected


def test_a_suffix_that_contradicts_an_explicit_format_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"e.zarr names a zarr file .* generate.format is 'netcdf'"):
        checks.output_format(tmp_path / "e.zarr", "netcdf", explicit=True)


def test_grid_check_names_the_largest_difference_and_wraps_longitude():
    checks.check_trained_grid(LAT, LON, "spec.yaml", "ckpt", LAT + 1e-6, LON - 360)  # 360° apart is the same place
    with pytest.raises(DataError, match=r"spec.yaml: the fine grid differs .* ckpt .*\|Δlat\| = 0.25°, max \|Δlon\| = 0°"):
        checks.check_trained_grid(LAT, LON, "spec.yaml", "ckpt", LAT + 0.25, LON)
    with pytest.raises(DataError, match=r"the fine grid is 4×5, checkpoint ckpt was trained on 5×4"):
        checks.check_trained_grid(LAT, LON, "spec.yaml", "ckpt", LAT.T, LON.T)


def writer(path, **options):
    return EnsembleWriter(path, TIMES, 2, LAT, LON, ["t2m"], {}, {}, options.pop("fmt", "netcdf"),
                          fingerprint=options.pop("fingerprint", fingerprint()), **options)


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_writer_flags_nothing_non_finite(tmp_path, fmt):
    out = tmp_path / ("e.nc" if fmt == "netcdf" else "e.zarr")
    ensemble_writer = writer(out, fmt=fmt)
    members = np.ones((2, 1, 4, 5), np.float32)
    ensemble_writer.write(0, members, members[0])
    members[1, 0, 2, 3] = np.inf
    with pytest.raises(OutputError, match=r"member 1 of 't2m' at 2021-01-01T06:00:00 came out NaN or infinite"):
        ensemble_writer.write(1, members, members[0])
    with pytest.raises(OutputError, match=r"the regression mean of 't2m' at 2021-01-01T12:00:00"):
        ensemble_writer.write(2, np.ones((2, 1, 4, 5), np.float32), np.full((1, 4, 5), np.nan, np.float32))
    assert ensemble_writer.written().tolist() == [True, False, False]
    ensemble_writer.close()
    options = {"engine": "zarr", "consolidated": False} if fmt == "zarr" else {}
    with xr.open_dataset(out, **options) as ds:
        assert ds["generation_complete"].values.tolist() == [1, 0, 0] and bool(ds["t2m"].isel(time=1).isnull().all())


def test_writer_resumes_only_its_own_generation(tmp_path):
    out = tmp_path / "e.nc"
    writer(out).close()
    writer(out).close()  # the same fingerprint: resumed
    with pytest.raises(OutputError, match=r"e.nc holds an ensemble made with other settings \(members: 4 → 5\)"):
        writer(out, fingerprint=fingerprint(members=5))
    writer(out, fingerprint=fingerprint(members=5), replace=True).close()  # a temporary file of the writer's own
    with xr.open_dataset(out) as ds:
        assert Fingerprint.from_attrs(ds.attrs).digest == fingerprint(members=5).digest


def test_first_nonfinite_field_names_the_first_bad_channel_and_what_in_it_is_bad():
    from corrdiff.inference.writer import first_nonfinite_field

    ensemble, mean = np.zeros((4, 2, 3, 3), np.float32), np.zeros((2, 3, 3), np.float32)
    assert first_nonfinite_field(ensemble, mean, ["t2m", "u10"]) is None
    ensemble[[1, 3], 1, 0, 0] = [np.nan, np.inf]
    assert first_nonfinite_field(ensemble, mean, ["t2m", "u10"]) == ("members 1, 3", "u10")
    mean[1, 2, 2] = np.nan  # the mean is named before the members of the same channel
    assert first_nonfinite_field(ensemble, mean, ["t2m", "u10"]) == ("the regression mean", "u10")
    ensemble[0, 0, 1, 1] = -np.inf  # an earlier channel comes first
    assert first_nonfinite_field(ensemble, mean, ["t2m", "u10"]) == ("member 0", "t2m")
