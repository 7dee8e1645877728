"""The specs of docs/real-data.md, each through `corrdiff data check`: on the real files of ../shared/realdata
(linked into a folder beside the spec; skipped when absent), with small lat/lon companions where the sample
files have no real partner, and on wrfout files laid out as WRF writes them for the coarsening pair."""

import re
from pathlib import Path

import numpy as np
import pytest

from tests.cli_runner import invoke, succeeded
from tests.data.real_layouts import write_wrfout
from tests.data.test_realdata_check import fine_box, latlon_file

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "real-data.md"
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
# spec name: (real files it reads, a companion to write: (file, times, (lat, lon), {variable: units}) or None)
REAL_SPECS = {
    "wrf-parent-nest": (["wrf_tip_d1.nc", "wrf_tip_d2.nc"], None),
    "gfs-real": (["gfs.t12z.pgrbf120.2p5deg.grib2"],
                 ("fine.nc", ["2011-01-15T12"], fine_box(36.0, -99.0), {"u10": "m s-1", "v10": "m s-1"})),
    "nam": (["nam.t00z.awp21100.tm00.grib2"],
            ("fine.nc", ["2018-09-17T00"], fine_box(36.0, -99.0), {"u10": "m s-1", "v10": "m s-1"})),
    "hrrr": (["subset_20201214_hrrr.t00z.wrfsfcf12.grib2"],
             ("coarse.nc", ["2020-12-14T12"], (np.arange(20.0, 55.1), np.arange(-135.0, -59.9)), {"tp": "kg m-2"})),
    "era5-members": (["era5-levels-members.grib"],
                     ("fine.nc", ["2017-01-01T00", "2017-01-01T12", "2017-01-02T00", "2017-01-02T12"],
                      fine_box(40.0, 5.0), {"t2m": "K"})),
    "moving-nest": (["ci_test_file.nc"], None),
}


def guide_spec(name: str) -> str:
    match = re.search(rf"<!-- spec: {re.escape(name)} -->\s*```yaml\n(.*?)```", GUIDE.read_text(), re.S)
    assert match, f"no spec {name!r} in {GUIDE}"
    return match.group(1)


def test_every_spec_of_the_guide_is_checked():
    named = set(re.findall(r"<!-- spec: ([\w-]+) -->", GUIDE.read_text()))
    assert named == set(REAL_SPECS) | {"coarsened"}


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
@pytest.mark.parametrize("name", sorted(REAL_SPECS))
def test_guide_spec_on_the_real_files(tmp_path, name):
    pytest.importorskip("cfgrib")
    files, companion = REAL_SPECS[name]
    for file in files:
        (tmp_path / file).symlink_to(REALDATA / file)
    if companion:
        file, times, (lat, lon), variables = companion
        latlon_file(tmp_path / file, times, lat, lon, variables)
    (tmp_path / "spec.yaml").write_text(guide_spec(name))
    assert "split " in succeeded(invoke("data", "check", tmp_path / "spec.yaml")).output


def test_guide_coarsening_pair_on_wrfout_files(tmp_path):
    write_wrfout(tmp_path / "wrf")
    succeeded(invoke("data", "coarsen", str(tmp_path / "wrf" / "wrfout_d01_*"), "--out", tmp_path / "coarse.nc",
                     "--factor", 4, "--variable", "T2,U10,V10", "--quiet"))
    (tmp_path / "spec.yaml").write_text(guide_spec("coarsened"))
    output = succeeded(invoke("data", "check", tmp_path / "spec.yaml")).output
    assert "split train" in output and "split test" in output
