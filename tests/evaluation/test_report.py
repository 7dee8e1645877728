"""The report: every figure written at a modest size and referenced by index.html; the demo's evaluation."""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import BoundaryNorm
from PIL import Image

from corrdiff.demo import evaluate_demo
from corrdiff.evaluation.plots import colour_scale
from tests.evaluation import evaluation_fixtures as fx
from tests.evaluation.test_cli import invoke, spec_case  # noqa: F401  (spec_case: a fixture)

FIGURES = ["spectra.png", "pdfs.png", "rank_histograms.png", "spread_skill.png", "scores_by_time.png"]


def check_report(folder: Path, variables) -> str:
    """Every PNG opens, is modest in size and is referenced by index.html, which references nothing else."""
    page = (folder / "index.html").read_text()
    expected = FIGURES + [f"map_{v}.png" for v in variables]
    referenced = re.findall(r"<img src='([^']+)'", page)
    assert sorted(referenced) == sorted(expected)
    for name in expected:
        with Image.open(folder / name) as image:
            width, height = image.size
            assert 300 <= width <= 1600 and 200 <= height <= 1200, (name, image.size)
            image.verify()
    assert "<table class='scores'>" in page and "corrdiff" in page
    return page


def test_report_command_writes_every_figure_and_the_page(spec_case, tmp_path):
    folder, spec, ens = spec_case
    out = tmp_path / "report"
    result = invoke("report", ens, "--truth", spec, "--out", out, "--time", "2021-01-02T06")
    assert result.exit_code == 0, result.output
    page = check_report(out, ["t2m", "u10", "refl"])
    assert "interp" in page and "regression" in page and "2021-01-02 06:00" in page
    assert xr.open_dataset(out / "scores.nc")["crps"].dims == ("model", "variable")


def test_evaluate_demo_is_fast_and_returns_its_outputs(tmp_path):
    """The demo's size: 100 times × 8 members × 64×64 × 3 variables, truth as a store."""
    truth, ensemble, regression = fx.case(times=100, members=8, shape=(64, 64))
    ens = fx.write_ensemble(tmp_path / "ensemble.nc", ensemble, regression)
    truth_path = fx.write_truth(tmp_path / "truth.nc", truth)
    lines = []
    start = time.perf_counter()
    paths = evaluate_demo(truth_path, ens, tmp_path / "out", echo=lines.append)
    seconds = time.perf_counter() - start
    assert seconds < 30, seconds
    assert paths["scores"] == tmp_path / "out" / "scores.nc" and paths["scores"].exists()
    assert paths["report"] == tmp_path / "out" / "report" / "index.html"
    check_report(paths["report"].parent, ["u", "v", "vorticity"])
    text = "\n".join(lines)
    assert "corrdiff (8)" in text and "regression" in text and "CRPS" in text


def test_colour_scales_suit_the_variable():
    field = xr.DataArray(np.zeros((2, 2)), attrs={"units": "dBZ"})
    _, norm = colour_scale("refl", field, np.array([0.0, 40.0]))
    assert isinstance(norm, BoundaryNorm) and norm.boundaries[0] == 5
    wind = xr.DataArray(np.zeros((2, 2)), attrs={"units": "m s-1"})
    cmap, norm = colour_scale("u", wind, np.linspace(-7, 10, 50))
    assert norm.vmin == -norm.vmax and cmap.name == "RdBu_r"
    temperature = xr.DataArray(np.zeros((2, 2)), attrs={"units": "K"})
    cmap, norm = colour_scale("t2m", temperature, np.linspace(280, 300, 50))
    assert cmap.name == "RdYlBu_r" and 280 <= norm.vmin < norm.vmax <= 300


def test_maps_draw_local_coastlines_with_cartopy(tmp_path):
    """With a Natural Earth coastline shapefile on disk, maps use cartopy and draw it (never downloading).

    In a subprocess: cartopy must be imported before netCDF4 opens a file (see plots._import_cartopy_early).
    """
    if importlib.util.find_spec("cartopy") is None:  # not importorskip: importing it here would crash pytest's exit
        pytest.skip("cartopy is not installed")
    shapefile = pytest.importorskip("shapefile")  # pyshp, a cartopy dependency
    folder = tmp_path / "cartopy" / "shapefiles" / "natural_earth" / "physical"
    folder.mkdir(parents=True)
    with shapefile.Writer(str(folder / "ne_110m_coastline"), shapeType=shapefile.POLYLINE) as writer:
        writer.field("name", "C")
        writer.line([[[120.0, 22.0], [121.0, 23.5], [122.5, 24.5]]])
        writer.record("test coast")
    script = (
        "import numpy as np, xarray as xr\n"
        "from corrdiff.evaluation import plots\n"
        "assert plots.coastline_file() is not None\n"
        "lat, lon = np.meshgrid(np.linspace(22, 25, 12), np.linspace(120, 123, 12), indexing='ij')\n"
        "field = xr.DataArray(np.zeros((12, 12)), attrs={'units': 'm s-1'})\n"
        "panels = {'truth': np.sin(lat), 'member': np.cos(lon)}\n"
        f"plots.map_panels(__import__('pathlib').Path({str(tmp_path / 'map.png')!r}), 'u', panels, np.abs(lat - 23),"
        " lat, lon, field, 'now')\n"
    )
    env = {**os.environ, "CARTOPY_DATA_DIR": str(tmp_path / "cartopy"), "no_proxy": "", "NO_PROXY": "",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}  # a download would fail
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "map.png") as image:
        assert image.size[0] <= 1600


@pytest.mark.slow
def test_evaluate_demo_on_the_demo_dataset(tmp_path):
    """The real demo data path: truth and the interpolation baseline from the demo's spec."""
    pytest.importorskip("pyqg_jax")
    from corrdiff.data import build_demo_dataset, load_spec, open_targets

    spec = build_demo_dataset(tmp_path / "data", progress=False, times=60, held_out=12, gap=2, spinup_steps=96,
                              steps_per_snapshot=8)
    truth = open_targets(load_spec(spec), split="test").load()
    rng = np.random.default_rng(0)
    fields = {v: truth[v].values for v in truth.data_vars}
    ensemble = {v: (a[:, None] + a.std() * 0.3 * rng.normal(size=(a.shape[0], 3, *a.shape[1:]))).astype(np.float32)
                for v, a in fields.items()}
    path = fx.write_ensemble(tmp_path / "ensemble.nc", ensemble, fields, times=truth["time"].values,
                             lat_lon=(truth["lat"].values, truth["lon"].values),
                             attrs={v: truth[v].attrs for v in fields})
    lines = []
    paths = evaluate_demo(spec, path, tmp_path / "out", echo=lines.append)
    page = check_report(paths["report"].parent, ["u", "v", "vorticity"])
    assert "interp" in page and "interp" in "\n".join(lines)
    scores = xr.open_dataset(paths["scores"])
    assert scores.sizes["time"] == 12 and list(scores["model"].values) == ["corrdiff", "regression", "interp"]
    assert float(scores["mae"].sel(model="regression", variable="u")) == pytest.approx(0, abs=1e-6)
