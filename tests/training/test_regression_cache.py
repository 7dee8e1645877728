"""The regression-mean cache (corrdiff.training.regression_cache) and several patches per sample in training."""

import json

import numpy as np
import pytest
import torch

from corrdiff.diffusion import random_patches
from corrdiff.distributed import DistInfo
from corrdiff.errors import ConfigError
from corrdiff.seeding import Draws
from corrdiff.training import regression_cache as rc
from corrdiff.training.run import _use_regression_cache, check_settings
from corrdiff.training.tasks import DiffusionTask
from tests.training.run_synthetic import losses, main as run_main, synthetic_config
from tests.training.synthetic import SyntheticDataset

C_IN, C_OUT = len(SyntheticDataset.input_channels), len(SyntheticDataset.target_channels)


def unet_and_section(*overrides):
    config = synthetic_config("unused", 3, list(overrides))
    return config.model.unet_config((16, 16), C_IN, C_OUT), config.diffusion


def regression(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return unet_and_section()[0].build_regression().eval()


def recomputed(net, dataset, batch=8) -> np.ndarray:
    """μ of every sample, recomputed in batches of `batch` other samples (a convolution's rounding depends on the
    batch size, not on which samples are batched together)."""
    inputs = torch.stack([dataset[i].input for i in range(len(dataset))])
    out = np.empty((len(dataset), C_OUT, 16, 16), np.float32)
    for i in range(len(dataset)):
        others = [(i + 3 * k) % len(dataset) for k in range(batch)]  # sample i first, then others
        out[i] = rc.regression_means(net, inputs[others])[0].numpy()
    return out


def cached(dataset) -> np.ndarray:
    return np.stack([dataset[i].input[C_IN:].numpy() for i in range(len(dataset))])


class Failing(torch.nn.Module):
    """The regression, failing at call `fail_at` (as a killed build would stop), counting the samples it sees."""

    def __init__(self, net, fail_at=None):
        super().__init__()
        self.net, self.fail_at, self.calls, self.samples = net, fail_at, 0, 0

    def forward(self, inputs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.samples += len(inputs)
        return self.net(inputs)


def test_cached_mean_equals_recomputed_mean_exactly(tmp_path):
    data, net = SyntheticDataset(10), regression(0)
    with_mean = rc.ensure(tmp_path, data, net, "a" * 64, "cpu", batch=4, progress=False)
    assert np.array_equal(cached(with_mean), recomputed(net, data, batch=4))  # 10 samples: the last call padded
    assert torch.equal(with_mean[3].input[:C_IN], data[3].input) and torch.equal(with_mean[3].target, data[3].target)
    assert len(with_mean) == 10 and with_mean.times is data.times and with_mean.lat is data.lat
    stored = np.load(tmp_path / rc.FOLDER / rc.MEAN_FILE, mmap_mode="r")
    assert stored.dtype == np.float32 and stored.shape == (10, C_OUT, 16, 16)


def test_a_complete_cache_is_reused_and_a_changed_checkpoint_or_data_rebuilds_it(tmp_path):
    data, first, second = SyntheticDataset(6), regression(0), regression(1)
    rc.ensure(tmp_path, data, first, "a" * 64, "cpu", progress=False)
    counting = Failing(first)
    rc.ensure(tmp_path, data, counting, "a" * 64, "cpu", progress=False)
    assert counting.calls == 0  # same checkpoint and data: read back, not recomputed

    rebuilt = rc.ensure(tmp_path, data, second, "b" * 64, "cpu", progress=False)  # another checkpoint SHA-256
    assert np.array_equal(cached(rebuilt), recomputed(second, data))
    assert json.loads((tmp_path / rc.FOLDER / rc.META_FILE).read_text())["regression_sha256"] == "b" * 64

    other_data = SyntheticDataset(6, seed=5)  # same times and grid, other values
    rebuilt = rc.ensure(tmp_path, other_data, second, "b" * 64, "cpu", progress=False)
    assert np.array_equal(cached(rebuilt), recomputed(second, other_data))


def test_a_killed_build_is_never_used_and_is_resumed(tmp_path, monkeypatch):
    data, net = SyntheticDataset(10), regression(0)
    monkeypatch.setattr(rc, "SAVE_EVERY_S", 0.0)  # record progress after every batch
    with pytest.raises(KeyboardInterrupt):
        rc.ensure(tmp_path, data, Failing(net, fail_at=3), "a" * 64, "cpu", batch=2, progress=False)
    expected = rc.fingerprint(data, "a" * 64)
    assert not (tmp_path / rc.FOLDER).exists() and not rc.complete(tmp_path, expected)
    assert json.loads((tmp_path / rc.PARTIAL / rc.PROGRESS_FILE).read_text())["done"] == 4

    resumed = Failing(net)
    with_mean = rc.ensure(tmp_path, data, resumed, "a" * 64, "cpu", batch=2, progress=False)
    assert resumed.samples == 6  # the 4 rows done before the kill are kept
    assert np.array_equal(cached(with_mean), recomputed(net, data, batch=2))
    assert not (tmp_path / rc.PARTIAL).exists()

    # A cache folder without its record (cache.json is written last) is not complete: rebuilt from scratch.
    (tmp_path / rc.FOLDER / rc.META_FILE).unlink()
    counting = Failing(net)
    rc.ensure(tmp_path, data, counting, "a" * 64, "cpu", batch=2, progress=False)
    assert counting.samples == 10


def test_a_partial_build_for_another_checkpoint_starts_over(tmp_path, monkeypatch):
    data, net = SyntheticDataset(8), regression(0)
    monkeypatch.setattr(rc, "SAVE_EVERY_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        rc.ensure(tmp_path, data, Failing(regression(1), fail_at=3), "b" * 64, "cpu", batch=2, progress=False)
    counting = Failing(net)
    with_mean = rc.ensure(tmp_path, data, counting, "a" * 64, "cpu", batch=2, progress=False)
    assert counting.samples == 8 and np.array_equal(cached(with_mean), recomputed(net, data, batch=2))


def test_several_patches_per_sample_are_distinct_crops_of_that_sample():
    unet, section = unet_and_section("diffusion.patch_shape=[8, 8]", "diffusion.patches_per_sample=3")
    task = DiffusionTask(unet, section, regression(0))
    seen = {}
    task.edm = lambda module, residual, condition, positions, weights, generator: seen.update(
        residual=residual, condition=condition, positions=positions) or residual.sum()
    data = SyntheticDataset(2)
    condition, target = torch.stack([data[0].input, data[1].input]), torch.stack([data[0].target, data[1].target])
    task.loss(None, condition, target, None, Draws(7))
    residual = target - rc.regression_means(task.regression, condition)
    assert seen["residual"].shape == (6, C_OUT, 8, 8) and seen["condition"].shape == (6, C_IN, 8, 8)
    for row, (y0, x0) in enumerate(seen["positions"].tolist()):
        sample = row // 3  # element-major: rows 0-2 are sample 0's patches
        assert torch.equal(seen["residual"][row], residual[sample, :, y0 : y0 + 8, x0 : x0 + 8])
        assert torch.equal(seen["condition"][row], condition[sample, :, y0 : y0 + 8, x0 : x0 + 8])
    for sample in range(2):
        assert len({tuple(p) for p in seen["positions"][3 * sample : 3 * sample + 3].tolist()}) == 3

    # One patch per sample draws exactly what random_patches draws on the residual itself.
    task.section = section.model_copy(update={"patches_per_sample": 1})
    task.loss(None, condition, target, None, Draws(7))
    (_,), positions = random_patches([residual], (8, 8), Draws(7).host)
    assert torch.equal(seen["positions"], positions)


def test_cached_condition_carries_y_then_mean():
    unet, section = unet_and_section()
    task, data = DiffusionTask(unet, section, regression(0)), SyntheticDataset(2)
    inputs = torch.stack([data[0].input, data[1].input])
    mean = rc.regression_means(task.regression, inputs)
    for condition in (inputs, torch.cat([inputs, mean], dim=1)):
        got_inputs, got_mean = task.inputs_and_mean(condition)
        assert torch.equal(got_inputs, inputs) and torch.equal(got_mean, mean)


def test_settings_and_the_auto_choice(tmp_path):
    unet, section = unet_and_section("diffusion.patches_per_sample=2")
    with pytest.raises(ConfigError, match="diffusion.patches_per_sample 2 needs diffusion.patch_shape"):
        check_settings("diffusion", section, unet, SyntheticDataset.target_channels)
    info, data = DistInfo(0, 1, 0, torch.device("cpu")), SyntheticDataset(24)  # 24 samples
    choice = lambda *o: _use_regression_cache(unet_and_section(*o)[1], data, tmp_path, info)
    assert not choice()  # auto: whole-domain training recomputes μ
    assert choice("diffusion.patch_shape=[8, 8]")  # auto: patched, 3 steps × 8 ≥ 24 samples
    assert not choice("diffusion.patch_shape=[8, 8]", "diffusion.steps=2")  # 16 < 24: the pass would not pay
    assert choice("diffusion.regression_cache=true")
    assert not choice("diffusion.patch_shape=[8, 8]", "diffusion.regression_cache=false")


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("regression")
    assert run_main(["regression", str(run_dir), "1"]) == 0
    return run_dir / "regression"


@pytest.mark.parametrize("patches", ["[8, 8]", "null"])
def test_training_with_the_cache_gives_the_same_losses(tmp_path, regression_run, patches):
    common = [f"diffusion.regression_checkpoint={regression_run}", f"diffusion.patch_shape={patches}",
              "diffusion.validate_every=2"]
    if patches != "null":
        common.append("diffusion.patches_per_sample=2")
    runs = {}
    for cache in ("true", "false"):
        assert run_main(["diffusion", str(tmp_path / cache), "4", *common, f"diffusion.regression_cache={cache}"]) == 0
        runs[cache] = losses(tmp_path / cache, "diffusion")
    assert (tmp_path / "true" / "diffusion" / rc.FOLDER / rc.META_FILE).exists()
    assert not (tmp_path / "false" / "diffusion" / rc.FOLDER).exists()
    assert len(runs["true"]) == 4 and runs["true"] == runs["false"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs exist on CUDA only")
def test_patch_draws_and_crops_make_no_host_sync_on_cuda():
    from corrdiff.training.tasks import crop_patches, patch_positions

    residual = torch.randn(2, C_OUT, 16, 16, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        positions = patch_positions(6, (16, 16), (8, 8), Draws(3, "cuda"), torch.device("cuda"))
        patches = crop_patches(residual, positions, (8, 8))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert patches.shape == (6, C_OUT, 8, 8) and positions.device.type == "cuda"


@pytest.mark.slow  # torchrun, two processes
def test_two_processes_share_one_cache_built_by_the_first(tmp_path, regression_run):
    import os
    import subprocess
    import sys

    from tests.training.run_synthetic import MODULE, REPO_ROOT
    from tests.training.test_distributed import free_port

    settings = [f"diffusion.regression_checkpoint={regression_run}", "diffusion.patch_shape=[8, 8]",
                "diffusion.regression_cache=true", "diffusion.batch_per_device=4"]
    assert run_main(["diffusion", str(tmp_path / "single"), "3", *settings]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                f"--master_port={free_port()}", "--master_addr=127.0.0.1"]
    result = subprocess.run(torchrun + ["-m", MODULE, "diffusion", str(tmp_path / "double"), "3", *settings],
                            cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = losses(tmp_path / "single", "diffusion"), losses(tmp_path / "double", "diffusion")
    assert sorted(one) == sorted(two) == [1, 2, 3]
    assert all(two[s] == pytest.approx(one[s], rel=1e-4) for s in one)
    assert not (tmp_path / "double" / "diffusion" / rc.PARTIAL).exists()
