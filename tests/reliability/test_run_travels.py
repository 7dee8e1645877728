"""A run folder copied elsewhere with its data resumes: the data are compared by contents, not by path."""

import shutil

import netCDF4
import yaml

from tests.cli_runner import invoke, refused, succeeded, TINY_RUN
from tests.data import fixtures


def test_a_copied_run_resumes_and_changed_data_are_refused(tmp_path, caplog):
    home = tmp_path / "home"
    fixtures.write_generic(home / "data")
    (home / "config.yaml").write_text(yaml.safe_dump({"data": "data/spec.yaml", "run_dir": "run", **TINY_RUN}))
    succeeded(invoke("train", "regression", home / "config.yaml", "--quiet"))
    assert (home / "run" / "regression" / "data_hashes.json").exists()  # the contents' cache, by path/size/mtime
    away = tmp_path / "away"
    shutil.copytree(home, away)
    shutil.rmtree(home)  # the original place is gone: only contents can tell the data are the same
    longer = ["--set", "regression.steps=4", "--resume", "--quiet"]
    result = succeeded(invoke("train", "regression", away / "config.yaml", *longer))
    assert "the same spec and data files by contents" in result.output
    moved_again = tmp_path / "again"
    shutil.copytree(away, moved_again)
    with netCDF4.Dataset(moved_again / "data" / "coarse.nc", "a") as nc:
        nc["t2m"][0, 0, 0] = nc["t2m"][0, 0, 0] + 3.0  # other data under the same names
    line = refused(invoke("train", "regression", moved_again / "config.yaml", "--set", "regression.steps=6",
                          "--resume", "--quiet"))
    assert "was trained with other settings" in line and "data: " in line
