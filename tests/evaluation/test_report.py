"""The report: every figure written at a modest size and referenced by index.html; the demo's evaluation."""

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import BoundaryNorm
from PIL import Image

from corrdiff.demo import evaluate_demo
from corrdiff.evaluation.plots import colour_scale, degrees_label
from tests.evaluation import evaluation_fixtures as fx
from tests.evaluation.test_cli import invoke, spec_case  # noqa: F401  (spec_case: a fixture)

FIGURES = ["spectra.png", "pdfs.png", "rank_histograms.png", "spread_skill.png", "scores_by_time.png",
           "time_series.png"]  # the last: consecutive times (all these cases; a single time has none)
VORTEX = ["vortex_profiles.png", "vortex_map.png"]  # data with vorticity or pressure (the demo's)


def check_report(folder: Path, variables, optional=()) -> str:
    """Every PNG opens, is modest in size and is referenced by index.html, which references nothing else."""
    page = (folder / "index.html").read_text()
    expected = FIGURES + [f"map_{v}.png" for v in variables] + list(optional)
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
    result = invoke("report", ens, "--truth", spec, "--out", out, "--time", "2021-01-02T06", "--spectra", "1d")
    assert result.exit_code == 0, result.output
    page = check_report(out, ["t2m", "u10", "refl"])
    assert "interp" in page and "regression" in page and "2021-01-02 06:00" in page
    assert "Power spectra (1-D)" in page and "spectra shown: 1-D, along x" in page
    assert xr.open_dataset(out / "scores.nc")["crps"].dims == ("model", "variable")


def test_evaluate_demo_returns_its_outputs(tmp_path):
    """The demo's size: 100 times × 8 members × 64×64 × 3 variables, truth as a store (its speed is measured
    by benchmarks/bench_scoring.py, not here)."""
    truth, ensemble, regression = fx.case(times=100, members=8, shape=(64, 64))
    ens = fx.write_ensemble(tmp_path / "ensemble.nc", ensemble, regression)
    truth_path = fx.write_truth(tmp_path / "truth.nc", truth)
    lines = []
    paths = evaluate_demo(truth_path, ens, tmp_path / "out", echo=lines.append)
    assert paths["scores"] == tmp_path / "out" / "scores.nc" and paths["scores"].exists()
    assert paths["report"] == tmp_path / "out" / "report" / "index.html"
    page = check_report(paths["report"].parent, ["u", "v", "vorticity"], VORTEX)
    assert "Strongest vortex of the truth" in page
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


def test_dry_non_negative_fields_get_a_sequential_scale_from_zero():
    """A dry truth once gave a −0.1…0.1 scale with zero drawn mid-blue."""
    precip = xr.DataArray(np.zeros((2, 2)), attrs={"units": "mm h-1"})
    cmap, norm = colour_scale("precip", precip, np.zeros(50))
    assert norm.vmin == 0 and norm.vmax > 0 and cmap.name == "Blues"
    assert cmap(norm(0.0)) == cmap(0.0)  # zero is the lightest colour, not the middle of a diverging map
    cmap, norm = colour_scale("precip", precip, np.r_[np.zeros(995), np.full(5, 12.0)])  # sparse rain
    assert norm.vmin == 0 and norm.vmax == 12.0
    cmap, norm = colour_scale("speed", xr.DataArray(np.zeros(1), attrs={"units": "m s-1"}), np.linspace(0, 9, 50))
    assert norm.vmin == 0 and cmap.name == "YlGnBu"
    dry_radar = xr.DataArray(np.zeros((2, 2)), attrs={"units": "dBZ"})
    _, norm = colour_scale("refl", dry_radar, np.zeros(50))
    assert isinstance(norm, BoundaryNorm) and norm.boundaries[0] == 5  # 0 dBZ: below the scale, white
    pressure = xr.DataArray(np.zeros(1), attrs={"units": "Pa"})  # positive but far from 0: not from zero
    _, norm = colour_scale("sp", pressure, np.linspace(99000, 102000, 50))
    assert norm.vmin > 90000


