"""`import_physicsnemo` writes a run folder corrdiff's checkpoint API and generation read; the export goes back."""

import json

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from corrdiff import checkpoint as ckpt
from corrdiff.cli.main import app
from corrdiff.errors import CheckpointError
from corrdiff.inference.downscaling import load_models
from corrdiff.interop import export_physicsnemo, import_physicsnemo, read_mdlus, read_package
from corrdiff.interop.convert import export_args
from corrdiff.networks import load_network
from tests.interop.physicsnemo_fixtures import (expected, FIXTURES, grid, imported_run, INPUTS, relative_error, stats,
                                                TARGETS, TOLERANCE)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "run"
    return out, imported_run(out)


def test_import_writes_checkpoints_that_load_and_match(run):
    out, result = run
    assert set(result.checkpoints) == {"regression", "diffusion"}
    ref = expected()
    regression = ckpt.load_model(out / "regression", kind="regression")
    assert regression.meta.input_channels == tuple(INPUTS) and regression.meta.target_channels == tuple(TARGETS)
    np.testing.assert_allclose(regression.lat.numpy(), grid()[0])
    net = load_network(regression)
    assert relative_error(net(torch.from_numpy(ref["y"])), ref["regression"]) <= TOLERANCE
    diffusion = ckpt.load_model(out / "diffusion", kind="diffusion")
    assert diffusion.meta.regression_checkpoint.sha256 == regression.sha256
    denoised = load_network(diffusion)(torch.from_numpy(ref["noisy"]), torch.full((2,), 2.5),
                                            torch.from_numpy(ref["y"]))
    assert relative_error(denoised, ref["diffusion"][3]) <= TOLERANCE


def test_generation_accepts_the_imported_pair(run):
    out, _ = run
    models = load_models(out / "regression", out / "diffusion", "cpu")
    assert models.mismatches == []
    assert models.meta.stats.target.names == TARGETS


def test_provenance_is_recorded(run):
    out, result = run
    import yaml

    meta = ckpt.load_model(out / "diffusion").meta
    origin = yaml.safe_load(meta.config)["imported_from"]
    assert origin["class"].endswith("EDMPrecondSuperResolution") and len(origin["sha256"]) == 64
    assert any("learned" in note for note in result.notes)


def test_a_second_import_into_the_same_folder_is_refused(run):
    out, _ = run
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        import_physicsnemo(out, stats(), *grid(), regression=FIXTURES / "regression.mdlus")


def test_a_grid_of_another_size_is_refused(tmp_path):
    lat, lon = grid()
    with pytest.raises(CheckpointError, match=r"\(24, 16\) grid"):
        import_physicsnemo(tmp_path / "run", stats(), lat[:8], lon[:8], regression=FIXTURES / "regression.mdlus")
    assert not (tmp_path / "run").exists()


def test_export_round_trip(run, tmp_path):
    """Exported files hold PhysicsNeMo's names and arguments; imported again they give the same outputs."""
    out, _ = run
    files, notes = export_physicsnemo(out, tmp_path / "export")
    assert sorted(p.name for p in files) == ["diffusion.mdlus", "regression.mdlus"]
    exported = read_mdlus(tmp_path / "export" / "diffusion.mdlus")
    original = read_mdlus(FIXTURES / "diffusion.mdlus")
    assert exported.class_name == "EDMPrecondSuperResolution"
    assert set(exported.state) == set(original.state) | {"model.pos_embd"}  # the grid travels as a learnable one
    assert exported.args["attn_resolutions"] == original.args["attn_resolutions"] == [12]
    package = read_package(tmp_path / "export")
    assert package.stats.input.names == INPUTS
    again = import_physicsnemo(tmp_path / "again", package.stats, package.lat, package.lon,
                               regression=package.regression, diffusion=package.diffusion)
    ref = expected()
    net = load_network(ckpt.load_model(again.checkpoints["diffusion"]))
    denoised = net(torch.from_numpy(ref["noisy"]), torch.full((2,), 0.5), torch.from_numpy(ref["y"]))
    assert relative_error(denoised, ref["diffusion"][2]) <= TOLERANCE


