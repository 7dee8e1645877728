"""Generation samples a patch-trained model the way it was trained: the training patches are the default, a
model with global context refuses other patches, and the denoiser's condition is the one training built."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr

from corrdiff.checkpoint import load_model
from corrdiff.config import ConfigError
from corrdiff.diffusion import DiffusionCondition, PatchedDenoiser, SamplerConfig
from corrdiff.inference.downscaling import downscale, Models
from corrdiff.inference.generate import EnsembleOutput, generate, GenerationRequest
from corrdiff.models import presets
from corrdiff.seeding import Draws
from corrdiff.training.tasks import DiffusionTask
from tests.training.run_synthetic import main as train_main, synthetic_config
from tests.training.synthetic import SyntheticDataset

PATCH = ["diffusion.patch_shape=[8, 8]", "model.global_context=true"]
GENERATE = ["sampler.num_steps=2", "generate.members=2", "generate.patch_overlap=[4, 4]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Both models trained for a few steps; the diffusion model on 8×8 patches with global context."""
    run = tmp_path_factory.mktemp("run")
    assert train_main(["regression", str(run), "5", *PATCH]) == 0
    assert train_main(["diffusion", str(run), "5", *PATCH]) == 0
    return run


def run(run_dir, out, *overrides):
    config = synthetic_config(str(run_dir), 5, [*PATCH, *GENERATE, *overrides])
    return generate(config, GenerationRequest(run_dir / "regression", run_dir / "diffusion",
                                              dataset=SyntheticDataset(3, seed=3)), EnsembleOutput(out, progress=False))


def test_the_training_patches_are_generations_default(run_dir, tmp_path):
    assert load_model(run_dir / "diffusion").meta.patch_shape == (8, 8)
    default = run(run_dir, tmp_path / "default.nc")
    explicit = run(run_dir, tmp_path / "explicit.nc", "generate.patch_shape=[8, 8]")
    with xr.open_dataset(default) as a, xr.open_dataset(explicit) as b:
        np.testing.assert_array_equal(a["u"].values, b["u"].values)
        assert "patch_shape:\n  - 8\n  - 8" in a.attrs["corrdiff_config"]


@pytest.mark.parametrize("patch, shown", [("[16, 16]", "16×16"), ("null", "none")])
def test_other_patches_with_global_context_are_refused(run_dir, tmp_path, patch, shown):
    with pytest.raises(ConfigError, match=rf"generate.patch_shape: {shown}.*trained on 8×8 patches with global context"):
        run(run_dir, tmp_path / "x.nc", f"generate.patch_shape={patch}")
    assert not (tmp_path / "x.nc").exists()


class Recorder(torch.nn.Module):
    """A denoiser that records the condition and positions it is given, and returns its input."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, sigma, condition, positions=None):
        self.calls.append((condition.detach().clone(), None if positions is None else positions.clone()))
        return x


@pytest.mark.parametrize("on_mean, context, patches", list(itertools.product([False, True], [False, True],
                                                                             [None, (8, 8)])))
def test_generation_builds_the_condition_training_built(on_mean, context, patches):
    if context and patches is None:
        pytest.skip("global context exists for patches only")
    unet = presets["tiny"].replace(img_shape=(16, 16), in_channels=3, out_channels=2, attn_resolutions=(),
                                   condition_on_mean=on_mean, global_context=context)
    section = synthetic_config("unused", 1, [f"diffusion.patch_shape={list(patches) if patches else 'null'}"]).diffusion
    torch.manual_seed(0)
    regression = unet.build_regression().eval()
    task = DiffusionTask(unet, section, regression)
    inputs = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    training = Recorder()
    for seed in range(4):  # several random patch positions
        task.loss(training, inputs, torch.zeros(1, 2, 16, 16), None, Draws(seed))
    condition = DiffusionCondition.from_unet(unet)
    sampling = Recorder()
    plain_residual = SimpleNamespace(residual_unit=lambda: ())  # the checkpoint meta's part that sampling reads
    models = Models(regression, sampling, plain_residual, condition, {})
    # Overlap 7 on 8×8 patches of 16×16: every offset is a tile, so each training patch has its twin.
    patcher = PatchedDenoiser((16, 16), patches, (7, 7), condition=condition) if patches else None
    downscale(models, inputs, 1, 0, SamplerConfig(num_steps=1), patcher=patcher)
    if patches is None:
        torch.testing.assert_close(training.calls[0][0], sampling.calls[0][0], rtol=0, atol=0)
        return
    tiles = {tuple(p.tolist()): c for cond, pos in sampling.calls for c, p in zip(cond, pos)}
    for cond, pos in training.calls:
        torch.testing.assert_close(cond[0], tiles[tuple(pos[0].tolist())], rtol=0, atol=0)
