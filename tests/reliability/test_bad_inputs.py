"""Bad input a user can make is one line naming the file, key or argument, with exit code 2 (issue 10).

A table of cases, one per mistake as a user makes it: a dataset spec, a data file, a run config or a
command-line argument that cannot be used. Each case builds its bad input in its own folder, runs the real
command through typer's CliRunner, and checks that the command stopped with exit code 2, printed no traceback,
ended with exactly one `error: ...` line, and that this line names what to fix (the substrings in the table).
An exception escaping a command is a bug: the test fails with its traceback.

Cases marked `usage` are mistakes typer itself catches (an option without its value, a value that is not a
number or out of an option's range): typer prints its own error box (or click's "Usage:" block) and exits with
code 2; these check the exit code, that no traceback is shown, and that the option is named.

Last, a slow test SIGKILLs `corrdiff generate` (a process of its own, NetCDF and Zarr) at random moments of its
writing and checks that rerunning the same command gives the file an uninterrupted run writes, bit for bit.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from tests.cli_runner import invoke, TINY_RUN
from tests.data import fixtures

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the world the cases spoil: a dataset on files, and (made only when a case needs it) a trained run ----------
class World:
    """Good files every case starts from; a case writes its bad input into its own folder `tmp`."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.spec = fixtures.write_generic(self.data)

    def good_spec(self) -> dict:
        """The dataset spec as a dict, with absolute paths (so a copy can live in any folder)."""
        raw = yaml.safe_load(self.spec.read_text())
        for source in ("inputs", "targets", "static"):
            raw[source]["paths"] = str(self.data / raw[source]["paths"])
        return raw

    @cached_property
    def config(self) -> Path:
        """A run config whose two models are trained (two steps each, through the CLI)."""
        config = self.root / "config.yaml"
        config.write_text(yaml.safe_dump({"data": str(self.spec), "run_dir": str(self.root / "run"), **TINY_RUN}))
        for kind in ("regression", "diffusion"):
            result = invoke("train", kind, config, "--quiet")
            assert result.exit_code == 0, result.output
        return config

    @cached_property
    def student(self) -> Path:
        """The trained run's consistency student (two steps of `corrdiff train distill`), its folder."""
        result = invoke("train", "distill", self.config, "--quiet", "--set", "distill.steps=2", "--set",
                        "distill.batch_size=4", "--set", "distill.num_scales=4", "--set", "distill.log_every=1")
        assert result.exit_code == 0, result.output
        return self.root / "run" / "distill"

    @cached_property
    def ensemble(self) -> Path:
        """An ensemble of the test split (3 times, 2 members) made by `corrdiff generate`."""
        out = self.root / "ensemble.nc"
        result = invoke("generate", self.config, "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # One thread for these tiny networks: on a shared 2-core machine two threads mostly wait for each other
    # (the two-step trainings take seconds instead of a fraction of one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield World(tmp_path_factory.mktemp("bad-inputs"))
    torch.set_num_threads(threads)


# --- builders: each writes one bad thing into `tmp` and gives back the command line ------------------------------
def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def spec_file(w: World, tmp: Path, change: Callable[[dict], None] | None = None, name="spec.yaml") -> Path:
    """The good spec with `change` applied, written to tmp/name."""
    raw = w.good_spec()
    if change:
        change(raw)
    return write(tmp / name, yaml.safe_dump(raw, sort_keys=False))


def check(w, tmp, change=None):
    """`corrdiff data check` of the good spec spoilt by `change`."""
    return ["data", "check", spec_file(w, tmp, change)]


def check_text(text: str):
    """`corrdiff data check` of a spec file holding `text`."""
    return lambda w, tmp: ["data", "check", write(tmp / "spec.yaml", text)]


def spec_case(change):
    return lambda w, tmp: check(w, tmp, change)


def set_in(*keys_and_value):
    """A spec change that sets raw[k1][k2]... = value (the last argument)."""
    *keys, value = keys_and_value

    def change(raw):
        node = raw
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


def drop(*keys):
    def change(raw):
        node = raw
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
    return change


def source_file(source: str, name: str, make: Callable[[Path, World], None]):
    """`data check` of a spec whose `source` (inputs/targets/static) reads tmp/name, made by `make(path, w)`."""
    def build(w, tmp):
        path = tmp / name
        make(path, w)
        return check(w, tmp, set_in(source, "paths", str(path)))
    return build


def text_file(content):
    return lambda path, w: write(path, content)


def dataset_file(make: Callable[[], xr.Dataset]):
    return lambda path, w: make().to_netcdf(path)


def coarse_without_time():
    return fixtures.coarse_dataset().isel(time=0, drop=True)


def coarse_with_raw_time():
    ds = fixtures.coarse_dataset()
    return ds.assign_coords(time=np.arange(ds.sizes["time"]))  # plain numbers, no CF units


def coarse_without_lat_lon():
    return fixtures.coarse_dataset().rename(latitude="y", longitude="x")


def coarse_far_away():
    ds = fixtures.coarse_dataset()
    return ds.assign_coords(latitude=ds.latitude - 60)


def coarse_cut_short():
    return fixtures.coarse_dataset().sel(latitude=slice(30, 21))  # stops inside the fine domain (20..23.2°N)


def coarse_repeated_time():
    ds = fixtures.coarse_dataset()
    times = ds.time.values.copy()
    times[1] = times[0]
    return ds.assign_coords(time=times)


def coarse_temperature_in_m_s():
    ds = fixtures.coarse_dataset()
    ds["t"].attrs["units"] = "m s-1"  # t@850 was trained in K
    return ds


def coarse_missing_times():
    return fixtures.coarse_dataset().isel(time=slice(0, 6))


def static_with_nan():
    ds = fixtures.static_dataset()
    ds["orography"][3, 4] = np.nan
    return ds


def static_other_shape():
    return fixtures.static_dataset(shape=(12, 24))


def grib_cut_short(path: Path, w: World):
    coarse = fixtures.coarse_dataset()["t2m"].isel(time=slice(0, 2))
    fixtures.write_grib(path, coarse)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])  # a download that stopped 200 bytes short


