"""The demo dataset: layout, coarse = block means of fine, coverage, cache, determinism, spec, vorticity = curl."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

pytest.importorskip("pyqg_jax")
from corrdiff.data import qg_dataset  # noqa: E402
from corrdiff.data.qg_dataset import build_qg_dataset  # noqa: E402

# A short run, far from spun up but QG dynamics all the same: seconds, not minutes.
SMALL = {"times": 40, "held_out": 6, "gap": 2, "spinup_steps": 600, "steps_per_snapshot": 6, "chunk": 10}
NC_FILES = ["static.nc", "coarse.nc", "fine.nc"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The small demo dataset, built once for the module; returns its spec path."""
    return build_qg_dataset(tmp_path_factory.mktemp("demo"), progress=False, **SMALL)


def open_all(folder):
    return {name: xr.load_dataset(folder / name) for name in NC_FILES}


def mtimes(folder):
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


def test_files_have_documented_dims_coords_and_attrs(built):
    folder = built.parent
    assert built.name == "spec.yaml" and (folder / "demo.json").is_file()
    ds = open_all(folder)
    fine, coarse, static = ds["fine.nc"], ds["coarse.nc"], ds["static.nc"]
    assert dict(fine.sizes) == {"time": 40, "y": 32, "x": 32}
    assert dict(coarse.sizes) == {"time": 40, "lat": 10, "lon": 10}
    assert dict(static.sizes) == {"y": 32, "x": 32}
    assert fine.lat.dims == fine.lon.dims == ("y", "x")
    assert fine.lat.attrs["units"] == "degrees_north" and fine.lon.attrs["units"] == "degrees_east"
    assert coarse.lat.attrs["units"] == "degrees_north" and coarse.lon.attrs["units"] == "degrees_east"
    np.testing.assert_array_equal(static.lat, fine.lat)
    np.testing.assert_array_equal(static.lon, fine.lon)
    np.testing.assert_allclose(np.diff(fine.lat[:, 0]), 0.2, atol=1e-9)
    np.testing.assert_allclose(np.diff(fine.lon[0, :]), 0.2, atol=1e-9)
    assert (np.diff(coarse.lat) > 0).all() and (np.diff(coarse.lon) > 0).all()
    assert pd.Timestamp(fine.time.values[0]) == pd.Timestamp("2000-01-01T00")
    assert (np.diff(fine.time.values) == np.timedelta64(1, "h")).all()
    np.testing.assert_array_equal(coarse.time, fine.time)
    assert list(fine.data_vars) == ["u", "v", "vorticity"]
    assert list(coarse.data_vars) == ["u", "v", "u2", "v2"]
    assert list(static.data_vars) == ["orography", "land_sea_mask"]
    units = {"u": "m s-1", "v": "m s-1", "u2": "m s-1", "v2": "m s-1", "vorticity": "s-1", "orography": "m",
             "land_sea_mask": "1"}
    for dataset in ds.values():
        assert dataset.attrs["Conventions"] == "CF-1.8"
        assert "pyqg-jax" in dataset.attrs["history"] and "seed=0" in dataset.attrs["history"]
        assert dataset.attrs["title"] and dataset.attrs["source"]
        for name, variable in dataset.data_vars.items():
            assert variable.dtype == np.float32, name
            assert variable.attrs["units"] == units[name] and variable.attrs["long_name"], name
            assert variable.encoding["zlib"] and variable.encoding["complevel"] == 1, name
            assert np.isfinite(variable.values).all(), name
    assert set(np.unique(static.land_sea_mask.values)) == {0.0, 1.0}
    assert ((static.orography > 0) == (static.land_sea_mask == 1)).all()


