"""Each list of choices has one source: a solver added to `diffusion.solvers.SOLVERS` reaches the config, the
sampler, `corrdiff tune` and its command line; a score added to `evaluation.scores.SCORES` reaches the score table,
the report and the grouping by lead time; a key added to the dataset spec's `INPUT_KEYS` reaches `InputRules` and
what a model package keeps."""

from types import SimpleNamespace
from typing import Literal

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from pydantic import Field

from corrdiff.config import RunConfig
from corrdiff.data.spec import DatasetSpec, INPUT_KEYS, Source
from corrdiff.diffusion.sampler import edm_sample, SamplerConfig
from corrdiff.diffusion.solvers import Solver, SOLVERS, steps_for
from corrdiff.errors import ConfigError
from corrdiff.evaluation import collect, compare_distributions, lead_time, report, tables
from corrdiff.evaluation.metrics import score_models, scores_from_sums, SUMS
from corrdiff.evaluation.scores import DIMENSIONLESS, FROM_DISTRIBUTIONS, FROM_SUMS, MEAN, named, Score, SCORES
from corrdiff.experiments.tuning import sampler_grid, TuneGrid
from corrdiff.inference.inputs import input_rules, InputRules
from tests.cli_runner import invoke, refused
from tests.evaluation import evaluation_fixtures as fx


# ---- solvers ---------------------------------------------------------------------------------------------------

@pytest.fixture
def leap(monkeypatch):
    """A fake solver "leap": 3 evaluations per step, 2 for the last; takes S_noise; records its calls."""
    calls = []

    def integrate(denoise, x, sigmas, noise, S_noise):
        calls.append((len(sigmas) - 1, S_noise))
        return torch.full_like(x, 7.0)

    monkeypatch.setitem(SOLVERS, "leap", Solver(integrate, ("S_noise",), evaluations_per_step=3,
                                                 last_step_evaluations=2))
    return calls


def test_a_new_solver_is_taken_by_the_config_and_the_sampler(leap):
    config = SamplerConfig(solver="leap", num_steps=4, S_noise=0.5)
    assert config.network_evaluations == 3 * 3 + 2 and steps_for("leap", 12) == 4
    assert RunConfig.model_validate({"data": "spec.yaml", "sampler": {"solver": "leap"}}).sampler.solver == "leap"
    with pytest.raises(ValueError, match="S_churn applies to the solvers"):
        SamplerConfig(solver="leap", S_churn=1.0)  # it does not take churn
    sample = edm_sample(lambda x, sigma: x, (1, 2, 2), [0, 1], seed=0, config=config)
    assert leap == [(4, 0.5)] and torch.equal(sample, torch.full((2, 1, 2, 2), 7.0))


def test_a_new_solver_is_in_tunes_grid_and_on_its_command_line(leap, tmp_path, monkeypatch):
    grid = sampler_grid(SamplerConfig(), nfe=[11])
    assert [s.solver for s in grid][-1] == "leap" and grid[-1].num_steps == 4
    with pytest.raises(ConfigError, match="--nfe 1: .*at least 2"):
        sampler_grid(SamplerConfig(), solvers=["leap"], nfe=[1])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": "spec.yaml", "run_dir": "run"}))
    assert "'leap'" in refused(invoke("tune", config, "--solver", "rk4"))  # the choices it names

    asked = {}

    def tune(config, request, grid, *rest):
        asked["solvers"] = grid.solvers
        raise ConfigError("stopped after the arguments")

    monkeypatch.setattr("corrdiff.experiments.tuning.tune", tune)
    refused(invoke("tune", config))
    assert list(asked["solvers"]) == list(SOLVERS) and "leap" in asked["solvers"]  # the default: every solver


# ---- scores ----------------------------------------------------------------------------------------------------

def test_the_table_describes_what_the_metrics_compute(tmp_path):
    assert list(scores_from_sums(np.ones((3, len(SUMS))), members=4)) == named(FROM_SUMS)
    ens, truth, _ = fx.write_case(tmp_path, times=2, members=3, shape=(16, 16))
    evaluation = collect(ens, truth)
    scores = score_models(evaluation)
    for name in named(FROM_SUMS):
        assert scores[name].attrs == SCORES[name].attrs(", over all times")
        assert scores[f"{name}_by_time"].attrs == SCORES[name].attrs(", per time")
    summary = compare_distributions(evaluation, max_times=2).summary
    for name in named(FROM_DISTRIBUTIONS):
        assert summary[name].attrs == SCORES[name].attrs()


