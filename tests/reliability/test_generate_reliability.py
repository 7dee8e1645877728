"""`corrdiff generate` never leaves a stale, mixed, NaN or mismatched ensemble behind an exit code 0.

Each test provokes one failure where the user meets it, on the command line: a rerun with other settings,
a full disk (injected at the netCDF4 / Zarr level), a member that comes out NaN, checkpoints that do not
belong together or do not fit the data, an output path that is an input or someone else's file.
"""

import errno
import hashlib
import importlib
import json
import os
import shutil

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml
from zarr.storage import LocalStore

from corrdiff.inference import Fingerprint
from tests.cli_runner import invoke, refused, succeeded, TINY_RUN
from tests.data import fixtures

CONFIG = {"data": "data/spec.yaml", "run_dir": "run", **TINY_RUN}

downscaling_module = importlib.import_module("corrdiff.inference.downscaling")  # where downscale_time calls downscale
sampler_module = importlib.import_module("corrdiff.diffusion.sampler")  # where generation calls sample_ensemble
writer_module = importlib.import_module("corrdiff.inference.writer")

FIELDS = ["t2m", "u10", "refl", "t2m_regression", "u10_regression", "refl_regression"]
TIMES = ["2021-01-02T03:00:00", "2021-01-02T06:00:00", "2021-01-02T09:00:00"]  # the spec's test split


def generate(config, out, *options):
    return invoke("generate", config, "--out", out, "--quiet", *options)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def open_ensemble(path) -> xr.Dataset:
    """A NetCDF file or a Zarr store, consolidated or not (a store is consolidated once complete)."""
    return xr.open_dataset(path, **({"engine": "zarr", "consolidated": False} if str(path).endswith(".zarr") else {}))


def fields(path) -> dict[str, np.ndarray]:
    with open_ensemble(path) as ds:
        return {name: ds[name].values for name in FIELDS}


