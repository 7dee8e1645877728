"""The whole chain through the command line on targets of either grid kind (issue 11, item 5): statistics, both
trainings, generation, scores and the report, on the doc's ERA5 spec (targets on a regular lat/lon grid, 1-D
`lat`/`lon` dimension coordinates) and on its WRF spec (raw wrfout targets on a 2-D curvilinear grid)."""

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

from corrdiff.cli import app
from tests.data import real_layouts as rl

STEPS = ["--set", "regression.steps=2", "--set", "diffusion.steps=2"]


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["era5", "wrf"], ids=["lat-lon-1d", "curvilinear-2d"])
def test_stats_train_generate_score_and_report(tmp_path, layout):
    data = tmp_path / "data"
    rl.write_era5_cds(data / "era5")
    if layout == "wrf":
        rl.write_wrfout(data / "wrf")
        lat, lon = rl.wrf_grid()
    else:
        rl.write_latlon_targets(data / "analysis" / "analysis_2021-01.nc")
        lat, lon = np.meshgrid(*rl.latlon_grid(), indexing="ij")
    spec = rl.write_doc_spec(data, layout)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": "data/spec.yaml", "run_dir": "run",
        "model": {"preset": "tiny", "model_channels": 8, "attn_resolutions": []},
        "regression": {"batch_size": 2, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
        "diffusion": {"batch_size": 2, "checkpoint_every": 2, "validate_every": 2, "log_every": 1},
        "sampler": {"num_steps": 2},
        "generate": {"members": 2},
    }))
    invoke("data", "stats", spec, "--quiet")
    invoke("train", "regression", config, "--quiet", *STEPS)
    invoke("train", "diffusion", config, "--quiet", *STEPS)
    ensemble = tmp_path / "ens.nc"
    invoke("generate", config, "--out", ensemble, "--quiet")
    with xr.open_dataset(ensemble) as ds:
        assert set(rl.WRF_TIMES[5:].values) <= set(ds["time"].values)  # the test split (the inputs are hourly)
        np.testing.assert_allclose(ds["lat"].values, lat, atol=1e-5)
        np.testing.assert_allclose(ds["lon"].values, lon, atol=1e-5)
    invoke("score", ensemble, "--truth", spec, "--out", tmp_path / "scores.nc")
    with xr.open_dataset(tmp_path / "scores.nc") as scores:
        assert scores.sizes and scores.data_vars
    invoke("report", ensemble, "--truth", spec, "--out", tmp_path / "report")
    assert (tmp_path / "report" / "index.html").exists()