def coarse_latitudes_unsorted():
    ds = fixtures.coarse_dataset()
    return ds.isel(latitude=[0, 2, 1, *range(3, ds.sizes["latitude"])])


def coarse_one_latitude():
    return fixtures.coarse_dataset().isel(latitude=[7])


def wrf_times_garbage():
    fine = fixtures.fine_dataset().rename(time="Time")
    fine = fine.drop_vars("Time")
    return fine.assign(Times=("Time", ["2021-01-01 at noon"] * fine.sizes["Time"]))


def other_grid(path: Path, w: World):
    lat, lon = fixtures.fine_grid((12, 24))
    xr.Dataset(coords={"XLAT": (("y", "x"), lat), "XLONG": (("y", "x"), lon)}).to_netcdf(path)


def stats_of_other_channels(w: World, tmp: Path):
    """`corrdiff train` of a spec whose stats file was computed for other input channels."""
    other = spec_file(w, tmp, set_in("inputs", "variables", ["t2m", "u10"]), name="other.yaml")
    result = invoke("data", "stats", other, "-q")
    assert result.exit_code == 0, result.output
    spec = spec_file(w, tmp)  # same folder, so the same stats.json
    config = config_file(w, tmp, set_in("data", str(spec)))
    return ["train", "regression", config, "--quiet"]


def stats_missing_a_std(w: World, tmp: Path):
    """`corrdiff train` of a spec whose stats.json lists one std fewer than it has input channels."""
    w.config  # trained: the spec's statistics are computed
    raw = json.loads((w.data / "stats.json").read_text())
    raw["input"]["std"].pop()
    write(tmp / "stats.json", json.dumps(raw))  # beside the spec written next
    config = config_file(w, tmp, set_in("data", str(spec_file(w, tmp))))
    return ["train", "regression", config, "--quiet"]