def assert_same_fields(path, reference):
    got, expected = fields(path), fields(reference)
    for name in FIELDS:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset spec on files, a run config, and both models trained for two steps through the CLI."""
    folder = tmp_path_factory.mktemp("reliability")
    fixtures.write_generic(folder / "data")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    for kind in ("regression", "diffusion"):
        succeeded(invoke("train", kind, config, "--quiet"))
    return folder, config


@pytest.fixture(scope="module")
def reference(trained):
    """The ensemble of an uninterrupted run (3 times, 2 members)."""
    folder, config = trained
    succeeded(generate(config, folder / "reference.nc"))
    return folder / "reference.nc"


def edit_one_value(path, name: str = "t2m") -> None:
    """Change the first value of `name` in a NetCDF file in place, keeping its size: the float's own bytes are
    rewritten (opening the file for writing is not possible while this process's xarray holds it open)."""
    with xr.open_dataset(path) as ds:
        first = np.float32(ds[name].values.flat[0])
    data = bytearray(path.read_bytes())
    at = data.find(first.tobytes())
    assert at >= 0, f"{name}'s first value not found in {path}"
    data[at:at + 4] = np.float32(first + 1.0).tobytes()
    path.write_bytes(bytes(data))


def copy_of_reference(reference, tmp_path):
    out = tmp_path / "e.nc"
    shutil.copy2(reference, out)
    return out


# --- 1. the fingerprint: no stale or mixed ensemble ---------------------------------------------------------
def test_the_file_records_a_fingerprint_of_everything_that_makes_its_values(trained, reference):
    with xr.open_dataset(reference) as ds:
        attrs = dict(ds.attrs)
    recorded = Fingerprint.from_attrs(attrs)
    assert recorded is not None and attrs["corrdiff_fingerprint"] == recorded.digest and len(recorded.digest) == 64
    ingredients = json.loads(attrs["corrdiff_fingerprint_ingredients"])
    assert ingredients["regression_checkpoint_sha256"] == attrs["regression_checkpoint_sha256"]
    assert ingredients["diffusion_checkpoint_sha256"] == attrs["diffusion_checkpoint_sha256"]
    assert ingredients["seed"] == 0 and ingredients["members"] == 2 and ingredients["sampler.num_steps"] == 2
    assert ingredients["bf16"] is False and ingredients["patch_shape"] is None
    assert ingredients["times"] == f"3 from {TIMES[0]} to {TIMES[-1]}"
    assert len(ingredients["data_spec_sha256"]) == 64 and len(ingredients["grid_sha256"]) == 64
    listed = " ".join(ingredients["input_files"])
    coarse = trained[0] / "data" / "coarse.nc"
    assert f"coarse.nc (sha256 {digest(coarse)})" in listed and "static.nc (sha256 " in listed
    assert str(coarse.parent) not in listed  # by name and contents: where the inputs lie does not enter
    cache = json.loads(attrs["corrdiff_input_hashes"])  # the hashes by path, size and mtime, outside the digest
    assert cache[str(coarse)][1:] == [coarse.stat().st_mtime_ns, digest(coarse)]


def test_inputs_are_compared_by_contents_not_by_time_or_place(trained, reference, tmp_path):
    """A `touch` resumes the file, an edit of the same size within a second is seen, and a copy of the data
    elsewhere (a run folder that travels) resumes it."""
    folder, config = trained
    out = copy_of_reference(reference, tmp_path)
    coarse = folder / "data" / "coarse.nc"
    saved = coarse.read_bytes()
    os.utime(coarse, ns=(coarse.stat().st_atime_ns, coarse.stat().st_mtime_ns + 10**9))  # touch
    succeeded(generate(config, out))
    assert_same_fields(out, reference)
    stamp = coarse.stat().st_mtime_ns
    try:
        edit_one_value(coarse)  # one value changed, same size, same second
        os.utime(coarse, ns=(stamp, stamp))
        assert coarse.stat().st_size == len(saved)
        assert "input_files: " in refused(generate(config, out))
    finally:
        coarse.write_bytes(saved)
    moved = tmp_path / "moved"
    shutil.copytree(folder / "data", moved / "data")
    shutil.copy2(config, moved / "config.yaml")
    os.symlink(folder / "run", moved / "run")
    succeeded(generate(moved / "config.yaml", out))  # the same data elsewhere: the same ensemble, resumed
    assert_same_fields(out, reference)


@pytest.mark.parametrize("options, change", [
    (["--seed", "7"], "seed: 0 → 7"),
    (["--set", "sampler.num_steps=3"], "sampler.num_steps: 2 → 3"),
    (["--members", "3"], "members: 2 → 3"),
    (["--set", "generate.precision=bf16"], "bf16: false → true"),
    (["--times", TIMES[0]], "times: "),
])
def test_a_rerun_with_other_settings_is_refused_and_the_file_kept(trained, reference, tmp_path, options, change):
    folder, config = trained
    out = copy_of_reference(reference, tmp_path)
    before = digest(out)
    line = refused(generate(config, out, *options))
    assert str(out) in line and change in line and "--overwrite" in line and "another --out" in line
    assert digest(out) == before


def test_changed_input_files_are_refused(trained, reference, tmp_path):
    folder, config = trained
    out = copy_of_reference(reference, tmp_path)
    coarse = folder / "data" / "coarse.nc"
    saved = coarse.read_bytes()
    try:
        edit_one_value(coarse)  # as a re-download with corrected data would
        line = refused(generate(config, out))
    finally:
        coarse.write_bytes(saved)
    assert "input_files" in line and "--overwrite" in line


def test_overwrite_replaces_the_file_only_once_the_new_one_is_complete(trained, reference, tmp_path, monkeypatch):
    folder, config = trained
    out = copy_of_reference(reference, tmp_path)
    before = digest(out)
    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "netCDF4", FullDisk(at_time=1))
        line = refused(generate(config, out, "--seed", "7", "--overwrite"))
    assert "no space left" in line
    assert digest(out) == before  # the old file is whole while the new one is not
    succeeded(generate(config, out, "--seed", "7", "--overwrite"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.nc"]  # no temporary file left beside it
    with xr.open_dataset(out) as ds:
        assert ds.attrs["corrdiff_seed"] == 7 and bool(ds["generation_complete"].all())
        assert not np.array_equal(ds["t2m"].values, fields(reference)["t2m"])


def test_a_file_that_is_not_an_ensemble_is_replaced_only_with_overwrite(trained, tmp_path):
    folder, config = trained
    theirs = tmp_path / "mine.nc"
    xr.Dataset({"rainfall": ("station", np.arange(3.0))}).to_netcdf(theirs)
    notes = tmp_path / "notes.nc"
    notes.write_text("not a NetCDF file\n")
    for path, reason in ((theirs, "is not a corrdiff ensemble"), (notes, "cannot be read as a netcdf ensemble")):
        before = digest(path)
        line = refused(generate(config, path))
        assert str(path) in line and reason in line and "--overwrite" in line
        assert digest(path) == before
    succeeded(generate(config, theirs, "--overwrite"))
    with xr.open_dataset(theirs) as ds:
        assert "rainfall" not in ds and bool(ds["generation_complete"].all())


@pytest.mark.parametrize("name, what", [("data/coarse.nc", "a file of the spec's inputs"),
                                        ("data/fine.nc", "a file of the spec's targets"),
                                        ("data/spec.yaml", "the dataset spec"), ("config.yaml", "the run config")])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(trained, name, what):
    folder, config = trained
    out = folder / name
    before = digest(out)
    line = refused(generate(config, out, "--overwrite"))
    assert name.split("/")[-1] in line and what in line
    assert digest(out) == before


def test_a_folder_that_holds_the_checkpoints_is_never_replaced(trained):
    folder, config = trained
    line = refused(generate(config, folder / "run", "--overwrite"))
    assert "is a folder" in line
    assert (folder / "run" / "regression").is_dir()


# --- 2. a full disk: one line, then the rerun resumes to the same file ---------------------------------------
class FullDisk:
    """netCDF4 as the writer sees it, on a disk that fills up at time slot `at_time`: that write raises ENOSPC,
    and closing the file fails too, as HDF5 does (so the writer cannot tell how much of the file is sound)."""

    def __init__(self, at_time: int):
        self.at_time, self.full = at_time, False

    def Dataset(self, path, mode="r", **options):  # noqa: N802  (netCDF4's name)
        real = netCDF4.Dataset(path, mode, **options)
        return real if mode == "r" else _Appending(real, self)


class _Appending:
    def __init__(self, real, disk):
        self.real, self.disk = real, disk

    def __getitem__(self, name):
        return _Variable(self.real[name], self.disk)

    def sync(self):
        self.real.sync()

    def close(self):
        self.real.close()
        if self.disk.full:
            raise RuntimeError("NetCDF: HDF error")


class _Variable:
    def __init__(self, real, disk):
        self.real, self.disk = real, disk

    def __getitem__(self, index):
        return self.real[index]

    def __setitem__(self, index, values):
        self.disk.full |= index == self.disk.at_time
        if self.disk.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real[index] = values


def fill_zarr_disk_at(patch, store_name: str, at_time: int):
    """Zarr's local store raises ENOSPC from the first chunk of time `at_time` of the store `store_name` on."""
    real_set, disk = LocalStore.set, {"full": False}

    async def set_chunk(self, key, value):
        parts = key.split("/")
        if os.path.basename(str(self.root)) == store_name and len(parts) > 2 and parts[1] == "c" \
                and parts[2] == str(at_time):
            disk["full"] = True
        if disk["full"] and os.path.basename(str(self.root)) == store_name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await real_set(self, key, value)

    patch.setattr(LocalStore, "set", set_chunk)


def count_downscaled(patch) -> list:
    calls, real = [], downscaling_module.downscale
    patch.setattr(downscaling_module, "downscale", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_a_full_disk_stops_in_one_line_and_the_rerun_resumes_to_the_same_file(trained, reference, tmp_path,
                                                                              monkeypatch, suffix):
    folder, config = trained
    out = tmp_path / f"e{suffix}"
    with monkeypatch.context() as patch:
        if suffix == ".nc":
            patch.setattr(writer_module, "netCDF4", FullDisk(at_time=1))
        else:
            fill_zarr_disk_at(patch, out.name, at_time=1)
        line = refused(generate(config, out))
    assert str(out) in line and "no space left" in line and TIMES[1] in line and "1 of 3 times are complete" in line
    with open_ensemble(out) as partial:
        assert partial["generation_complete"].values.tolist() == [1, 0, 0]
    # The half-finished file is not finished with another seed: that would mix two ensembles.
    assert "seed: 0 → 7" in refused(generate(config, out, "--seed", "7"))
    with monkeypatch.context() as patch:
        calls = count_downscaled(patch)
        succeeded(generate(config, out))  # space freed: the same command
    assert len(calls) == 2  # the written time is kept, the two others are made
    assert_same_fields(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no marker or temporary file left


# --- 3. nothing non-finite is flagged written ----------------------------------------------------------------
def test_a_member_that_comes_out_nan_stops_the_run_naming_time_and_channel(trained, reference, tmp_path, monkeypatch):
    folder, config = trained
    out = tmp_path / "e.nc"
    real, calls = sampler_module.sample_ensemble, []

    def nan_in_member_1_of_refl_at_the_second_time(*args, **kwargs):
        ensemble = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            ensemble[1, 2] = float("nan")
        return ensemble

    with monkeypatch.context() as patch:
        patch.setattr(sampler_module, "sample_ensemble", nan_in_member_1_of_refl_at_the_second_time)
        line = refused(generate(config, out))
    assert str(out) in line and "member 1 of 'refl'" in line and TIMES[1] in line and "NaN or infinite" in line
    with xr.open_dataset(out) as partial:
        assert partial["generation_complete"].values.tolist() == [1, 0, 0]
        assert bool(partial["refl"].isel(time=1).isnull().all())  # nothing of that time was written
    succeeded(generate(config, out))
    assert_same_fields(out, reference)


# --- 4. checkpoints and data belong together ----------------------------------------------------------------
def test_a_diffusion_model_trained_against_another_regression_is_refused_unless_allowed(trained, tmp_path):
    folder, config = trained
    succeeded(invoke("train", "regression", config, "--quiet", "--set", "run_dir=run-other",
                     "--set", "regression.seed=1"))
    other = ["--checkpoint-regression", folder / "run-other" / "regression"]
    line = refused(generate(config, tmp_path / "e.nc", *other))
    assert "was trained against regression" in line and "run-other" in line and "--allow-mismatch" in line
    assert not (tmp_path / "e.nc").exists()
    succeeded(generate(config, tmp_path / "e.nc", *other, "--allow-mismatch"))
    with xr.open_dataset(tmp_path / "e.nc") as ds:
        assert ds.attrs["corrdiff_allow_mismatch"] == 1 and "was trained against" in ds.attrs["corrdiff_mismatches"]
        assert ds.attrs["regression_checkpoint"].startswith(str(folder / "run-other"))


def write_variant(folder, name, change) -> str:
    """A run config whose dataset spec is the fixture's with `change` applied; returns the config path."""
    spec = yaml.safe_load((folder / "data" / "spec.yaml").read_text())
    change(spec)
    (folder / "data" / f"spec-{name}.yaml").write_text(yaml.safe_dump(spec))
    config = folder / f"config-{name}.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "data": f"data/spec-{name}.yaml"}))
    return config


def shifted_grid(folder):
    def change(spec):
        fine = fixtures.fine_dataset()
        grid = xr.Dataset(coords={"XLAT": fine["XLAT"] + 0.5, "XLONG": fine["XLONG"]})
        grid.to_netcdf(folder / "data" / "grid-shifted.nc")
        spec["grid"] = "grid-shifted.nc"
    return change


@pytest.mark.parametrize("name, expected", [
    ("grid", ["fine grid differs", "max |Δlat| = 0.5°", "max |Δlon| = 0°"]),
    ("inputs", ["input channels", "missing ['t@850']"]),
    ("targets", ["target channels", "missing ['refl']"]),
])
def test_data_that_does_not_fit_the_checkpoints_is_refused_naming_the_difference(trained, tmp_path, name, expected):
    folder, _ = trained
    changes = {"grid": shifted_grid(folder),
               "inputs": lambda spec: spec["inputs"].update(variables=["t2m", "u10"]),
               "targets": lambda spec: spec["targets"].update(variables=["t2m", "u10"])}
    config = write_variant(folder, name, changes[name])
    line = refused(generate(config, tmp_path / "e.nc"))
    assert f"spec-{name}.yaml" in line and all(text in line for text in expected), line
    assert not (tmp_path / "e.nc").exists()


# --- 5. the format follows the suffix -----------------------------------------------------------------------
def test_the_format_follows_the_suffix_and_a_contradiction_is_refused(trained, reference, tmp_path):
    folder, config = trained
    succeeded(generate(config, tmp_path / "e.zarr"))
    assert (tmp_path / "e.zarr" / "zarr.json").exists()
    assert_same_fields(tmp_path / "e.zarr", reference)
    line = refused(generate(config, tmp_path / "f.zarr", "--format", "netcdf"))
    assert "f.zarr" in line and "generate.format is 'netcdf'" in line
    line = refused(generate(config, tmp_path / "g.nc", "--set", "generate.format=zarr"))
    assert "g.nc" in line and "generate.format is 'zarr'" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.zarr"]
