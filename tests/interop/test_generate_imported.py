"""`corrdiff generate` runs on an imported run folder: a corrdiff run exported to PhysicsNeMo files, imported from
them again (as an Earth2Studio package), generates an ensemble for a dataset spec with the same channels."""

import numpy as np
import torch
import xarray as xr
import yaml
from typer.testing import CliRunner

from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta, RegressionRef
from corrdiff.cli.main import app
from corrdiff.data import ChannelStats, Normalization
from corrdiff.interop import export_physicsnemo
from corrdiff.checkpoint import network_for
from corrdiff.models import UNetConfig
from tests.data import fixtures as data_fixtures

INPUTS, TARGETS = ["t2m", "u10", "t@850", "orography"], ["t2m", "u10"]


def native_run(folder, lat, lon):
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
        meta = CheckpointMeta(kind=kind, unet=unet, input_channels=INPUTS, target_channels=TARGETS, stats=stats,
                              config="{}", sigma_data=0.5 if kind == "diffusion" else None,
                              regression_checkpoint=reference)
        saved = ckpt.save_checkpoint(folder / kind / "checkpoints", meta=meta, ema_weights=net.state_dict(),
                                     lat=lat, lon=lon, **empty)
        reference = RegressionRef(str(saved), ckpt.file_sha256(saved / ckpt.MODEL_FILE))


def test_generate_on_an_imported_run(tmp_path):
    spec = data_fixtures.write_generic(tmp_path / "data")
    raw = yaml.safe_load(spec.read_text())
    raw["targets"]["variables"] = TARGETS
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    lat, lon = data_fixtures.fine_grid()
    native_run(tmp_path / "native", lat, lon)
    export_physicsnemo(tmp_path / "native", tmp_path / "package")
    runner = CliRunner()
    result = runner.invoke(app, ["import", "physicsnemo", "--package", str(tmp_path / "package"),
                                 "--out", str(tmp_path / "imported")])
    assert result.exit_code == 0, result.output
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": str(spec), "run_dir": str(tmp_path / "imported"), "device": "cpu",
                                      "sampler": {"num_steps": 3}, "generate": {"members": 2}}))
    out = tmp_path / "ens.nc"
    result = runner.invoke(app, ["generate", str(config), "--out", str(out), "--times", "2021-01-02T03:00", "-q"])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        assert ds["t2m"].shape == (1, 2, 16, 24) and np.isfinite(ds["t2m"].values).all()
