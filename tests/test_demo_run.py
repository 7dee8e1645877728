"""`corrdiff demo` end to end at toy sizes: data, both trainings, ensemble, scores and report; a rerun
picks up the finished run instead of refusing or starting over."""

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("pyqg_jax")

from corrdiff.demo import run_demo  # noqa: E402

TOY_DATA = {"times": 40, "held_out": 6, "gap": 2, "spinup_steps": 600, "steps_per_snapshot": 6, "chunk": 10}
TOY_RUN = ["regression.steps=3", "diffusion.steps=3", "regression.checkpoint_every=3", "diffusion.checkpoint_every=3",
           "model.model_channels=8", "generate.members=2", "sampler.num_steps=3"]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    lines = []
    paths = run_demo(tmp_path, TOY_RUN, progress=False, echo=lines.append, times=3, data_options=TOY_DATA)
    text = "\n".join(lines)
    for name in ("config", "ensemble", "scores", "report"):
        assert paths[name].exists(), name
    with xr.open_dataset(paths["ensemble"]) as ensemble:
        assert ensemble.sizes["time"] == 3 and ensemble.sizes["member"] == 2
        assert set(ensemble.data_vars) >= {"u", "v", "vorticity", "u_regression"}
        assert np.isfinite(ensemble["u"].values).all()
    with xr.open_dataset(paths["scores"]) as scores:  # the three models scored, with finite numbers
        assert set(scores["model"].values) == {"corrdiff", "regression", "interp"}
        assert np.isfinite(scores["crps"].sel(model="corrdiff")).all()
    table = [line for line in text.splitlines() if "corrdiff" in line and any(ch.isdigit() for ch in line)]
    assert table, "the printed score table has a corrdiff row with numbers"
    reference = (tmp_path / "run" / "regression" / "metrics.csv").read_text()
    again = run_demo(tmp_path, TOY_RUN, progress=False, echo=lambda *_: None, times=3, data_options=TOY_DATA)
    assert again["ensemble"] == paths["ensemble"]
    assert (tmp_path / "run" / "regression" / "metrics.csv").read_text() == reference  # nothing retrained
