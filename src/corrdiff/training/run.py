"""Entry points: train the regression or the diffusion step of a run config, on one process or many."""

import logging
from pathlib import Path

import torch

from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta, RegressionRef
from corrdiff.config import dump_config, RunConfig
from corrdiff.data import DownscalingDataset, load_spec, PairedDataset
from corrdiff.distributed import DistInfo, init_distributed, shutdown
from corrdiff.errors import ConfigError
from corrdiff.training.tasks import DiffusionTask, RegressionTask
from corrdiff.training.trainer import Trainer

log = logging.getLogger(__name__)


def open_datasets(config: RunConfig, progress: bool = False) -> tuple[DownscalingDataset, DownscalingDataset | None]:
    """Training and validation datasets of the run's data spec (validation None when the spec has none)."""
    spec = load_spec(config.data)
    train_set = DownscalingDataset(spec, split="train", progress=progress)
    val_set = None
    if "validation" in spec.splits:
        val_set = DownscalingDataset(spec, split="validation", stats=train_set.stats)
    return train_set, val_set


def _frozen_regression(path, meta: CheckpointMeta) -> tuple[torch.nn.Module, RegressionRef]:
    """The regression network a diffusion step trains against, checked against the data's channels."""
    checkpoint = ckpt.load_model(path, kind="regression")
    if checkpoint.meta.target_channels != meta.target_channels or \
            checkpoint.meta.input_channels != meta.input_channels:
        raise ConfigError(
            f"regression checkpoint {checkpoint.path} was trained on channels {list(checkpoint.meta.input_channels)} "
            f"-> {list(checkpoint.meta.target_channels)}, but the data spec gives {list(meta.input_channels)} -> "
            f"{list(meta.target_channels)}"
        )
    return ckpt.load_network(checkpoint), RegressionRef(str(checkpoint.path), checkpoint.sha256)


def run_training(kind: str, config: RunConfig, train_set: PairedDataset, val_set: PairedDataset | None,
                 info: DistInfo, resume: bool = False, progress: bool = True) -> tuple[Path, str]:
    """Train one step on the given datasets; returns the step's run folder and "finished"/"interrupted"."""
    if kind not in ckpt.KINDS:
        raise ConfigError(f"unknown training step {kind!r}: expected 'regression' or 'diffusion'")
    section = config.regression if kind == "regression" else config.diffusion
    height, width = train_set.lat.shape
    unet = config.model.unet_config((height, width), len(train_set.input_channels), len(train_set.target_channels))
    run_dir = Path(config.run_dir) / kind
    meta = CheckpointMeta(
        kind=kind, unet=unet, input_channels=train_set.input_channels, target_channels=train_set.target_channels,
        target_attrs=dict(getattr(train_set, "target_attrs", {}) or {}), stats=train_set.stats,
        config=dump_config(config),
        sigma_data=config.diffusion.sigma_data if kind == "diffusion" else None,
    )
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
        regression, reference = _frozen_regression(
            section.regression_checkpoint or Path(config.run_dir) / "regression", meta)
        task = DiffusionTask(unet, section, regression)
        meta = meta.replace(regression_checkpoint=reference)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(config))
    trainer = Trainer(task, section, train_set, val_set, info, run_dir, meta, progress)
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
        shutdown(info)
