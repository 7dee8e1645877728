"""`corrdiff generate` runs on an imported run folder: a corrdiff run exported to PhysicsNeMo files, imported from
them again (as an Earth2Studio package), generates an ensemble for a dataset spec with the same channels, the
same as the original run's (also for a denoiser that scales its condition, exported as `EDMPrecondSR`)."""

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from typer.testing import CliRunner

from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta, RegressionRef
from corrdiff.checkpoint_writer import save_checkpoint
from corrdiff.cli.main import app
from corrdiff.data import ChannelStats, Normalization
from corrdiff.interop import export_physicsnemo, read_mdlus
from corrdiff.file_integrity import sha256_file
from corrdiff.models import UNetConfig
from corrdiff.networks import network_for
from tests.data import fixtures as data_fixtures

INPUTS, TARGETS = ["t2m", "u10", "t@850", "orography"], ["t2m", "u10"]


def native_run(folder, lat, lon, scale_condition=False, residual_std=()):
    """A corrdiff run (random weights) for the tests/data spec's channels and fine grid (16, 24)."""
    unet = UNetConfig(img_shape=(16, 24), in_channels=4, out_channels=2, model_channels=8, channel_mult=(1, 2),
                      channel_mult_emb=2, num_blocks=1, attn_resolutions=(8,), dropout=0.0)
    stats = Normalization(ChannelStats(INPUTS, [280.0, 0.0, 250.0, 100.0], [20.0, 5.0, 20.0, 200.0]),
                          ChannelStats(TARGETS, [290.0, 0.0], [10.0, 3.0]))
    empty = dict(raw_weights={}, optimizer_state={"state": {}, "param_groups": []}, scheduler_state={},
                 samples_seen=0, best_val=None, keep_last=1, is_best=True)
    reference = None
    for kind in ("regression", "diffusion"):
        torch.manual_seed(len(kind))
        net = network_for(unet, kind, 0.5)
        with torch.no_grad():  # random weights everywhere: corrdiff starts its output layers at zero
            for param in net.parameters():
                param.add_(0.1 * torch.randn(param.shape))
        diffusion = kind == "diffusion"
        meta = CheckpointMeta(kind=kind, unet=unet, input_channels=INPUTS, target_channels=TARGETS, stats=stats,
                              config="{}", sigma_data=0.5 if diffusion else None, regression_checkpoint=reference,
                              scale_condition=scale_condition and diffusion,
                              residual_std=residual_std if diffusion else ())
        saved = save_checkpoint(folder / kind / "checkpoints", meta=meta, ema_weights=net.state_dict(),
                                     lat=lat, lon=lon, **empty)
        reference = RegressionRef(str(saved), sha256_file(saved / ckpt.MODEL_FILE))


def write_spec(tmp_path):
    """The tests/data spec with this module's targets."""
    spec = data_fixtures.write_generic(tmp_path / "data")
    raw = yaml.safe_load(spec.read_text())
    raw["targets"]["variables"] = TARGETS
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec


def generate_cli(tmp_path, spec, run, out, *options):
    """`corrdiff generate` of one time, 2 members, 3 steps, with --set `options`: the CLI's result."""
    config = tmp_path / f"{run}.yaml"
    config.write_text(yaml.safe_dump({"data": str(spec), "run_dir": str(tmp_path / run), "device": "cpu",
                                      "sampler": {"num_steps": 3}, "generate": {"members": 2}}))
    sets = [arg for option in options for arg in ("--set", option)]
    return CliRunner().invoke(app, ["generate", str(config), "--out", str(out), "--times", "2021-01-02T03:00", "-q",
                                    *sets])


@pytest.mark.parametrize("scale_condition", [False, True])
def test_generate_on_an_imported_run(tmp_path, scale_condition):
    spec = write_spec(tmp_path)
    lat, lon = data_fixtures.fine_grid()
    native_run(tmp_path / "native", lat, lon, scale_condition)
    export_physicsnemo(tmp_path / "native", tmp_path / "package")
    exported = read_mdlus(tmp_path / "package" / "diffusion.mdlus")
    assert exported.class_name == ("EDMPrecondSR" if scale_condition else "EDMPrecondSuperResolution")
    runner = CliRunner()
    result = runner.invoke(app, ["import", "physicsnemo", "--package", str(tmp_path / "package"),
                                 "--out", str(tmp_path / "imported")])
    assert result.exit_code == 0, result.output
    assert ckpt.load_model(tmp_path / "imported" / "diffusion").meta.scale_condition is scale_condition
    ensembles = {}
    for run in ("imported", "native"):
        out = tmp_path / f"{run}.nc"
        result = generate_cli(tmp_path, spec, run, out)
        assert result.exit_code == 0, result.output
        with xr.open_dataset(out) as ds:
            ensembles[run] = ds["t2m"].values
    assert ensembles["imported"].shape == (1, 2, 16, 24) and np.isfinite(ensembles["imported"]).all()
    # The same networks and noise: equal to float32 round-off (K; the targets' std is 10 K).
    np.testing.assert_allclose(ensembles["imported"], ensembles["native"], rtol=0, atol=1e-3)


def test_generate_with_physicsnemos_arithmetic_records_it(tmp_path):
    """`--set sampler.arithmetic=physicsnemo`: recorded in the file's attributes and fingerprint; other members than
    EDM's arithmetic, equal for the imported run and the run it was exported from."""
    spec = write_spec(tmp_path)
    native_run(tmp_path / "native", *data_fixtures.fine_grid())
    export_physicsnemo(tmp_path / "native", tmp_path / "package")
    result = CliRunner().invoke(app, ["import", "physicsnemo", "--package", str(tmp_path / "package"),
                                      "--out", str(tmp_path / "imported")])
    assert result.exit_code == 0, result.output
    churn = ("sampler.S_churn=40", "sampler.sigma_max=80")
    fields = {}
    for run, arithmetic in (("imported", "physicsnemo"), ("native", "physicsnemo"), ("native", "edm")):
        out = tmp_path / f"{run}-{arithmetic}.nc"
        result = generate_cli(tmp_path, spec, run, out, f"sampler.arithmetic={arithmetic}", *churn)
        assert result.exit_code == 0, result.output
        with xr.open_dataset(out) as ds:
            assert ds.attrs["sampler_arithmetic"] == arithmetic
            assert "arithmetic: " + arithmetic in ds.attrs["corrdiff_config"]
            recorded = yaml.safe_load(ds.attrs["corrdiff_fingerprint_ingredients"])
            assert recorded.get("sampler.arithmetic", "edm") == arithmetic
            fields[run, arithmetic] = ds["t2m"].values
    np.testing.assert_allclose(fields["imported", "physicsnemo"], fields["native", "physicsnemo"], rtol=0, atol=1e-3)
    assert np.abs(fields["native", "physicsnemo"] - fields["native", "edm"]).max() > 0.1


def test_physicsnemos_arithmetic_is_refused_for_a_denoiser_it_cannot_sample(tmp_path):
    spec = write_spec(tmp_path)
    native_run(tmp_path / "native", *data_fixtures.fine_grid(), residual_std=(0.5, 0.7))
    result = generate_cli(tmp_path, spec, "native", tmp_path / "out.nc", "sampler.arithmetic=physicsnemo")
    assert result.exit_code != 0
    assert "sampler.arithmetic: physicsnemo reproduces PhysicsNeMo's CorrDiff, which cannot run" in result.output
    assert "residual divided by its standard deviation" in result.output
    assert "use sampler.arithmetic: edm" in result.output
    assert not (tmp_path / "out.nc").exists()