def test_maps_draw_the_shipped_coastlines_without_network(tmp_path, monkeypatch):
    """Taiwan's coast is drawn from the package's own file; any attempt to open a socket fails the test."""
    import socket

    from matplotlib.collections import LineCollection

    from corrdiff.evaluation import coastlines, plots

    def no_network(*args, **kwargs):
        raise AssertionError("the maps tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    lat, lon = np.meshgrid(np.linspace(21.8, 25.4, 20), np.linspace(119.8, 122.2, 20), indexing="ij")
    pieces = coastlines.lines_in(lon, lat)
    assert pieces and sum(len(p) for p in pieces) > 50
    assert all(119 <= p[:, 0].min() and p[:, 0].max() <= 123 for p in pieces)
    assert coastlines.lines_in(lon + 360, lat)[0][:, 0].min() > 300  # the domain's 0…360 convention is kept
    drawn = []
    monkeypatch.setattr(plots.plt, "close", lambda fig: drawn.append(fig))  # keep the figure to look at it
    field = xr.DataArray(np.zeros((20, 20)), attrs={"units": "m s-1"})
    path = plots.map_panels(tmp_path / "map.png", "u", {"truth": np.sin(lat), "member": np.cos(lon)},
                            np.abs(lat - 23), lat, lon, field, "now")
    value_axes = [ax for ax in drawn[0].axes if ax.get_label() != "<colorbar>"]
    assert all(any(isinstance(c, LineCollection) for c in ax.collections) for ax in value_axes)
    assert value_axes[0].get_xlim() == pytest.approx((lon.min() - 0.0632, lon.max() + 0.0632), abs=0.01)
    with Image.open(path) as image:
        assert image.size[0] <= 1600
    open_sea = coastlines.lines_in(*np.meshgrid(np.linspace(-150, -149, 5), np.linspace(-40, -39, 5)))
    assert open_sea == []


@pytest.mark.parametrize("value, axis, expected", [
    (-90, "lon", "90°W"), (90, "lon", "90°E"), (270, "lon", "90°W"), (0, "lon", "0°"), (180, "lon", "180°"),
    (-180, "lon", "180°"), (120.25, "lon", "120.25°E"), (-0.0, "lon", "0°"), (115.00000000003, "lon", "115°E"),
    (23, "lat", "23°N"), (-23.5, "lat", "23.5°S"), (0, "lat", "0°"), (-90, "lat", "90°S"),
])
def test_degrees_read_as_on_a_map(value, axis, expected):
    assert degrees_label(value, axis) == expected


def test_map_ticks_read_west_and_south_without_a_minus_sign(tmp_path, monkeypatch):
    """A (projected) grid west of Greenwich and south of the equator: ticks in °W and °S, as the formatter writes."""
    from corrdiff.evaluation import case_plots, plots

    drawn = []
    monkeypatch.setattr(plots.plt, "close", lambda fig: drawn.append(fig))  # keep the figure to look at it
    lat, lon = np.meshgrid(np.linspace(-4, 3, 12), np.linspace(-95, -84, 14), indexing="ij")
    field = xr.DataArray(np.zeros(lat.shape), attrs={"units": "K"})
    plots.map_panels(tmp_path / "map.png", "t2m", {"truth": lat}, None, lat, lon, field, "now")
    fig, _ = case_plots._map(lat, {"units": "K"}, "t2m", lat, lon)
    fig.canvas.draw()
    for ax in (drawn[0].axes[0], fig.axes[0]):
        xs = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        ys = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert xs and all(re.fullmatch(r"\d+(\.\d+)?°W", x) for x in xs), xs
        assert "0°" in ys and any(y.endswith("°S") for y in ys) and any(y.endswith("°N") for y in ys), ys
        assert not any("-" in t or "−" in t for t in xs + ys)
        assert [t.get_text() for t in ax.get_xticklabels()] == [degrees_label(v, "lon") for v in ax.get_xticks()]
        assert ax.get_xlabel() == "longitude" and ax.get_ylabel() == "latitude"
    monkeypatch.undo()
    for figure in (drawn[0], fig):
        plots.plt.close(figure)


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
    page = check_report(paths["report"].parent, ["u", "v", "vorticity"], VORTEX)
    assert "interp" in page and "interp" in "\n".join(lines) and "Strongest vortex of the truth" in page
    scores = xr.open_dataset(paths["scores"])
    assert scores.sizes["time"] == 12 and list(scores["model"].values) == ["corrdiff", "regression", "interp"]
    assert float(scores["mae"].sel(model="regression", variable="u")) == pytest.approx(0, abs=1e-6)