def truncated_copy(path: Path, w: World):
    data = (w.data / "coarse.nc").read_bytes()
    write(path, data[: len(data) // 2])


def empty_zarr(path: Path, w: World):
    path.mkdir(parents=True)


def broken_zarr(path: Path, w: World):
    write(path / "zarr.json", "{not json")


def grib_garbage(path: Path, w: World):
    write(path, b"GRIB" + bytes(range(256)) * 4)


def folder_of_netcdf(path: Path, w: World):
    path.mkdir(parents=True)
    shutil.copy(w.data / "coarse.nc", path / "coarse.nc")


def stats_with(*args):
    return lambda w, tmp: ["data", "stats", spec_file(w, tmp), "--quiet", *args]


# run configs: `corrdiff train regression CONFIG` (its own run_dir in tmp, so nothing is trained by accident)
def config_file(w: World, tmp: Path, change=None, run_dir=None, name="config.yaml") -> Path:
    raw = {"data": str(w.spec), "run_dir": str(run_dir or tmp / "run"), **yaml.safe_load(yaml.safe_dump(TINY_RUN))}
    if change:
        change(raw)
    return write(tmp / name, yaml.safe_dump(raw, sort_keys=False))


def train(change=None, *args):
    return lambda w, tmp: ["train", "regression", config_file(w, tmp, change), "--quiet", *args]


def distill(change=None, *args):
    """`corrdiff train distill` of a run config in tmp (its own run_dir: no teacher there unless `change` names one)."""
    return lambda w, tmp: ["train", "distill", config_file(w, tmp, change), "--quiet", *args]


def train_text(text: str):
    return lambda w, tmp: ["train", "regression", write(tmp / "config.yaml", text), "--quiet"]


# commands with a trained run
def generate(*args):
    """`corrdiff generate` of the trained run into tmp/e.nc, with `args` (each a value or a builder of one)."""
    def build(w, tmp):
        resolved = [a(w, tmp) if callable(a) else a for a in args]
        out = [] if "--out" in resolved else ["--out", tmp / "e.nc"]
        return ["generate", w.config, *out, "--quiet", *resolved]
    return build


def score(*args, predictions=None, truth=None):
    """`corrdiff score` of the generated ensemble against the spec (each replaceable by a builder)."""
    def build(w, tmp):
        ens = predictions(w, tmp) if predictions else w.ensemble
        truth_path = truth(w, tmp) if truth else w.spec
        resolved = [a(w, tmp) if callable(a) else a for a in args]
        return ["score", ens, "--truth", truth_path, "--quiet", "--spectra", "none", *resolved]
    return build


def report(*args):
    return lambda w, tmp: ["report", w.ensemble, "--truth", w.spec, "--out", tmp / "report", "--quiet", *args]


def in_tmp(name, make=None):
    """A builder of the path tmp/name (made by `make(path, w)` when given)."""
    def build(w, tmp):
        path = tmp / name
        if make:
            make(path, w)
        return path
    return build


# --- the table ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    build: Callable[[World, Path], list]
    names: tuple[str, ...]  # substrings the error line must hold: the file, key or argument, and what to do
    usage: bool = False  # a typer/click usage error: exit 2 and its own box (not one of corrdiff's `error:` lines)
    marks: tuple = field(default_factory=tuple)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")

SPEC_CASES = [
    Case("spec-missing-file", lambda w, tmp: ["data", "check", tmp / "nope.yaml"], ("nope.yaml", "does not exist")),
    Case("spec-is-a-folder", lambda w, tmp: ["data", "check", tmp], ("is a folder", "spec")),
    Case("spec-not-yaml", check_text("inputs: {paths: [unclosed\n"), ("spec.yaml", "not valid YAML")),
    Case("spec-tab-indented", check_text("inputs:\n\tpaths: a.nc\n"), ("spec.yaml", "not valid YAML")),
    Case("spec-binary-file", lambda w, tmp: ["data", "check", write(tmp / "spec.yaml", bytes(range(128, 256)))],
         ("spec.yaml", "not a text file")),
    Case("spec-not-a-mapping", check_text("- inputs\n- targets\n"), ("spec.yaml", "expected a mapping")),
    Case("spec-empty", check_text(""), ("spec.yaml", "inputs", "Field required")),
    Case("spec-unknown-key", spec_case(set_in("splitz", {})), ("spec.yaml", "splitz")),
    Case("spec-unknown-source-key", spec_case(set_in("inputs", "variabels", ["t2m"])), ("inputs.variabels",)),
    Case("spec-missing-inputs", spec_case(drop("inputs")), ("spec.yaml", "inputs", "Field required")),
    Case("spec-missing-variables", spec_case(drop("targets", "variables")), ("targets.variables",)),
    Case("spec-variables-not-a-list", spec_case(set_in("inputs", "variables", "t2m")), ("inputs.variables",)),
    Case("spec-variables-empty", spec_case(set_in("inputs", "variables", [])), ("inputs.variables",)),
    Case("spec-paths-a-number", spec_case(set_in("inputs", "paths", 3)), ("inputs.paths",)),
    Case("spec-inputs-a-string", spec_case(set_in("inputs", "coarse.nc")), ("inputs",)),
    Case("spec-variable-t@", spec_case(set_in("inputs", "variables", ["t2m", "t@"])), ("inputs.variables", "'t@'")),
    Case("spec-variable-t@abc", spec_case(set_in("inputs", "variables", ["t@abc"])), ("inputs.variables", "'t@abc'")),
    Case("spec-variable-@850", spec_case(set_in("targets", "variables", ["@850"])), ("targets.variables", "'@850'")),
    Case("spec-duplicate-variables", spec_case(set_in("targets", "variables", ["t2m", "u10", "t2m"])),
         ("targets.variables", "listed twice", "t2m")),
    Case("spec-split-bad-date", spec_case(set_in("splits", "train", "start", "2021-13-45")),
         ("splits.train.start", "2021-13-45")),
    Case("spec-split-end-before-start",
         spec_case(set_in("splits", "test", {"start": "2021-02-01", "end": "2021-01-01"})),
         ("splits.test", "before start")),
    Case("spec-split-missing-end", spec_case(drop("splits", "train", "end")), ("splits.train.end",)),
    Case("spec-split-not-a-mapping", spec_case(set_in("splits", "train", "2021")), ("splits.train",)),
    Case("spec-split-empty", spec_case(set_in("splits", "train", {"start": "2030-01-01", "end": "2030-02-01"})),
         ("spec.yaml", "no time within 2030-01-01", "train")),
    Case("spec-unknown-split-asked", stats_with("--split", "valid"), ("spec.yaml", "no split 'valid'", "train")),
    Case("spec-transform-unknown", spec_case(set_in("transforms", {"refl": "sqrt"})), ("transforms", "'refl'", "sqrt")),
    Case("spec-transform-negative-power", spec_case(set_in("transforms", {"refl": "power:-1"})),
         ("transforms", "'refl'", "power:P")),
    Case("spec-transform-not-text", spec_case(set_in("transforms", {"refl": 0.5})), ("transforms.refl",)),
    Case("spec-unknown-layout", spec_case(set_in("layout", "wrf")), ("layout", "'generic'", "'cwa'")),
    Case("spec-cwa-layout-on-generic-files", spec_case(set_in("layout", "cwa")), ("coarse.nc", "cwa", "era5")),
    Case("spec-rename-a-list", spec_case(set_in("targets", "rename", ["T2"])), ("targets.rename",)),
    Case("spec-rename-bad-name", spec_case(set_in("targets", "rename", {"t2m": "T2@"})), ("targets", "rename", "t2m")),
    Case("spec-rename-to-missing", spec_case(set_in("targets", "rename", {"t2m": "T2"})),
         ("fine.nc", "'T2'", "t2m", "rename")),
    Case("spec-time-dim-not-in-file", spec_case(set_in("inputs", "time_dim", "Time")),
         ("coarse.nc", "time_dim", "'Time'")),
    Case("spec-time-dim-a-list", spec_case(set_in("inputs", "time_dim", ["time"])), ("inputs.time_dim",)),
    Case("spec-edge-unknown", spec_case(set_in("edge", "extrapolate")), ("edge", "'nearest'")),
    Case("spec-nan-policy-unknown", spec_case(set_in("nan_policy", "ignore")), ("nan_policy", "'fill'")),
    Case("spec-units-not-a-mapping", spec_case(set_in("units", "K")), ("units",)),
    Case("spec-units-disagree", spec_case(set_in("units", {"t2m": "m s-1"})), ("coarse.nc", "'t2m'", "m s-1", "units")),
    Case("spec-level-dim-unknown", spec_case(set_in("level_dim", "height")),
         ("coarse.nc", "'t@850'", "level_dim 'height'")),
    Case("spec-level-not-in-file", spec_case(set_in("inputs", "variables", ["t@700"])),
         ("coarse.nc", "700", "500, 850")),
    Case("spec-glob-matches-nothing", spec_case(set_in("inputs", "paths", "/nowhere/era5/*.nc")),
         ("spec.yaml", "inputs.paths", "no file matches", "/nowhere/era5/*.nc")),
    Case("spec-path-does-not-exist", spec_case(set_in("targets", "paths", "wrf/fine.nc")),
         ("spec.yaml", "targets.paths", "wrf/fine.nc", "does not exist")),
    Case("spec-static-path-does-not-exist", spec_case(set_in("static", "paths", ["static2.nc"])),
         ("static.paths", "static2.nc", "does not exist")),
    Case("spec-grid-file-does-not-exist", spec_case(set_in("grid", "grid.nc")), ("grid", "grid.nc", "does not exist")),
    Case("spec-stats-file-not-statistics",
         lambda w, tmp: ["data", "check", spec_file(w, tmp, set_in("stats", str(write(tmp / "s.json", "{oops"))))],
         ("s.json", "not a corrdiff statistics file", "corrdiff data stats")),
    Case("spec-is-a-run-config", lambda w, tmp: ["data", "check", config_file(w, tmp)],
         ("config.yaml", "is a run config", "not a dataset spec")),
    Case("spec-stats-without-targets", lambda w, tmp: ["data", "stats", spec_file(w, tmp, drop("targets")), "-q"],
         ("spec.yaml", "targets")),
]

DATA_CASES = [
    Case("data-text-file", source_file("inputs", "coarse.nc", text_file("time,t2m\n2021-01-01,280\n")),
         ("coarse.nc", "inputs", "cannot open")),
    Case("data-garbage-bytes", source_file("inputs", "coarse.nc", text_file(bytes(range(256)) * 8)),
         ("coarse.nc", "inputs", "cannot open")),
    Case("data-empty-file", source_file("targets", "fine.nc", text_file(b"")), ("fine.nc", "targets", "cannot open")),
    Case("data-truncated-netcdf", source_file("inputs", "coarse.nc", truncated_copy), ("coarse.nc", "cut short")),
    Case("data-variable-not-in-file", spec_case(set_in("inputs", "variables", ["t2m", "q"])),
         ("coarse.nc", "'q'", "not found", "rename")),
    Case("data-no-time-coordinate", source_file("inputs", "coarse.nc", dataset_file(coarse_without_time)),
         ("coarse.nc", "'t2m'", "no time")),
    Case("data-time-not-dates", source_file("inputs", "coarse.nc", dataset_file(coarse_with_raw_time)),
         ("coarse.nc", "'t2m'", "units")),
    Case("data-repeated-time", source_file("inputs", "coarse.nc", dataset_file(coarse_repeated_time)),
         ("coarse.nc", "'t2m'", "repeats")),
    Case("data-no-lat-lon", source_file("inputs", "coarse.nc", dataset_file(coarse_without_lat_lon)),
         ("coarse.nc", "latitude", "'lat'")),
    Case("data-static-with-nan", source_file("static", "static.nc", dataset_file(static_with_nan)),
         ("static.nc", "'orography'", "NaN")),
    Case("data-static-grid-shape-mismatch", source_file("static", "static.nc", dataset_file(static_other_shape)),
         ("static.nc", "'orography'", "(12, 24)", "(16, 24)")),
    Case("data-target-grid-shape-mismatch",
         lambda w, tmp: check(w, tmp, set_in("grid", str(in_tmp("grid.nc", other_grid)(w, tmp)))),
         ("fine.nc", "'t2m'", "(16, 24)", "grid.nc", "(12, 24)")),
    Case("data-latitude-not-monotonic", source_file("inputs", "coarse.nc", dataset_file(coarse_latitudes_unsorted)),
         ("coarse.nc", "latitude", "not monotonic")),
    Case("data-one-latitude", source_file("inputs", "coarse.nc", dataset_file(coarse_one_latitude)),
         ("coarse.nc", "latitude", "at least 2")),
    Case("data-wrf-times-not-dates", source_file("targets", "wrfout_d01", dataset_file(wrf_times_garbage)),
         ("wrfout_d01", "Times", "2021-01-01_00:00:00")),
    Case("data-inputs-do-not-overlap", source_file("inputs", "coarse.nc", dataset_file(coarse_far_away)),
         ("coarse.nc", "do not overlap")),
    Case("data-inputs-do-not-cover", source_file("inputs", "coarse.nc", dataset_file(coarse_cut_short)),
         ("coarse.nc", "outside")),
    Case("data-inputs-miss-target-times", source_file("inputs", "coarse.nc", dataset_file(coarse_missing_times)),
         ("coarse.nc", "'t2m'", "no data at")),
    Case("data-empty-zarr-folder", source_file("inputs", "era5.zarr", empty_zarr),
         ("era5.zarr", "inputs", "empty folder")),
    Case("data-broken-zarr-metadata", source_file("inputs", "era5.zarr", broken_zarr),
         ("era5.zarr", "inputs", "not valid JSON")),
    Case("data-grib-garbage", source_file("inputs", "gfs.t00z.pgrb2.0p25.f003", grib_garbage),
         ("gfs.t00z.pgrb2.0p25.f003", "inputs")),
    Case("data-grib-cut-short", source_file("inputs", "gfs.t00z.pgrb2.0p25.f006", grib_cut_short),
         ("gfs.t00z.pgrb2.0p25.f006", "GRIB")),
    Case("data-a-folder-of-netcdf", source_file("inputs", "era5", folder_of_netcdf), ("era5", "inputs")),
]

CONFIG_CASES = [
    Case("config-missing-file", lambda w, tmp: ["train", "regression", tmp / "run.yaml"],
         ("run.yaml", "does not exist")),
    Case("config-not-yaml", train_text("data: spec.yaml\nregression: {steps: 2\n"), ("config.yaml", "not valid YAML")),
    Case("config-binary-file", lambda w, tmp: ["train", "regression", write(tmp / "run.yaml", bytes(range(128, 256)))],
         ("run.yaml", "not a text file")),
    Case("config-is-a-folder", lambda w, tmp: ["train", "regression", tmp], ("is a folder",)),
    Case("config-not-a-mapping", train_text("- data\n- model\n"), ("config.yaml", "mapping")),
    Case("config-empty", train_text(""), ("config.yaml", "data", "Field required")),
    Case("config-unknown-section", train(set_in("sampling", {"num_steps": 4})), ("config.yaml", "sampling")),
    Case("config-unknown-key", train(set_in("regression", "stepz", 4)), ("config.yaml", "regression.stepz")),
    Case("config-section-not-a-mapping", train(set_in("model", "tiny")), ("config.yaml", "model")),
    Case("config-wrong-type", train(set_in("regression", "steps", "many")), ("config.yaml", "regression.steps")),
    Case("config-steps-0", train(set_in("regression", "steps", 0)),
         ("config.yaml", "regression.steps", "greater than 0")),
    Case("config-lr-negative", train(set_in("regression", "lr", -1)), ("config.yaml", "regression.lr")),
    Case("config-batch-per-device-does-not-divide", train(set_in("regression", "batch_per_device", 3)),
         ("regression.batch_per_device", "3", "regression.batch_size 4")),
    Case("config-channel-weights-wrong-length", train(set_in("regression", "channel_weights", [1.0, 2.0])),
         ("regression.channel_weights", "2 values", "3 target channels")),
    Case("config-channel-mult-empty", train(set_in("model", "channel_mult", [])),
         ("config.yaml", "model.channel_mult")),
    Case("config-unknown-preset", train(set_in("model", "preset", "huge")), ("model.preset", "'huge'", "tiny")),
    Case("config-unknown-recipe", train(set_in("regression", "recipe", "fast")), ("regression.recipe", "'paper'")),
    Case("config-betas-one-number", train(set_in("regression", "betas", [0.9])), ("regression.betas",)),
    Case("config-schedule-unknown", train(set_in("regression", "schedule", "linear")),
         ("regression.schedule", "'cosine'")),
    Case("config-member-batch-0", train(set_in("generate", "member_batch", 0)), ("generate.member_batch",)),
    Case("config-patch-shape-one-number", train(set_in("regression", "patch_shape", [8])), ("regression.patch_shape",)),
    Case("config-patch-larger-than-grid", train(set_in("regression", "patch_shape", [32, 32])),
         ("regression.patch_shape", "32×32", "16×24")),
    Case("config-data-missing", train(drop("data")), ("config.yaml", "data", "Field required")),
    Case("config-data-spec-does-not-exist", train(set_in("data", "specs/spec.yaml")), ("spec.yaml", "does not exist")),
    Case("config-stats-for-other-channels", stats_of_other_channels, ("stats.json", "t@850", "corrdiff data stats")),
    Case("config-set-without-value", train(None, "--set", "foo"), ("--set", "'foo'", "KEY=VALUE")),
    Case("config-set-unknown-key", train(None, "--set", "regression.foo=1"), ("regression.foo",)),
    Case("config-set-on-a-value", train(None, "--set", "regression.steps.x=1"), ("--set", "'steps'", "not a section")),
    Case("config-set-on-a-top-level-value", train(None, "--set", "data.path=x"), ("--set", "'data'", "not a section")),
    Case("config-set-bad-yaml", train(None, "--set", "regression.patch_shape=[8, 8"),
         ("--set", "regression.patch_shape", "not valid YAML")),
    Case("config-device-cuda-on-cpu", train(set_in("device", "cuda")), ("device", "'cuda'", "auto"), marks=(NO_CUDA,)),
    Case("config-device-nonsense", train(set_in("device", "gpu")), ("device", "'gpu'")),
    Case("config-stats-std-missing", stats_missing_a_std,
         ("stats.json", "4 channels", "std holds 3 values", "corrdiff data stats --overwrite")),
    Case("config-seed-negative", train(set_in("regression", "seed", -1)), ("config.yaml", "regression.seed")),
    Case("config-distill-sigma-min-above-max", distill(set_in("distill", {"sigma_min": 900.0})),
         ("config.yaml", "distill", "sigma_min < sigma_max")),
    Case("config-distill-distance-unknown", distill(set_in("distill", {"distance": "l1"})),
         ("config.yaml", "distill.distance", "'pseudo_huber'")),
    Case("config-set-option-without-value", lambda w, tmp: ["train", "regression", w.spec, "--set"], ("--set",),
         usage=True),
]

CLI_CASES = [
    Case("cli-generate-config-does-not-exist", lambda w, tmp: ["generate", tmp / "run.yaml", "--out", tmp / "e.nc"],
         ("run.yaml", "does not exist")),
    Case("cli-generate-spec-is-the-config", lambda w, tmp: ["generate", w.spec, "--out", tmp / "e.nc"],
         ("spec.yaml", "is a dataset spec", "not a run config")),
    Case("cli-generate-checkpoint-does-not-exist", generate("--checkpoint-regression", in_tmp("nowhere")),
         ("nowhere", "no checkpoint")),
    Case("cli-generate-times-not-in-data", generate("--times", "1999-01-01T00"), ("--times", "1999-01-01")),
    Case("cli-generate-times-not-a-time", generate("--times", "tomorrow noon"), ("--times", "'tomorrow noon'")),
    Case("cli-generate-members-0", generate("--members", "0"), ("generate.members", "greater than 0")),
    Case("cli-generate-members-not-a-number", generate("--members", "many"), ("--members",), usage=True),
    Case("cli-generate-format-nonsense", generate("--out", in_tmp("e.out"), "--format", "grib"),
         ("generate.format", "'netcdf'", "'zarr'")),
    Case("cli-generate-split-unknown", generate("--split", "valid"), ("spec.yaml", "no split 'valid'")),
    Case("cli-generate-input-does-not-exist", generate("--input", in_tmp("gfs.nc")),
         ("--input", "gfs.nc", "no such file")),
    Case("cli-generate-input-glob-matches-nothing", generate("--input", in_tmp("gfs.*.grib2")),
         ("--input", "gfs.*.grib2", "no file matches")),
    Case("cli-generate-checkpoint-is-a-file", generate("--checkpoint-diffusion", lambda w, tmp: w.spec),
         ("spec.yaml", "no checkpoint")),
    Case("cli-generate-checkpoints-swapped",
         generate("--checkpoint-diffusion", lambda w, tmp: w.config.parent / "run" / "regression"),
         ("regression", "not a diffusion one")),
    Case("cli-generate-input-not-netcdf", generate("--input", in_tmp("gfs.nc", text_file("forecast\n"))),
         ("gfs.nc", "not a NetCDF")),
    Case("cli-generate-input-units-incompatible",
         generate("--input", in_tmp("gfs.nc", dataset_file(coarse_temperature_in_m_s))),
         ("gfs.nc", "'t@850'", "'m s-1'", "'K'", "trained")),
    Case("cli-generate-patch-larger-than-grid", generate("--set", "generate.patch_shape=[64,64]"),
         ("generate.patch_shape",)),
    Case("cli-generate-patch-overlap-too-large",
         generate("--set", "generate.patch_shape=[8,8]", "--set", "generate.patch_overlap=[8,8]"),
         ("generate.patch_overlap",)),
    Case("cli-generate-out-under-a-file", generate("--out", lambda w, tmp: write(tmp / "notes.txt", "x") / "e.nc"),
         ("--out", "notes.txt", "not a folder")),
    Case("cli-generate-coherence-unknown", generate("--coherence", "ar2"),
         ("generate.coherence.method", "'independent' or 'ar1'")),
    Case("cli-generate-coherence-rho-1", generate("--coherence", "ar1", "--coherence-rho", "1"),
         ("generate.coherence.rho", "at least 0 and below 1")),
    Case("cli-generate-coherence-rho-negative", generate("--coherence", "ar1", "--coherence-rho", "-0.5"),
         ("generate.coherence.rho", "at least 0 and below 1")),
    Case("cli-generate-coherence-rho-not-a-number", generate("--coherence-rho", "high"),
         ("generate.coherence.rho", "valid number")),
    Case("cli-generate-coherence-rho-per-channel-out-of-range",
         generate("--coherence", "ar1", "--coherence-rho", "0.5,1.5"), ("generate.coherence.rho", "below 1")),
    Case("cli-generate-coherence-with-an-sde",
         generate("--coherence", "ar1", "--coherence-rho", "0.5", "--set", "sampler.solver=dpmpp_2m_sde"),
         ("generate.coherence.method ar1 needs a deterministic sampler", "sampler.solver dpmpp_2m_sde")),
    Case("cli-generate-coherence-with-churn",
         generate("--coherence", "ar1", "--coherence-rho", "0.5", "--set", "sampler.S_churn=1"),
         ("generate.coherence.method ar1 needs a deterministic sampler", "sampler.S_churn 1.0", "S_churn=0")),
    Case("cli-score-ensemble-does-not-exist", score(predictions=in_tmp("ens.nc")), ("ens.nc", "no such file")),
    Case("cli-score-truth-does-not-exist", score(truth=in_tmp("truth.nc")), ("truth.nc", "no such file")),
    Case("cli-score-truth-spec-does-not-exist", score(truth=in_tmp("truth.yaml")), ("truth.yaml", "does not exist")),
    Case("cli-score-baseline-without-name", score("--baseline", "rf.nc"), ("--baseline", "'rf.nc'", "NAME=FILE")),
    Case("cli-score-baseline-does-not-exist", score("--baseline", "rf=/nowhere/rf.nc"), ("rf.nc", "no such file")),
    Case("cli-score-not-an-ensemble",
         score(predictions=in_tmp("stations.nc", dataset_file(lambda: xr.Dataset({"rain": ("station", [1.0, 2.0])})))),
         ("stations.nc", "corrdiff generate")),
    Case("cli-score-a-text-file", score(predictions=in_tmp("ens.nc", text_file("not an ensemble\n"))),
         ("ens.nc", "cannot be opened as NetCDF or Zarr")),
    Case("cli-score-truth-is-the-coarse-input", score(truth=lambda w, tmp: w.data / "coarse.nc"),
         ("coarse.nc", "'t2m'", "('time', 'y', 'x')")),
    Case("cli-score-truth-a-text-file", score(truth=in_tmp("truth.nc", text_file("truth\n"))),
         ("truth.nc", "cannot be opened")),
    Case("cli-score-spectra-times-negative", score("--spectra", "2d", "--spectra-times", "-1"), ("--spectra-times",),
         usage=True),
    Case("cli-score-out-under-a-file", score("--out", lambda w, tmp: write(tmp / "notes.txt", "x") / "s.nc"),
         ("--out", "notes.txt", "not a folder")),
    Case("cli-score-split-unknown", score("--split", "valid"), ("spec.yaml", "no split 'valid'")),
    Case("cli-score-variable-unknown", score("--variable", "q"), ("ensemble.nc", "'q'")),
    Case("cli-report-time-not-a-time", report("--time", "noon"), ("--time", "'noon'")),
    Case("cli-report-spectra-none", report("--spectra", "none"), ("--spectra",), usage=True),
    Case("cli-data-stats-chunk-0", stats_with("--chunk", "0"), ("--chunk",), usage=True),
    Case("cli-report-out-is-a-file", lambda w, tmp: ["report", w.ensemble, "--truth", w.spec, "--out",
                                                      write(tmp / "report.html", "<html/>"), "-q"], ("report.html",)),
    Case("cli-baseline-rf-trees-0", lambda w, tmp: ["baseline", "rf", w.spec, "--out", tmp / "rf.nc", "--trees", "0",
                                                    "-q"], ("--trees",), usage=True),
    Case("cli-baseline-rf-samples-0", lambda w, tmp: ["baseline", "rf", w.spec, "--out", tmp / "rf.nc", "--samples",
                                                      "0", "-q"], ("--samples",), usage=True),
    Case("cli-baseline-rf-jobs-0", lambda w, tmp: ["baseline", "rf", w.spec, "--out", tmp / "rf.nc", "--jobs", "0",
                                                   "-q"], ("--jobs",), usage=True),
    Case("cli-baseline-out-under-a-file",
         lambda w, tmp: ["baseline", "interp", w.spec, "--out", write(tmp / "notes.txt", "x") / "b.nc", "-q"],
         ("--out", "notes.txt", "not a folder")),
    Case("cli-report-out-under-a-file",
         lambda w, tmp: ["report", w.ensemble, "--truth", w.spec, "--out", write(tmp / "notes.txt", "x") / "r", "-q"],
         ("--out", "notes.txt", "not a folder")),
    Case("cli-presets-unknown", lambda w, tmp: ["presets", "huge"], ("'huge'", "tiny")),
    Case("cli-baseline-spec-does-not-exist",
         lambda w, tmp: ["baseline", "interp", tmp / "spec.yaml", "--out", tmp / "b.nc"],
         ("spec.yaml", "does not exist")),
]

def tune(*args):
    """`corrdiff tune` of the trained run on its train split, into tmp/tune, with `args`."""
    return lambda w, tmp: ["tune", w.config, "--split", "train", "--out", tmp / "tune", "-q", *args]


def case(*args):
    """`corrdiff case` of the generated ensemble into tmp/case, with `args`."""
    return lambda w, tmp: ["case", w.ensemble, "--truth", w.spec, "--out", tmp / "case", *args]


# Arguments out of their range or role (issue 22): each named with its value and what is allowed.
ARGUMENT_CASES = [
    Case("cli-generate-seed-negative", generate("--seed", "-1"), ("generate.seed", "greater than or equal to 0")),
    Case("cli-tune-nfe-0", tune("--nfe", "0"), ("--nfe 0", "at least 1")),
    Case("cli-tune-nfe-negative-for-heun", tune("--solver", "heun", "--nfe", "-3"), ("--nfe -3", "at least 1")),
    Case("cli-tune-times-negative", tune("--times", "-1"), ("--times -1", "at least 0")),
    Case("cli-tune-tolerance-nan", tune("--tolerance", "nan"), ("--tolerance nan", "at least 0")),
    Case("cli-tune-solver-unknown", tune("--solver", "rk4"), ("--solver 'rk4'", "'heun'", "'dpmpp_2m'")),
    Case("cli-tune-churn-nan", tune("--solver", "heun", "--churn", "nan"), ("S_churn", "nan", "at least 0")),
    Case("cli-generate-sampler-rho-nan", generate("--set", "sampler.rho=.nan"), ("sampler", "rho must be positive")),
    Case("cli-tune-seed-negative", tune("--seed", "-2"), ("generate.seed", "greater than or equal to 0")),
    Case("cli-case-section-latitude-95", case("--section", "95,113:23,113"),
         ("--section 95,113:23,113", "latitude 95", "-90..90")),
    Case("cli-case-section-longitude-400", case("--section", "21,116:22,400"),
         ("--section 21,116:22,400", "longitude 400", "-180..360")),
    Case("cli-case-near-latitude-minus-91", case("--vortex", "--near", "-91,118"), ("--near", "latitude -91")),
    Case("cli-case-wind-a-temperature", case("--vortex", "--wind", "u10,t2m"),
         ("--wind u10,t2m", "'t2m' is air temperature (K)", "not a wind component")),
    Case("cli-case-wind-a-reflectivity", case("--vortex", "--wind", "u10,refl"),
         ("--wind u10,refl", "'refl'", "not a wind component")),
    Case("cli-case-wind-twice-eastward", case("--vortex", "--wind", "u10,u10"),
         ("--wind u10,u10", "'u10' is the eastward wind", "eastward (u) component first")),
    Case("cli-case-centre-by-unknown", case("--vortex", "--centre-by", "eye"), ("--centre-by",), usage=True),
    Case("cli-baseline-rf-seed-negative", lambda w, tmp: ["baseline", "rf", w.spec, "--out", tmp / "rf.nc", "--seed",
                                                          "-1", "-q"], ("--seed",), usage=True),
    Case("cli-import-out-is-a-file",
         lambda w, tmp: ["import", "physicsnemo", "--out", write(tmp / "run.txt", "x"), "--package",
                         tmp / "package"],
         ("--out", "run.txt", "is a file, not a folder")),
    Case("cli-export-out-is-a-file",
         lambda w, tmp: ["export", w.config.parent / "run", "--out", write(tmp / "model.txt", "x")],
         ("--out", "model.txt", "is a file, not a folder")),
    Case("cli-train-distill-without-a-teacher", distill(), ("distill", "no checkpoint found", "diffusion")),
    Case("cli-train-distill-a-student",
         lambda w, tmp: distill(set_in("distill", {"teacher_checkpoint": str(w.student)}))(w, tmp),
         ("distill.teacher_checkpoint", "consistency student itself")),
    Case("cli-generate-a-student-with-heun", generate("--checkpoint-diffusion", lambda w, tmp: w.student),
         ("sampler.solver", "is a consistency student", "sampler.solver: consistency")),
    Case("cli-generate-a-denoiser-with-consistency", generate("--set", "sampler.solver=consistency"),
         ("sampler.solver", "consistency", "is a denoiser", "heun")),
    Case("cli-tune-consistency-on-a-denoiser", tune("--solver", "consistency"),
         ("--solver consistency", "a denoiser", "heun")),
    Case("cli-export-which-unknown", lambda w, tmp: ["export", w.config.parent / "run", "--out", tmp / "m",
                                                     "--which", "worst"], ("--which", "'worst'", "best-crps")),
]

CASES = SPEC_CASES + DATA_CASES + CONFIG_CASES + CLI_CASES + ARGUMENT_CASES


def params(cases):
    return [pytest.param(c, id=c.id, marks=c.marks) for c in cases]


def assert_refused(result, case: Case) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception.with_traceback(result.exc_info[2])  # a bug: show where it came from
    output = result.output
    assert "Traceback" not in output, output
    if case.usage:
        assert result.exit_code == 2 and ("Usage:" in output or "Error" in output), output
        flat = " ".join(output.split())
        assert all(name in flat for name in case.names), output
        return flat
    assert result.exit_code == 2, f"exit code {result.exit_code}:\n{output}"
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one `error:` line, last:\n{output}"
    missing = [name for name in case.names if name not in errors[0]]
    assert not missing, f"{errors[0]}\ndoes not name {missing}"
    return errors[0]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input_is_one_line_naming_what_to_fix(world, tmp_path, case):
    args = case.build(world, tmp_path)
    assert_refused(invoke(*args), case)


def test_the_battery_is_broad():
    counts = {kind: len(cases) for kind, cases in
              (("spec", SPEC_CASES), ("data", DATA_CASES), ("config", CONFIG_CASES), ("cli", CLI_CASES))}
    assert sum(counts.values()) >= 60 and min(counts.values()) >= 10, counts
    assert len({c.id for c in CASES}) == len(CASES)


# --- SIGKILL at a random moment, then the same command again -----------------------------------------------------
# 12 times × 8 members × 8 sampler steps: about a second of writing on 2 cores, after ~2 s of start-up.
KILL_RUN = ["--members", "8", "--set", "sampler.num_steps=8", "--split", "all", "--quiet"]


def start_generate(config: Path, out: Path) -> subprocess.Popen:
    """`python -m corrdiff generate` in a process of its own, as a user (or a batch scheduler) starts it."""
    # The repository root first on the path, as for tests/inference/test_generate.py's torchrun test.
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "corrdiff", "generate", str(config), "--out", str(out), *KILL_RUN],
                            cwd=out.parent, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_to_the_end(config: Path, out: Path) -> float:
    """Run generate to completion; the seconds from the output's first appearance to the command's last line
    (the file finished, before the interpreter's own exit)."""
    process, appeared, lines = start_generate(config, out), None, []

    def read():  # the time each line comes, in a thread: reading the pipe blocks
        for line in process.stdout:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read)
    reader.start()
    while process.poll() is None:
        if appeared is None and out.exists():
            appeared = time.monotonic()
        time.sleep(0.005)
    reader.join()
    output = "".join(line for _, line in lines)
    assert process.returncode == 0 and "ensemble written" in output, output
    written = next(t for t, line in lines if line.startswith("ensemble written"))
    return written - (appeared or written)


