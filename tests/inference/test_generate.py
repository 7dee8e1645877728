"""Ensemble generation: CF layout read back with xarray, resume after a crash, Zarr, torchrun ranks."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from corrdiff.inference.generate import EnsembleOutput, generate, GenerationRequest
from tests.inference.crashes import crash_on_write
from tests.training.run_synthetic import main as train_main, REPO_ROOT, synthetic_config
from tests.training.synthetic import SyntheticDataset

MEMBERS, TIMES = 3, 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Both models trained for a few steps on the synthetic data."""
    run = tmp_path_factory.mktemp("run")
    assert train_main(["regression", str(run), "10"]) == 0
    assert train_main(["diffusion", str(run), "10"]) == 0
    return run


def config_for(run_dir, **generate_options):
    overrides = ["sampler.num_steps=4", f"generate.members={MEMBERS}"]
    overrides += [f"generate.{k}={v}" for k, v in generate_options.items()]
    return synthetic_config(str(run_dir), 10, overrides)


def request_for(run_dir, times=None):
    return GenerationRequest(run_dir / "regression", run_dir / "diffusion", dataset=SyntheticDataset(TIMES, seed=3),
                             times=times)


def run_generate(run_dir, out, **options):
    return generate(config_for(run_dir, **options), request_for(run_dir), EnsembleOutput(out, progress=False))


