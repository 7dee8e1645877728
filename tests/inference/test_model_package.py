"""Model packages: `corrdiff export` writes one folder that `corrdiff generate --model` and `corrdiff.load` need
alone; it generates what the run folder generates, bit for bit; a damaged, edited or incomplete package is refused."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr

import corrdiff
from corrdiff import checkpoint as ckpt, sampler_file
from corrdiff.inference import model_package
from corrdiff.diffusion import SamplerConfig
from corrdiff.file_integrity import sha256_file
from tests.api_fixtures import FIELDS, LAMBERT, projected, TIMES, trained  # noqa: F401  (fixtures)
from tests.cli_runner import invoke, refused, succeeded

TIME_OPTIONS = ["--times", TIMES[0], "--times", TIMES[1]]


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory):
    folder, _ = trained
    out = tmp_path_factory.mktemp("export") / "model"
    succeeded(invoke("export", folder / "run", "--out", out))
    return out


@pytest.fixture(scope="module")
def forecast(trained, tmp_path_factory):
    """The coarse file, copied where nothing else of the run is: the package must need nothing but it."""
    path = tmp_path_factory.mktemp("forecast") / "forecast.nc"
    shutil.copy(trained[0] / "data" / "coarse.nc", path)
    return path


@pytest.fixture(scope="module")
def from_run(trained, forecast, tmp_path_factory):
    folder, config = trained
    out = tmp_path_factory.mktemp("from-run") / "ens.nc"
    succeeded(invoke("generate", config, "--out", out, "--input", forecast, "--quiet", *TIME_OPTIONS))
    with xr.open_dataset(out) as ds:
        return ds.load()


def test_the_package_holds_tensors_and_json_only_and_describes_the_model(package, trained):
    assert sorted(p.name for p in package.iterdir()) == ["diffusion.safetensors", "fields.safetensors", "model.json",
                                                         "regression.safetensors"]
    meta = json.loads((package / "model.json").read_text())
    assert meta["channels"]["inputs"] == ["t2m", "u10", "t@850"] and meta["channels"]["static"] == ["orography"]
    assert meta["channels"]["targets"] == ["t2m", "u10", "refl"]
    assert meta["channels"]["target_attrs"]["refl"]["units"] == "dBZ"
    assert meta["normalisation"]["input"]["names"] == ["t2m", "u10", "t@850", "orography"]
    assert meta["sampler"]["num_steps"] == 2 and meta["sampler"]["S_max"] == "inf"
    assert meta["sampler_source"] == "run config" and meta["corrdiff_version"] == corrdiff.__version__
    assert meta["grid"]["shape"] == [16, 24]
    # The networks are the run's checkpoint files, byte for byte: their SHA-256 stays the checkpoints'.
    run_file = ckpt.resolve(trained[0] / "run" / "diffusion") / ckpt.MODEL_FILE
    assert meta["files"]["diffusion.safetensors"] == sha256_file(run_file)
    assert set(meta["files"]) == {"regression.safetensors", "diffusion.safetensors", "fields.safetensors"}


def test_generate_with_the_package_equals_generate_from_the_run_bit_for_bit(package, forecast, from_run, tmp_path):
    out = tmp_path / "ens.nc"
    succeeded(invoke("generate", "--model", package, "--input", forecast, "--out", out, "--quiet", *TIME_OPTIONS))
    with xr.open_dataset(out) as ds:
        for name in FIELDS:
            np.testing.assert_array_equal(ds[name].values, from_run[name].values, err_msg=name)
        np.testing.assert_array_equal(ds["lat"].values, from_run["lat"].values)
        assert ds.attrs["diffusion_checkpoint_sha256"] == from_run.attrs["diffusion_checkpoint_sha256"]
        assert ds.attrs["sampler_num_steps"] == "2" and ds.attrs["corrdiff_members"] == 2
    # Resumable as any generation: the same command finds the file complete and leaves it as it is.
    before = out.read_bytes()
    succeeded(invoke("generate", "--model", package, "--input", forecast, "--out", out, "--quiet", *TIME_OPTIONS))
    assert out.read_bytes() == before


def test_the_api_loads_the_package_too(package, forecast, from_run):
    model = corrdiff.load(package, device="cpu")
    with xr.open_dataset(forecast) as inputs:
        ens = model.downscale(inputs, members=2, seed=0, times=TIMES)
    for name in FIELDS:
        np.testing.assert_array_equal(ens[name].values, from_run[name].values, err_msg=name)


@pytest.mark.parametrize("damage, expected", [
    (lambda p: _flip_a_byte(p / "diffusion.safetensors"), "diffusion.safetensors: content hash differs"),
    (lambda p: _flip_a_byte(p / "fields.safetensors"), "fields.safetensors: content hash differs"),
    (lambda p: (p / "regression.safetensors").unlink(), "regression.safetensors: missing"),
    (lambda p: (p / "model.json").write_text((p / "model.json").read_text().replace('"num_steps": 2', '"num_steps": 9')),
     "model.json: its contents differ from what was exported"),
    (lambda p: (p / "model.json").unlink(), "not a corrdiff model package"),
])
def test_a_damaged_edited_or_incomplete_package_is_refused_in_one_line(package, forecast, tmp_path, damage, expected):
    copy = tmp_path / "model"
    shutil.copytree(package, copy)
    damage(copy)
    line = refused(invoke("generate", "--model", copy, "--input", forecast, "--out", tmp_path / "e.nc", "--quiet"))
    assert expected in line and str(copy) in line, line
    assert not (tmp_path / "e.nc").exists()


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # in the last tensor's values: the file still parses, only its hash tells
    path.write_bytes(bytes(data))


def test_the_export_carries_the_runs_recommended_sampler(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0] / "run", run)
    diffusion_sha = sha256_file(ckpt.resolve(run / "diffusion") / ckpt.MODEL_FILE)
    tuned = SamplerConfig(solver="euler", num_steps=3)
    sampler_file.write(sampler_file.path_in(run), sampler_file.Recommendation(tuned, diffusion_sha, ("t2m", "u10", "refl")))
    succeeded(invoke("export", run, "--out", tmp_path / "model"))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["sampler"]["solver"] == "euler" and meta["sampler"]["num_steps"] == 3
    assert meta["sampler_source"].startswith("recommended")
    assert corrdiff.load(tmp_path / "model", device="cpu").package.sampler == tuned


def test_misuse_is_refused_in_one_line(trained, package, forecast, tmp_path):
    folder, config = trained
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert "not an empty folder" in refused(invoke("export", folder / "run", "--out", tmp_path / "full"))
    assert "--model needs --input" in refused(invoke("generate", "--model", package, "--out", tmp_path / "e.nc"))
    assert "not both" in refused(invoke("generate", config, "--model", package, "--out", tmp_path / "e.nc"))
    assert "--split: not with --model" in refused(invoke("generate", "--model", package, "--input", forecast,
                                                         "--split", "test", "--out", tmp_path / "e.nc"))
    assert "'package' or 'physicsnemo'" in refused(invoke("export", folder / "run", "--out", tmp_path / "x",
                                                          "--format", "onnx"))


def test_the_package_and_checkpoints_follow_the_umask(package, trained):
    from corrdiff.file_integrity import umask
    allowed = 0o777 & ~umask()
    assert package.stat().st_mode & 0o777 == allowed  # not mkdtemp's 0700
    folder, _ = trained
    step = next((folder / "run" / "regression" / "checkpoints").glob("step-*"))
    assert step.stat().st_mode & 0o777 == allowed


def _as_lists(attrs: dict) -> dict:
    """netCDF attributes comparable with ==: arrays as lists."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}


