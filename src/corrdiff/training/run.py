"""Entry points: train the regression or the diffusion step of a run config, on one process or many."""

import logging
from pathlib import Path

import torch

from corrdiff import __version__
from corrdiff.config import ConfigError, dump_config, RunConfig
from corrdiff.models import UNetConfig
from corrdiff.training import checkpoint as ckpt
from corrdiff.training.distributed import DistInfo, init_distributed
from corrdiff.training.tasks import DiffusionTask, RegressionTask
from corrdiff.training.trainer import file_sha256, Trainer

log = logging.getLogger(__name__)


def load_regression(path: str | Path, device="cpu"):
    """The frozen EMA regression network of a checkpoint, and the checkpoint itself."""
    checkpoint = ckpt.load_model(path)
    if checkpoint.meta.get("kind") != "regression":
        raise ConfigError(f"{checkpoint.path} is a {checkpoint.meta.get('kind')!r} checkpoint, not a regression one")
    net = UNetConfig.from_dict(checkpoint.meta["unet"]).build_regression()
    net.load_state_dict(checkpoint.weights)
    return net.to(device).eval().requires_grad_(False), checkpoint


def open_datasets(config: RunConfig, progress: bool = False):
    """Training and validation datasets of the run's data spec (validation may be empty)."""
    from corrdiff.data import DownscalingDataset, load_spec

    spec = load_spec(config.data)
    train_set = DownscalingDataset(spec, split="train", progress=progress)
    val_set = None
    if "validation" in spec.splits:
        val_set = DownscalingDataset(spec, split="validation", stats=train_set.stats)
    return train_set, val_set


def run_training(kind: str, config: RunConfig, train_set, val_set, info: DistInfo,
                 resume: bool = False, progress: bool = True) -> tuple[Path, str]:
    """Train one step on the given datasets; returns the step's run folder and "finished"/"interrupted"."""
    if kind not in ("regression", "diffusion"):
        raise ConfigError(f"unknown training step {kind!r}: expected 'regression' or 'diffusion'")
    section = config.regression if kind == "regression" else config.diffusion
    height, width = train_set.lat.shape
    unet = config.model.unet_config((height, width), len(train_set.input_channels), len(train_set.target_channels))
    run_dir = Path(config.run_dir) / kind
    meta = {
        "format": "corrdiff-checkpoint-1",
        "kind": kind,
        "corrdiff_version": __version__,
        "unet": unet.to_dict(),
        "input_channels": list(train_set.input_channels),
        "target_channels": list(train_set.target_channels),
        "target_attrs": dict(getattr(train_set, "target_attrs", {}) or {}),
        "stats": train_set.stats.to_dict(),
        "config": dump_config(config),
    }
    existing = ckpt.read_pointer(run_dir / "checkpoints", "latest")
    if existing and not resume:
        raise ConfigError(
            f"{run_dir} already holds checkpoints (latest: {existing}); pass --resume to continue that run, "
            "or set another run_dir, so that nothing is overwritten"
        )
    torch.manual_seed(section.seed)  # initial weights, identical on every rank and every rerun
    if kind == "regression":
        task = RegressionTask(unet, section)
    else:
        reg_path = section.regression_checkpoint or Path(config.run_dir) / "regression"
        regression, reg_ckpt = load_regression(reg_path)
        if reg_ckpt.meta["target_channels"] != meta["target_channels"] or \
                reg_ckpt.meta["input_channels"] != meta["input_channels"]:
            raise ConfigError(
                f"regression checkpoint {reg_ckpt.path} was trained on channels {reg_ckpt.meta['input_channels']} -> "
                f"{reg_ckpt.meta['target_channels']}, but the data spec gives {meta['input_channels']} -> "
                f"{meta['target_channels']}"
            )
        task = DiffusionTask(unet, section, regression)
        meta |= {
            "sigma_data": section.sigma_data,
            "regression_checkpoint": {"path": str(reg_ckpt.path),
                                      "sha256": file_sha256(reg_ckpt.path / "model.safetensors")},
        }
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(config))
    trainer = Trainer(task, config, section, train_set, val_set, info, run_dir, meta, progress)
    if resume and not trainer.resume() and info.is_main:
        log.info(f"--resume: no checkpoint in {run_dir / 'checkpoints'} yet; starting from step 0")
    return run_dir, trainer.fit()


def train(kind: str, config: RunConfig, resume: bool = False, progress: bool = True) -> tuple[Path, str]:
    """Train a step from the run config's data spec, in this process or as one rank of torchrun."""
    info = init_distributed(config.device)
    try:
        train_set, val_set = open_datasets(config, progress and info.is_main)
        return run_training(kind, config, train_set, val_set, info, resume, progress)
    finally:
        from corrdiff.training.distributed import shutdown

        shutdown(info)