def scores_with(per_time: dict[str, np.ndarray], members=(4, 1)) -> xr.Dataset:
    """A scores Dataset (model, variable[, time]) of two models and one variable: each metric over all times is
    the mean of its per-time values (time,), the same for both models."""
    data = {}
    for name, values in per_time.items():
        data[f"{name}_by_time"] = (("model", "variable", "time"), np.broadcast_to(values, (2, 1, len(values))),
                                   {"long_name": f"{name}, per time", "units": "1"})
        data[name] = (("model", "variable"), np.full((2, 1), np.mean(values)))
    data["members"] = (("model",), np.array(members))
    return xr.Dataset(data, {"model": ["corrdiff", "regression"], "variable": ["u"], "units": ("variable", ["m s-1"]),
                             "time": np.arange(len(next(iter(per_time.values())))).astype("datetime64[h]")})


def test_a_new_score_reaches_the_table_the_report_and_the_lead_times(monkeypatch):
    monkeypatch.setitem(SCORES, "hit_rate", Score("fraction of pixels within 1 unit of the truth", "hits",
                                                  "share of pixels whose ensemble mean is within 1 unit of the truth",
                                                  DIMENSIONLESS, FROM_SUMS, MEAN))
    per_time = {name: np.array([1.0, 2.0, 3.0, 5.0]) for name in ("mae", "rmse", "bias", "crps", "spread")}
    scores = scores_with(per_time | {"hit_rate": np.array([0.2, 0.4, 0.6, 1.0])})

    header, rows = tables.rows(scores)
    assert header[-1] == "hits" and rows[0][-1] == "0.55"
    assert 'title="share of pixels whose ensemble mean' in tables.html_table(scores)
    text = " ".join(tables.text_table(scores, width=200).split())  # the caption wraps to the table's width
    assert "skill variable model MAE RMSE bias CRPS hits" in text and "0.55" in text
    assert "except spread/skill, power 2-4Δ, LSD and hits (1)" in text

    evaluation = SimpleNamespace(models={"corrdiff": xr.Dataset(coords={"member": [0, 1]})}, notes=[],
                                 truth=xr.Dataset(coords={"time": scores["time"].values}), spacing_km=2.0)
    figures = {key: [] for key in ("maps", "spectra", "pdfs", "rank_histograms", "spread_skill", "scores_by_time")}
    page = report.render_html(evaluation, scores, figures, "t", scores["time"].values[0])
    assert "<dt>hits</dt><dd>share of pixels whose ensemble mean" in page
    assert "except spread/skill, power 2-4Δ, LSD and hits (dimensionless)" in page

    grouped = lead_time.by_lead_time(scores, np.array([0.0, 6.0, 0.0, 6.0]))
    np.testing.assert_allclose(grouped["hit_rate_by_lead_time"].sel(model="corrdiff", variable="u"), [0.4, 0.7])
    np.testing.assert_allclose(grouped["rmse_by_lead_time"].sel(model="corrdiff", variable="u"),
                               [np.sqrt((1 + 9) / 2), np.sqrt((4 + 25) / 2)])  # roots of mean squares, as before


# ---- the dataset spec's input keys -------------------------------------------------------------------------------

def test_input_rules_are_the_spec_keys_that_read_inputs():
    assert list(InputRules.model_fields) == list(INPUT_KEYS)
    for key, field in InputRules.model_fields.items():
        spec_field = DatasetSpec.model_fields[key]
        assert field.annotation == spec_field.annotation and field.default == spec_field.default


def test_a_new_input_key_of_the_spec_reaches_the_rules_and_a_packages_form():
    class Spec(DatasetSpec):
        regrid: Literal["bilinear", "conservative"] = Field("bilinear", description="how inputs are regridded")

    rules_of = input_rules(Spec, INPUT_KEYS + ("regrid",))
    spec = Spec(inputs=Source(paths=["a.nc"], variables=["t2m"]), regrid="conservative", edge="nearest")
    rules = rules_of.from_spec(spec)
    assert rules.regrid == "conservative" and rules.inputs.paths == [] and rules.edge == "nearest"
    kept = rules.to_dict()
    assert kept["regrid"] == "conservative" and rules_of.from_dict(kept) == rules
    assert rules.spec(["b.nc"]).regrid == "conservative" and isinstance(rules.spec(), Spec)
    older = {key: value for key, value in kept.items() if key != "regrid"}  # a package written before the key
    assert rules_of.from_dict(older).regrid == "bilinear"
    assert InputRules.from_dict(kept) == InputRules.from_spec(spec)  # a reader without the key leaves it out


def test_a_new_solver_is_in_the_default_tune_grid(leap):
    assert "leap" in TuneGrid().solvers and list(TuneGrid().solvers) == list(SOLVERS)