def open_any(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, **({"engine": "zarr", "consolidated": False} if path.suffix == ".zarr" else {}))


def assert_same_ensemble(path: Path, reference: Path) -> None:
    """Every variable and coordinate equal bit for bit, every attribute but `history` (the wall-clock time) equal."""
    with open_any(path) as got, open_any(reference) as expected:
        for name in expected.variables:
            np.testing.assert_array_equal(got[name].values, expected[name].values, err_msg=name)
        xr.testing.assert_identical(got.drop_attrs(deep=False), expected.drop_attrs(deep=False))
        strip = lambda attrs: {k: v for k, v in attrs.items() if k != "history"}
        assert strip(got.attrs) == strip(expected.attrs)
        assert bool(got["generation_complete"].all())


@pytest.fixture(scope="module")
def uninterrupted(world, tmp_path_factory):
    """{suffix: (the file of an uninterrupted run, the seconds it spent writing)}."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    runs = {}
    for suffix in (".nc", ".zarr"):
        out = folder / f"ensemble{suffix}"
        runs[suffix] = out, run_to_the_end(world.config, out)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generate_killed_at_a_random_moment_resumes_to_the_same_file(world, uninterrupted, tmp_path, suffix, seed):
    reference, writing_seconds = uninterrupted[suffix]
    out = tmp_path / f"ensemble{suffix}"
    delay = random.Random(seed).uniform(0.0, writing_seconds)  # from the output's first appearance to its end
    process = start_generate(world.config, out)
    while process.poll() is None and not out.exists():
        time.sleep(0.005)
    time.sleep(delay)
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    if killed:
        assert process.returncode == -signal.SIGKILL
    run_to_the_end(world.config, out)  # the same command again
    assert_same_ensemble(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary or part file left
