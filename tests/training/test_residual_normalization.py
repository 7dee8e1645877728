"""Residual normalisation: the denoiser learns (x − μ)/std · σ_data, and the sampler scales its samples back."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from corrdiff import checkpoint as ckpt
from corrdiff.diffusion import SamplerConfig, sample_ensemble
from corrdiff.distributed import init_distributed
from corrdiff.errors import CheckpointError
from corrdiff.networks import load_network
from corrdiff.seeding import Draws
from corrdiff.training import run_training
from corrdiff.training.tasks import DiffusionTask, residual_std
from tests.training.run_synthetic import synthetic_config
from tests.training.synthetic import SyntheticDataset

INFO = init_distributed("cpu")


class HalfOfInputs(nn.Module):
    """A stand-in regression: μ = 0.5 × the first two inputs."""

    def forward(self, x, *args):
        return 0.5 * x[:, :2]


def task(regression: nn.Module = HalfOfInputs(), **overrides) -> DiffusionTask:
    config = synthetic_config("unused", 1, [f"diffusion.{k}={v}" for k, v in overrides.items()])
    unet = config.model.unet_config((16, 16), 3, 2)
    return DiffusionTask(unet, config.diffusion, regression)


def test_measured_std_is_the_residuals_numpy_std():
    data = SyntheticDataset(n=12)
    residual = (data.targets - 0.5 * data.inputs[:, :2]).numpy().astype(np.float64)
    expected = residual.transpose(1, 0, 2, 3).reshape(2, -1).std(axis=1)
    np.testing.assert_allclose(residual_std(task(), data, samples=100, device="cpu", batch=5), expected, rtol=1e-6)
    # a subset: evenly spaced samples, first and last included
    picked = residual[[0, 4, 7, 11]].transpose(1, 0, 2, 3).reshape(2, -1).std(axis=1)
    np.testing.assert_allclose(residual_std(task(), data, samples=4, device="cpu"), picked, rtol=1e-6)


def test_loss_is_that_of_the_residual_divided_by_the_unit():
    zero = HalfOfInputs()  # made μ = 0: the residual is the target itself
    zero.forward = lambda x, *args: torch.zeros_like(x[:, :2])
    data = SyntheticDataset(n=4)
    condition, target = data.inputs, data.targets
    unit = (0.3, 2.0)
    scaled = task(zero)
    scaled.set_residual_unit(unit)
    plain = task(zero)
    plain.net.load_state_dict(scaled.net.state_dict())
    divided = target / torch.tensor(unit).reshape(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(scaled.loss(scaled.net, condition, target, draws=Draws(7)),
                                   plain.loss(plain.net, condition, divided, draws=Draws(7)))
        assert not torch.allclose(plain.loss(plain.net, condition, target, draws=Draws(7)),
                                  plain.loss(plain.net, condition, divided, draws=Draws(7)))


def test_sampler_multiplies_the_sampled_residual_by_the_unit():
    mean = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    shrink = lambda x, sigma, cond: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)  # E[r | r + σn] for r ~ N(0, 1)
    config = SamplerConfig(num_steps=6)
    plain = sample_ensemble(shrink, mean, torch.zeros(1, 1, 8, 8), range(3), 0, config)
    unit = sample_ensemble(shrink, mean, torch.zeros(1, 1, 8, 8), range(3), 0, config, residual_unit=(0.5, 3.0))
    torch.testing.assert_close(unit - mean, (plain - mean) * torch.tensor([0.5, 3.0]).reshape(1, -1, 1, 1))
    calibrated = SamplerConfig(num_steps=6, residual_scale=(2.0, 1.0))
    both = sample_ensemble(shrink, mean, torch.zeros(1, 1, 8, 8), range(3), 0, calibrated, residual_unit=(0.5, 3.0))
    torch.testing.assert_close(both - mean, (plain - mean) * torch.tensor([1.0, 3.0]).reshape(1, -1, 1, 1))


def meta(**changes) -> ckpt.CheckpointMeta:
    config = synthetic_config("unused", 1)
    data = SyntheticDataset(n=2)
    base = ckpt.CheckpointMeta(kind="diffusion", unet=config.model.unet_config((16, 16), 3, 2),
                               input_channels=data.input_channels, target_channels=data.target_channels,
                               stats=data.stats, config="{}", sigma_data=0.5)
    return base.replace(**changes)


def test_model_json_keeps_residual_std_under_its_own_format():
    normalised = meta(residual_std=(0.2, 0.4))
    text = normalised.to_json()
    assert json.loads(text)["format"] == ckpt.FORMAT_RESIDUAL
    again = ckpt.CheckpointMeta.from_json(text)
    assert again.residual_std == (0.2, 0.4) and again.residual_unit() == pytest.approx((0.4, 0.8))
    assert json.loads(meta().to_json())["format"] == ckpt.FORMAT and meta().residual_unit() == ()
    # a reader must not take a normalised denoiser for a plain one, or the reverse
    stripped = json.loads(text) | {"format": ckpt.FORMAT}
    with pytest.raises(CheckpointError, match="does not go with .*residual_std"):
        ckpt.CheckpointMeta.from_json(json.dumps(stripped))
    with pytest.raises(CheckpointError, match="residual_std has 1 values for 2 target channels"):
        ckpt.CheckpointMeta.from_json(json.dumps(json.loads(text) | {"residual_std": [0.2]}))
    with pytest.raises(CheckpointError, match="positive finite"):
        ckpt.CheckpointMeta.from_json(json.dumps(json.loads(text) | {"residual_std": [0.2, 0.0]}))


def train(run_dir, kind, steps, resume=False, **overrides):
    config = synthetic_config(str(run_dir), steps, [f"diffusion.{k}={v}" for k, v in overrides.items()])
    return run_training(kind, config, SyntheticDataset(), SyntheticDataset(8, seed=1), INFO, resume=resume,
                        progress=False)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(run_dir, "regression", 3)
    return run_dir


def test_training_measures_keeps_and_resumes_the_residual_std(regression_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(regression_run, run_dir)
    train(run_dir, "diffusion", 2)
    first = ckpt.load_model(run_dir / "diffusion", "latest", kind="diffusion")
    regression = load_network(ckpt.load_model(run_dir / "regression", "latest", kind="regression"))
    expected = residual_std(task(regression), SyntheticDataset(), samples=256, device="cpu")
    np.testing.assert_allclose(first.meta.residual_std, expected, rtol=1e-5)
    train(run_dir, "diffusion", 4, resume=True, residual_std_samples=3)  # a resumed run keeps its measurement
    assert ckpt.load_model(run_dir / "diffusion", "latest", kind="diffusion").meta.residual_std \
        == first.meta.residual_std


def test_paper_residual_leaves_no_std_and_export_refuses_a_normalised_denoiser(regression_run, tmp_path):
    import shutil
    from corrdiff.interop.convert import export_physicsnemo
    plain, normalised = tmp_path / "plain", tmp_path / "normalised"
    for run_dir, flag in ((plain, "false"), (normalised, "true")):
        shutil.copytree(regression_run, run_dir)
        train(run_dir, "diffusion", 1, residual_normalization=flag)
    assert ckpt.load_model(plain / "diffusion", "latest", kind="diffusion").meta.residual_std == ()
    with pytest.raises(CheckpointError, match="residual_normalization=false"):
        export_physicsnemo(normalised, tmp_path / "export", which="latest")
    assert not (tmp_path / "export").exists()