def test_coarse_is_periodically_padded_block_means_close_to_the_fine_fields(built):
    """The inputs are 8 × 8 block means of the model's fields; the targets that model field cut to the wavenumbers
    the 32 × 32 grid holds: the 4 × 4 block means of the targets differ from the inputs only by the small scales
    the cut removed."""
    ds = open_all(built.parent)
    for name in ["u", "v"]:
        fine = ds["fine.nc"][name].values
        coarse = ds["coarse.nc"][name].values
        block_means = fine.reshape(40, 8, 4, 8, 4).astype(np.float64).mean(axis=(2, 4))
        inner = coarse[:, 1:-1, 1:-1]
        assert np.sqrt(np.mean((inner - block_means) ** 2)) < 0.2 * inner.std()
        assert np.corrcoef(inner.ravel(), block_means.ravel())[0, 1] > 0.95
        # The padding ring repeats the opposite edge (the domain is doubly periodic).
        np.testing.assert_array_equal(coarse[:, 0, 1:-1], inner[:, -1])
        np.testing.assert_array_equal(coarse[:, -1, 1:-1], inner[:, 0])
        np.testing.assert_array_equal(coarse[:, 1:-1, 0], inner[:, :, -1])
        np.testing.assert_array_equal(coarse[:, 1:-1, -1], inner[:, :, 0])
    # Block centres: the mean of a block's model cells, whose first is a fine point (fine points are every second).
    fine_lat = ds["fine.nc"].lat.values[:, 0]
    np.testing.assert_allclose(ds["coarse.nc"].lat.values[1:-1],
                               fine_lat.reshape(8, 4).mean(1) + qg_dataset.MODEL_DEG / 2, atol=1e-9)


def test_fine_fields_keep_the_scales_the_fine_grid_holds_and_alias_none():
    """Waves the 32 × 32 grid holds come through exactly at its points; a wave it cannot hold is removed, not
    folded onto a longer one."""
    y, x = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    wave = lambda ky, kx: np.cos(2 * np.pi * (ky * y + kx * x) / 64 + 0.3)
    held = wave(3, -5) + 0.5 * wave(15, 7)
    np.testing.assert_allclose(qg_dataset.subsample(held.astype(np.float32)), held[::2, ::2], atol=1e-5)
    np.testing.assert_allclose(qg_dataset.subsample((held + wave(20, 1)).astype(np.float32)), held[::2, ::2],
                               atol=1e-5)
    assert np.abs(wave(20, 1)[::2, ::2]).max() > 0.5  # point sampling alone would have kept it, aliased


def test_coarse_grid_covers_fine_grid_for_bilinear_interpolation(built):
    ds = open_all(built.parent)
    fine, coarse = ds["fine.nc"], ds["coarse.nc"]
    assert coarse.lat.min() < fine.lat.min() and fine.lat.max() < coarse.lat.max()
    assert coarse.lon.min() < fine.lon.min() and fine.lon.max() < coarse.lon.max()
    coarse_on_fine = coarse.u.interp(lat=fine.lat, lon=fine.lon)
    assert np.isfinite(coarse_on_fine.values).all()


def test_second_call_reuses_the_complete_dataset(built):
    before = mtimes(built.parent)
    assert build_qg_dataset(built.parent, progress=False, **SMALL) == built
    assert mtimes(built.parent) == before


def test_missing_marker_rebuilds_identically(built, tmp_path):
    """Same seed, same arrays: the rebuild of a copy whose marker is gone matches the original."""
    folder = tmp_path / "copy"
    shutil.copytree(built.parent, folder)
    (folder / "demo.json").unlink()
    (folder / "fine.nc").write_bytes(b"half a file")
    build_qg_dataset(folder, progress=False, **SMALL)
    assert (folder / "demo.json").is_file()
    original, rebuilt = open_all(built.parent), open_all(folder)
    for name in NC_FILES:
        xr.testing.assert_identical(original[name], rebuilt[name])


