"""The demo's printed score table says which sampler made the ensemble it scores, from the file's own
attributes; the demo's config samples with the setting docs/sampling.md recommends."""

import dataclasses

import xarray as xr

from corrdiff.config import RunConfig
from corrdiff.demo import DEMO_CONFIG, evaluate_demo, sampler_used
from corrdiff.diffusion.sampler import SamplerConfig
from tests.evaluation import evaluation_fixtures as fx


def attrs_of(sampler: SamplerConfig) -> dict[str, str]:
    """The attributes `corrdiff generate` writes for a sampler."""
    return {f"sampler_{k}": str(v) for k, v in dataclasses.asdict(sampler).items()}


def test_sampler_used_names_solver_steps_and_network_evaluations():
    assert sampler_used(attrs_of(SamplerConfig())) == "heun (karras), 18 steps, NFE 35"
    tuned = SamplerConfig(solver="euler", schedule="loglinear", num_steps=11, S_churn=2.0, residual_scale=(1.2, 0.9))
    assert sampler_used(attrs_of(tuned)) == "euler (loglinear), 11 steps, NFE 11, S_churn 2, residual_scale (1.2, 0.9)"
    assert sampler_used({}) == "sampler not recorded"
    parity = SamplerConfig(S_churn=40.0, arithmetic="physicsnemo")
    assert sampler_used(attrs_of(parity)) == "heun (karras), 18 steps, NFE 35, S_churn 40, arithmetic physicsnemo"


def test_demo_config_samples_with_the_recommended_setting():
    sampler = RunConfig.model_validate({"data": "spec.yaml", **DEMO_CONFIG}).sampler
    assert (sampler.solver, sampler.schedule, sampler.network_evaluations) == ("dpmpp_2m", "loglinear", 7)


def test_printed_table_names_the_sampler_of_the_file(tmp_path):
    truth, ensemble, regression = fx.case(times=2, members=2, shape=(16, 16), variables=("u",))
    path = fx.write_ensemble(tmp_path / "plain.nc", ensemble, regression)
    with xr.load_dataset(path) as ds:
        ds.attrs.update(attrs_of(SamplerConfig(solver="dpmpp_2m_sde", num_steps=7)))
        ds.to_netcdf(tmp_path / "ens.nc")
    lines = []
    evaluate_demo(fx.write_truth(tmp_path / "truth.nc", truth), tmp_path / "ens.nc", tmp_path / "out", lines.append)
    text = "\n".join(lines)
    assert "corrdiff sampler dpmpp_2m_sde (karras), 7 steps, NFE 7" in " ".join(text.split())  # the title may wrap
    assert "LSD" in text
