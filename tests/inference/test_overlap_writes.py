"""Writing time t in the background while time t+1 is sampled (`generate.overlap_writes`, `OverlappedWriter`).

The same files, bit for bit, with and without the overlap; at most one write in flight, each a whole time with its
flag set after its data are synced; a background write's error (full disk, NaN member) is the same one line and
exit code as a write in turn, nothing after it is flagged complete, and the rerun resumes to the same file.
"""

import importlib
import os
import re
import threading

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml
from zarr.storage import LocalStore

from corrdiff.ensemble_file import FLAG
from corrdiff.errors import OutputError
from corrdiff.inference.writer import OverlappedWriter
from tests.cli_runner import invoke, refused, succeeded, TINY_RUN
from tests.data import fixtures
from tests.reliability.test_generate_reliability import fill_zarr_disk_at, FullDisk

downscaling_module = importlib.import_module("corrdiff.inference.downscaling")  # where downscale_time calls downscale
sampler_module = importlib.import_module("corrdiff.diffusion.sampler")  # where generation calls sample_ensemble
writer_module = importlib.import_module("corrdiff.inference.writer")

CHANNELS = ["t2m", "u10", "refl"]
FIELDS = [v for c in CHANNELS for v in (c, f"{c}_regression")]
TIMES = ["2021-01-02T03:00:00", "2021-01-02T06:00:00", "2021-01-02T09:00:00"]  # the spec's test split
OFF = ("--set", "generate.overlap_writes=false")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, run config): the generic fixture data and both networks trained for two steps."""
    folder = tmp_path_factory.mktemp("overlap")
    fixtures.write_generic(folder / "data")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"data": "data/spec.yaml", "run_dir": "run", **TINY_RUN}))
    for kind in ("regression", "diffusion"):
        succeeded(invoke("train", kind, config, "--quiet"))
    return folder, config


@pytest.fixture(scope="module")
def in_turn(trained):
    """{suffix: the ensemble written without overlap} (3 times, 2 members)."""
    folder, config = trained
    files = {suffix: folder / f"in-turn{suffix}" for suffix in (".nc", ".zarr")}
    for out in files.values():
        succeeded(generate(config, out, *OFF))
    return files


def generate(config, out, *options):
    return invoke("generate", config, "--out", out, "--quiet", *options)


def open_any(path) -> xr.Dataset:
    return xr.open_dataset(path, **({"engine": "zarr", "consolidated": False} if str(path).endswith(".zarr") else {}))


def assert_same_ensemble(path, reference):
    """Every variable and coordinate bit for bit, and the attributes but the wall-clock `history` and the
    recorded config (which holds `overlap_writes`)."""
    with open_any(path) as got, open_any(reference) as expected:
        for name in expected.variables:
            np.testing.assert_array_equal(got[name].values, expected[name].values, err_msg=name)
        xr.testing.assert_identical(got.drop_attrs(deep=False), expected.drop_attrs(deep=False))
        strip = lambda attrs: {k: v for k, v in attrs.items() if k not in ("history", "corrdiff_config")}
        assert strip(got.attrs) == strip(expected.attrs)
        assert bool(got[FLAG].all())


def record_write_threads(patch) -> list:
    """The (slot, thread name) of every `EnsembleWriter.write`, in call order."""
    calls, real = [], writer_module.EnsembleWriter.write

    def write(self, index, *args):
        calls.append((index, threading.current_thread().name))
        return real(self, index, *args)

    patch.setattr(writer_module.EnsembleWriter, "write", write)
    return calls


# --- the same file, written by another thread --------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_overlapped_writes_give_the_file_written_in_turn_bit_for_bit(trained, in_turn, tmp_path, monkeypatch, suffix):
    folder, config = trained
    out = tmp_path / f"e{suffix}"
    with monkeypatch.context() as patch:
        calls = record_write_threads(patch)
        result = succeeded(invoke("generate", config, "--out", out))  # with its progress bar
    assert [slot for slot, _ in calls] == [0, 1, 2]
    assert all(name.startswith("corrdiff-writer") for _, name in calls), calls  # the main thread wrote nothing
    assert "3/3" in result.output
    assert_same_ensemble(out, in_turn[suffix])
    with open_any(out) as ds:
        assert "overlap_writes: true" in ds.attrs["corrdiff_config"]


def test_without_overlap_the_main_thread_writes(trained, tmp_path, monkeypatch):
    folder, config = trained
    with monkeypatch.context() as patch:
        calls = record_write_threads(patch)
        succeeded(generate(config, tmp_path / "e.nc", *OFF))
    assert calls == [(slot, threading.main_thread().name) for slot in range(3)]


def test_time_t_is_written_while_time_t_plus_1_is_sampled_one_write_at_a_time(trained, in_turn, tmp_path,
                                                                              monkeypatch):
    folder, config = trained
    sampled, lock = [], threading.Lock()
    next_sampling = [threading.Event() for _ in TIMES]
    in_flight, most_in_flight, waited = [0], [0], []
    real_downscale, real_write = downscaling_module.downscale, writer_module.EnsembleWriter.write

    def downscale(*args, **kwargs):
        sampled.append(1)
        if len(sampled) >= 2:
            next_sampling[len(sampled) - 2].set()  # the sampling after time slot len(sampled) - 2 has begun
        return real_downscale(*args, **kwargs)

    def write(self, index, *args):
        with lock:
            in_flight[0] += 1
            most_in_flight[0] = max(most_in_flight[0], in_flight[0])
        try:
            if index < len(TIMES) - 1:  # a write in turn would wait here for a sampling that never starts
                waited.append(next_sampling[index].wait(timeout=30))
            return real_write(self, index, *args)
        finally:
            with lock:
                in_flight[0] -= 1

    with monkeypatch.context() as patch:
        patch.setattr(downscaling_module, "downscale", downscale)
        patch.setattr(writer_module.EnsembleWriter, "write", write)
        succeeded(generate(config, tmp_path / "e.nc"))
    assert waited == [True, True] and most_in_flight[0] == 1
    assert_same_ensemble(tmp_path / "e.nc", in_turn[".nc"])


# --- the order of operations: data, sync, flag, sync; one time after another --------------------------------------
class RecordingNetCDF:
    """netCDF4 as the writer sees it, logging every assignment (variable, slot) and sync of a file opened to append."""

    def __init__(self):
        self.log = []

    def Dataset(self, path, mode="r", **options):  # noqa: N802  (netCDF4's name)
        real = netCDF4.Dataset(path, mode, **options)
        return real if mode == "r" else _Recorded(real, self.log)


class _Recorded:
    def __init__(self, real, log):
        self.real, self.log = real, log

    def __getitem__(self, name):
        return _RecordedVariable(self.real[name], name, self.log)

    def sync(self):
        self.log.append(("sync", threading.current_thread().name))
        self.real.sync()

    def close(self):
        self.real.close()


class _RecordedVariable:
    def __init__(self, real, name, log):
        self.real, self.name, self.log = real, name, log

    def __getitem__(self, index):
        return self.real[index]

    def __setitem__(self, index, values):
        self.log.append((self.name, index, threading.current_thread().name))
        self.real[index] = values


def test_netcdf_each_time_is_synced_before_its_flag_and_times_do_not_interleave(trained, tmp_path, monkeypatch):
    folder, config = trained
    recording = RecordingNetCDF()
    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "netCDF4", recording)
        succeeded(generate(config, tmp_path / "e.nc"))
    expected = []
    for slot in range(len(TIMES)):
        expected += [(name, slot) for name in FIELDS] + [("sync",), (FLAG, slot), ("sync",)]
    assert [entry[:-1] for entry in recording.log] == expected
    assert all(entry[-1].startswith("corrdiff-writer") for entry in recording.log)


def test_zarr_each_time_flag_is_stored_after_all_its_chunks(trained, tmp_path, monkeypatch):
    folder, config = trained
    out, keys, real_set = tmp_path / "e.zarr", [], LocalStore.set

    async def set_chunk(self, key, value):
        if os.path.basename(str(self.root)) == out.name and "/c/" in key:
            keys.append(key)
        return await real_set(self, key, value)

    with monkeypatch.context() as patch:
        patch.setattr(LocalStore, "set", set_chunk)
        succeeded(generate(config, out))
    time_of = lambda key: int(key.split("/")[2])
    assert [time_of(k) for k in keys] == sorted(time_of(k) for k in keys)  # one time after another
    for slot in range(len(TIMES)):
        of_time = [k for k in keys if time_of(k) == slot]
        assert of_time[-1] == f"{FLAG}/c/{slot}" and {k.split("/")[0] for k in of_time[:-1]} == set(FIELDS)


# --- errors of a background write ------------------------------------------------------------------------------
def same_line(line: str, out) -> str:
    """The error line with the output path and the free space (which changes between runs) taken out."""
    return re.sub(r"\([^()]* free\)", "(… free)", line.replace(str(out), "OUT"))


@pytest.mark.parametrize("suffix, at_time", [(".nc", 1), (".zarr", 1), (".nc", 2)])
def test_a_full_disk_in_the_background_is_the_same_line_and_the_rerun_resumes(trained, in_turn, tmp_path,
                                                                             monkeypatch, suffix, at_time):
    """At time 1 the error comes at the next write; at the last time, at closing the file."""
    folder, config = trained
    lines = {}
    for overlap in ("true", "false"):
        out = tmp_path / overlap / f"e{suffix}"
        out.parent.mkdir()
        with monkeypatch.context() as patch:
            calls = record_write_threads(patch)
            if suffix == ".nc":
                patch.setattr(writer_module, "netCDF4", FullDisk(at_time=at_time))
            else:
                fill_zarr_disk_at(patch, out.name, at_time=at_time)
            result = generate(config, out, "--set", f"generate.overlap_writes={overlap}")
        lines[overlap] = same_line(refused(result), out)
        assert [slot for slot, _ in calls] == list(range(at_time + 1))  # nothing written after the failed write
        with open_any(out) as partial:
            assert partial[FLAG].values.tolist() == [1] * at_time + [0] * (len(TIMES) - at_time)
        succeeded(generate(config, out))  # space freed: the same command
        assert_same_ensemble(out, in_turn[suffix])
        assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no marker or temporary file left
    assert lines["true"] == lines["false"]
    assert "no space left" in lines["true"] and TIMES[at_time] in lines["true"]
    assert f"{at_time} of 3 times are complete" in lines["true"]


def test_a_nan_member_is_refused_from_the_background_as_in_turn(trained, in_turn, tmp_path, monkeypatch):
    folder, config = trained
    lines = {}
    for overlap in ("true", "false"):
        out = tmp_path / overlap / "e.nc"
        out.parent.mkdir()
        real, calls = sampler_module.sample_ensemble, []

        def nan_in_member_1_of_refl_at_the_first_time(*args, **kwargs):
            ensemble = real(*args, **kwargs)
            calls.append(1)
            if len(calls) == 1:
                ensemble[1, 2] = float("nan")
            return ensemble

        with monkeypatch.context() as patch:
            patch.setattr(sampler_module, "sample_ensemble", nan_in_member_1_of_refl_at_the_first_time)
            lines[overlap] = refused(generate(config, out, "--set", f"generate.overlap_writes={overlap}"))
        assert str(out) in lines[overlap]
        with xr.open_dataset(out) as partial:
            assert partial[FLAG].values.tolist() == [0, 0, 0]
            assert bool(partial["refl"].isel(time=0).isnull().all())  # nothing of that time was written
        lines[overlap] = lines[overlap].replace(str(out), "OUT")
    assert lines["true"] == lines["false"]
    assert "member 1 of 'refl'" in lines["true"] and TIMES[0] in lines["true"] and "NaN or infinite" in lines["true"]


# --- OverlappedWriter alone ------------------------------------------------------------------------------------
class SlowWriter:
    """An `EnsembleWriter` stand-in: each write waits for `release`, and slot `fail_at` raises a full disk."""

    path = "slow.nc"

    def __init__(self, fail_at=None):
        self.written, self.closed, self.fail_at = [], False, fail_at
        self.release = threading.Semaphore(0)

    def write(self, index, ensemble, mean):
        assert self.release.acquire(timeout=30)
        if index == self.fail_at:
            raise OutputError(f"no space left while writing slot {index}")
        self.written.append(index)

    def close(self):
        self.closed = True


def test_a_write_waits_for_the_one_in_flight_and_the_callback_counts_written_slots():
    inner, counted = SlowWriter(), []
    writer = OverlappedWriter(inner, on_written=counted.append)
    writer.write(0, None, None)  # returns at once: slot 0 waits for `release` in the background
    assert inner.written == [] and counted == []
    inner.release.release()
    inner.release.release()
    writer.write(1, None, None)  # waited for slot 0
    assert inner.written[0] == 0 and counted[0] == 0
    writer.close()  # waits for slot 1
    assert inner.written == [0, 1] and counted == [0, 1] and inner.closed


@pytest.mark.parametrize("fail_at", [0, 1])
def test_a_failed_background_write_is_raised_by_the_next_write_or_by_close(fail_at):
    inner = SlowWriter(fail_at=fail_at)
    writer = OverlappedWriter(inner)
    for _ in range(3):
        inner.release.release()
    writer.write(0, None, None)
    if fail_at == 0:
        with pytest.raises(OutputError, match="writing slot 0"):
            writer.write(1, None, None)  # slot 1 is never written
        with pytest.raises(OutputError, match="slow.nc: an earlier write failed"):
            writer.write(2, None, None)  # nor anything after, should a caller go on
        writer.close()  # the write's error is raised once
    else:
        writer.write(1, None, None)
        with pytest.raises(OutputError, match="writing slot 1"):
            writer.close()
    assert inner.written == list(range(fail_at)) and inner.closed


def test_xarray_reads_of_netcdf_inputs_wait_while_a_netcdf_write_holds_the_lock(tmp_path):
    """netCDF-C/HDF5 are not thread-safe across files: the writer's lock is the one xarray's netCDF4 reads take."""
    path = tmp_path / "input.nc"
    xr.Dataset({"t2m": (("y", "x"), np.arange(12.0).reshape(3, 4))}).to_netcdf(path, engine="netcdf4")
    read = threading.Event()

    def read_input():
        with xr.open_dataset(path, engine="netcdf4", cache=False) as ds:
            ds["t2m"].values
        read.set()

    with writer_module.NETCDF_LOCK:
        reader = threading.Thread(target=read_input)
        reader.start()
        assert not read.wait(timeout=0.5)  # the read waits for the write
    assert read.wait(timeout=30)
    reader.join()