def test_mismatched_marker_or_force_rebuilds(built, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(built.parent, folder)
    marker = json.loads((folder / "demo.json").read_text())
    marker["version"] = -1
    (folder / "demo.json").write_text(json.dumps(marker))
    before = mtimes(folder)
    build_qg_dataset(folder, progress=False, **SMALL)
    assert all(mtimes(folder)[name] != before[name] for name in NC_FILES + ["demo.json"])
    before = mtimes(folder)
    build_qg_dataset(folder, progress=False, force=True, **SMALL)
    assert all(mtimes(folder)[name] != before[name] for name in NC_FILES)
    # Other parameters, other dataset: a different seed is not the cached one.
    build_qg_dataset(folder, progress=False, **{**SMALL, "seed": 1})
    assert json.loads((folder / "demo.json").read_text())["parameters"]["seed"] == 1
    assert not np.array_equal(xr.load_dataset(folder / "fine.nc").u, xr.load_dataset(built.parent / "fine.nc").u)


def test_interrupted_rebuild_does_not_look_complete(built, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    shutil.copytree(built.parent, folder)

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(qg_dataset, "_fine_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        build_qg_dataset(folder, progress=False, force=True, **SMALL)
    assert not (folder / "demo.json").exists()
    monkeypatch.undo()
    build_qg_dataset(folder, progress=False, **SMALL)
    assert (folder / "demo.json").is_file()


def test_spec_parses_and_its_splits_exist_in_the_fine_store(built):
    spec = yaml.safe_load(built.read_text())
    assert built.read_text().startswith("# corrdiff dataset spec (written by `corrdiff data demo`)\n")
    assert spec["inputs"] == {"paths": "coarse.nc", "variables": ["u", "v", "u2", "v2"]}
    assert spec["targets"] == {"paths": "fine.nc", "variables": ["u", "v", "vorticity"]}
    assert spec["static"] == {"paths": "static.nc", "variables": ["orography", "land_sea_mask"]}
    assert set(spec["splits"]) == {"train", "validation", "test"}
    fine_times = pd.DatetimeIndex(xr.open_dataset(built.parent / "fine.nc").time.values)
    bounds = {name: (pd.Timestamp(split["start"]), pd.Timestamp(split["end"])) for name, split in spec["splits"].items()}
    for start, end in bounds.values():
        assert start in fine_times and end in fine_times and start <= end
    assert bounds["train"][0] == fine_times[0] and bounds["test"][1] == fine_times[-1]
    # held_out=6 each, gaps of 2, the rest train: 24 + 2 + 6 + 2 + 6 = 40.
    count = lambda name: ((fine_times >= bounds[name][0]) & (fine_times <= bounds[name][1])).sum()
    assert (count("train"), count("validation"), count("test")) == (24, 6, 6)
    assert bounds["train"][1] < bounds["validation"][0] and bounds["validation"][1] < bounds["test"][0]
    marker = json.loads((built.parent / "demo.json").read_text())
    assert marker["grid_spacing_km"] == 20.0 and marker["parameters"]["times"] == 40


def test_vorticity_is_the_curl_of_the_winds(built):
    """Exactly, by spectral derivatives: the cut to the fine grid's wavenumbers commutes with the curl."""
    fine = xr.load_dataset(built.parent / "fine.nc")
    u, v = fine.u.values.astype(np.float64), fine.v.values.astype(np.float64)
    k = 2 * np.pi * np.fft.fftfreq(u.shape[-1], 20e3)  # rad m-1, the grid's nominal 20 km spacing
    curl = np.fft.ifft2(1j * k[None, None, :] * np.fft.fft2(v) - 1j * k[None, :, None] * np.fft.fft2(u)).real
    vorticity = fine.vorticity.values
    assert np.sqrt(np.mean((curl - vorticity) ** 2)) < 1e-3 * vorticity.std()


def test_impossible_splits_are_refused(tmp_path):
    with pytest.raises(ValueError, match="times=10"):
        build_qg_dataset(tmp_path, progress=False, times=10, held_out=6, gap=2)


def test_chunk_size_does_not_change_the_simulation():
    run = lambda chunk: qg_dataset.simulate(times=10, spinup_steps=12, steps_per_snapshot=6, chunk=chunk, seed=0,
                                            progress=False)
    by_four, whole = run(4), run(10)
    for name in ["u", "v", "u2", "v2", "vorticity"]:
        assert by_four[name].shape == (10, 64, 64)
        np.testing.assert_array_equal(by_four[name], whole[name])