def test_export_refuses_global_context(run):
    meta = ckpt.load_model(run[0] / "diffusion").meta
    changed = meta.replace(unet=meta.unet.replace(global_context=True))
    with pytest.raises(CheckpointError, match="global_context"):
        export_args(changed)


def write_earth2studio_package(folder, with_invariant=False):
    """A package in Earth2Studio's CorrDiff layout around the fixture networks."""
    folder.mkdir(parents=True)
    norm = stats()
    (folder / "stats.json").write_text(json.dumps({
        "input": {n: {"mean": m, "std": s} for n, m, s in zip(norm.input.names, norm.input.mean, norm.input.std)},
        "output": {n: {"mean": m, "std": s} for n, m, s in zip(norm.target.names, norm.target.mean, norm.target.std)},
    }))
    (folder / "metadata.json").write_text(json.dumps({
        "input_variables": INPUTS, "output_variables": TARGETS, "number_of_steps": 12, "sigma_max": 400.0}))
    lat, lon = grid()
    xr.Dataset(coords={"lat": ("lat", lat[:, 0]), "lon": ("lon", lon[0])}).to_netcdf(folder / "output_latlon_grid.nc")
    for name in ("regression", "diffusion"):
        (folder / f"{name}.mdlus").write_bytes((FIXTURES / f"{name}.mdlus").read_bytes())
    return folder


def test_earth2studio_package_layout(tmp_path):
    package = read_package(write_earth2studio_package(tmp_path / "pkg"))
    assert package.layout == "earth2studio"
    assert package.stats.input.names == INPUTS and package.stats.target.names == TARGETS
    assert package.lat.shape == (24, 16) and package.sampler == {"num_steps": 12, "sigma_max": 400.0}


def test_taiwan_package_layout(tmp_path):
    """NVIDIA's CorrDiff Taiwan package: statistics at Earth2Studio's channel indices, grid without its border."""
    import zarr

    root = tmp_path / "corrdiff_inference_package"
    (root / "checkpoints").mkdir(parents=True)
    group = zarr.open_group(str(root / "dataset" / "cwb.zarr"), mode="w", zarr_format=2)
    group["era5_center"], group["era5_scale"] = np.arange(20.0), np.arange(20.0) + 1
    group["cwb_center"], group["cwb_scale"] = np.arange(20.0) * 10, np.arange(20.0) + 2
    lat, lon = np.meshgrid(np.arange(6.0), np.arange(5.0), indexing="ij")
    group["XLAT"], group["XLONG"] = lat, lon
    package = read_package(tmp_path)
    assert package.layout == "corrdiff-taiwan"
    assert package.stats.input.names[0] == "tcwv" and len(package.stats.input.names) == 12
    np.testing.assert_array_equal(package.stats.input.mean, [0, 1, 2, 3, 4, 9, 10, 11, 12, 17, 18, 19])
    np.testing.assert_array_equal(package.stats.target.std, [2, 19, 20, 21])
    assert package.lat.shape == (4, 3) and package.lat[0, 0] == 1 and package.lon[0, 0] == 1


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_imports_a_package_and_exports(tmp_path):
    package = write_earth2studio_package(tmp_path / "pkg")
    result = invoke("import", "physicsnemo", "--package", package, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "regression checkpoint written" in result.output and "num_steps=12" in result.output
    result = invoke("export", tmp_path / "run", "--format", "physicsnemo", "--out", tmp_path / "export")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "export" / "regression.mdlus").exists()


def test_cli_imports_files_with_stats_and_grid(tmp_path):
    package = write_earth2studio_package(tmp_path / "pkg")
    result = invoke("import", "physicsnemo", "--regression", FIXTURES / "regression_legacy.mdlus",
                    "--stats", package / "stats.json", "--grid", package / "output_latlon_grid.nc",
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert ckpt.load_model(tmp_path / "run" / "regression").meta.unet.grid_channels == 4


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.mdlus"
    bad.write_text("not a checkpoint")
    result = invoke("import", "physicsnemo", "--regression", bad, "--stats", tmp_path / "s.json",
                    "--grid", tmp_path / "g.nc", "--out", tmp_path / "run")
    assert result.exit_code == 2
    result = invoke("import", "physicsnemo", "--regression", bad, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "--stats and --grid" in result.output
    assert len(result.output.strip().splitlines()) == 1