@pytest.fixture(scope="module")
def ensemble(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ens.nc"
    run_generate(run_dir, out)
    return out


def test_netcdf_layout_is_cf_with_provenance(ensemble):
    ds = xr.open_dataset(ensemble)
    assert ds["u"].dims == ("time", "member", "y", "x")
    assert ds.sizes == {"time": TIMES, "member": MEMBERS, "y": 16, "x": 16}
    assert ds["u_regression"].dims == ("time", "y", "x")
    assert ds["lat"].dims == ("y", "x") and ds["lat"].attrs["units"] == "degrees_north"
    assert ds["lon"].attrs["standard_name"] == "longitude"
    assert ds["u"].attrs["units"] == "m s-1" and ds["u"].attrs["long_name"] == "u wind"
    assert ds.attrs["Conventions"].startswith("CF-")
    assert len(ds.attrs["regression_checkpoint_sha256"]) == 64 and len(ds.attrs["diffusion_checkpoint_sha256"]) == 64
    assert "regression:" in ds.attrs["corrdiff_config"] and ds.attrs["corrdiff_seed"] == 0
    np.testing.assert_array_equal(ds["time"].values, SyntheticDataset(TIMES, seed=3).times.astype("datetime64[ns]"))
    assert ds["generation_complete"].values.all()
    assert np.isfinite(ds["u"].values).all()
    # Members differ from one another; the mean of a CorrDiff ensemble is near the regression mean.
    assert float(ds["u"].std("member").mean()) > 0
    for name in ("u", "v"):
        # Members are μ + r with r of mean ≈ 0: the M-member mean is ~1/√M as far from μ as a member is
        # (0.58 for 3 members); a residual biased by as much as its spread would give ≥ 0.82.
        to_mean = float(np.sqrt(((ds[name].mean("member") - ds[f"{name}_regression"]) ** 2).mean()))
        to_member = float(np.sqrt(((ds[name] - ds[f"{name}_regression"]) ** 2).mean()))
        assert to_mean < 0.75 * to_member, (name, to_mean, to_member)
    with xr.open_dataset(ensemble, decode_times=False) as raw:
        assert "since" in raw["time"].attrs["units"]


def test_interrupted_generation_resumes_to_the_same_file(run_dir, ensemble, tmp_path, monkeypatch):
    out = tmp_path / "resumed.nc"
    undo_crash = crash_on_write(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_generate(run_dir, out)
    with xr.open_dataset(out) as partial:
        assert partial["generation_complete"].values.tolist() == [1, 1, 0, 0, 0]  # at most the crashed time lost
    undo_crash()
    run_generate(run_dir, out)
    with xr.open_dataset(out) as resumed, xr.open_dataset(ensemble) as whole:
        # The history attribute carries the wall-clock time of each run; everything else must match exactly.
        fields = ["u", "v", "u_regression"]
        xr.testing.assert_identical(resumed[fields].drop_attrs(deep=False), whole[fields].drop_attrs(deep=False))
        assert {k: v for k, v in resumed.attrs.items() if k != "history"} == {
            k: v for k, v in whole.attrs.items() if k != "history"
        }


def test_existing_output_for_other_members_is_refused(run_dir, ensemble):
    from corrdiff.inference import OutputError

    with pytest.raises(OutputError, match=r"ens.nc holds an ensemble made with other settings \(members: 3 → 4\)"):
        generate(config_for(run_dir, members=MEMBERS + 1), request_for(run_dir),
                 EnsembleOutput(ensemble, progress=False))


def test_zarr_output_equals_netcdf(run_dir, ensemble, tmp_path):
    out = run_generate(run_dir, tmp_path / "ens.zarr", format="zarr")
    with xr.open_zarr(out, consolidated=False) as z, xr.open_dataset(ensemble) as nc:
        np.testing.assert_array_equal(z["u"].values, nc["u"].values)
        np.testing.assert_array_equal(z["lat"].values, nc["lat"].values)


def test_member_depends_only_on_seed_time_and_index(run_dir, ensemble, tmp_path):
    cfg = config_for(run_dir)
    times = [str(SyntheticDataset(TIMES, seed=3).times[3])]
    out = generate(cfg, request_for(run_dir, times), EnsembleOutput(tmp_path / "one.nc", progress=False))
    with xr.open_dataset(out) as one, xr.open_dataset(ensemble) as whole:
        np.testing.assert_allclose(one["u"].values[0], whole["u"].values[3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options, rtol", [({"channels_last": False}, 1e-4), ({"precision": "bf16"}, 5e-2)])
def test_generation_on_the_fast_path_matches_the_plain_file(run_dir, ensemble, tmp_path, options, rtol):
    out = run_generate(run_dir, tmp_path / "fast.nc", **options)
    with xr.open_dataset(out) as fast, xr.open_dataset(ensemble) as plain:
        errors = {name: float(np.linalg.norm(fast[name].values - plain[name].values) / np.linalg.norm(plain[name].values))
                  for name in ("u", "v", "u_regression", "v_regression")}
    assert max(errors.values()) < rtol, errors
    if "precision" in options:
        assert min(errors["u"], errors["v"]) > 1e-4, errors  # bf16 rounding shows: the switch reached the denoiser
        # The regression mean is one float32 call per time, never under autocast: the plain file's mean, exactly.
        assert errors["u_regression"] == 0 and errors["v_regression"] == 0, errors


def test_unknown_time_is_a_clear_error(run_dir, tmp_path):
    from corrdiff.config import ConfigError

    with pytest.raises(ConfigError, match="times not in the dataset: 1999-01-01"):
        generate(config_for(run_dir), request_for(run_dir, ["1999-01-01T00"]),
                 EnsembleOutput(tmp_path / "x.nc", progress=False))


GENERATE_SCRIPT = """
from corrdiff.inference.generate import EnsembleOutput, generate, GenerationRequest
from tests.training.run_synthetic import synthetic_config
from tests.training.synthetic import SyntheticDataset
cfg = synthetic_config({run!r}, 10, ["sampler.num_steps=4", "generate.members={members}", "generate.format={fmt}"])
request = GenerationRequest({run!r} + "/regression", {run!r} + "/diffusion", dataset=SyntheticDataset({times}, seed=3))
generate(cfg, request, EnsembleOutput({out!r}, progress=False))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_torchrun_generation_writes_one_consistent_file(run_dir, ensemble, tmp_path, fmt):
    out = tmp_path / ("ens.nc" if fmt == "netcdf" else "ens.zarr")
    script = tmp_path / "gen.py"
    script.write_text(GENERATE_SCRIPT.format(run=str(run_dir), members=MEMBERS, out=str(out), times=TIMES, fmt=fmt))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The script imports tests.training's helpers: the repository root goes first on its path.
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         "--master_addr=127.0.0.1", str(script)],
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["gen.py", out.name])  # no part files left
    engine = "netcdf4" if fmt == "netcdf" else "zarr"
    with xr.open_dataset(out, engine=engine) as two, xr.open_dataset(ensemble) as one:
        np.testing.assert_array_equal(two["time"].values, one["time"].values)
        np.testing.assert_allclose(two["u"].values, one["u"].values, rtol=1e-5, atol=1e-5)