def test_the_package_output_keeps_the_projection_of_the_runs_output(projected):
    """Generated from an exported package, the output has the run folder's `crs` and projection coordinates."""
    meta = json.loads((projected["package"] / "model.json").read_text())
    assert meta["grid"]["mapping"]["grid_mapping_name"] == "lambert_conformal_conic"
    with xr.open_dataset(projected["run"]) as run, xr.open_dataset(projected["from_package"]) as package:
        assert run["crs"].attrs["grid_mapping_name"] == "lambert_conformal_conic"
        assert run["crs"].attrs["standard_parallel"].tolist() == [LAMBERT["TRUELAT1"], LAMBERT["TRUELAT2"]]
        assert _as_lists(package["crs"].attrs) == _as_lists(run["crs"].attrs)
        for name in ("projection_x", "projection_y"):
            np.testing.assert_array_equal(package[name].values, run[name].values, err_msg=name)
            assert package[name].attrs == run[name].attrs
        for name in FIELDS:
            assert package[name].attrs["grid_mapping"] == run[name].attrs["grid_mapping"] == "crs", name
        model = corrdiff.load(projected["package"], device="cpu")
        with xr.open_dataset(projected["forecast"]) as inputs:
            for api in (model.downscale(inputs, members=2, seed=0, times=TIMES[:1]), model.regression(inputs, TIMES[:1])):
                assert _as_lists(api["crs"].attrs) == _as_lists(run["crs"].attrs)
                np.testing.assert_array_equal(api["projection_x"].values, run["projection_x"].values)


def test_a_package_exported_before_packages_kept_the_projection_still_loads(projected, tmp_path):
    old = tmp_path / "model"
    shutil.copytree(projected["package"], old)
    body = json.loads((old / "model.json").read_text())
    del body["metadata_sha256"], body["grid"]["mapping"]
    (old / "model.json").write_text(json.dumps(body | {"metadata_sha256": model_package._digest(body)}))
    assert model_package.load(old).grid_mapping is None
    out = tmp_path / "ens.nc"
    succeeded(invoke("generate", "--model", old, "--input", projected["forecast"], "--out", out, "--quiet",
                     "--times", TIMES[0]))
    with xr.open_dataset(out) as ds:
        assert "crs" not in ds.variables and "grid_mapping" not in ds["t2m"].attrs
