"""Entry points: train the regression or the diffusion step of a run config, or distil the diffusion step into a
consistency student (`corrdiff.training.distill`), on one process or many.

A step's run folder (`<run_dir>/<kind>`) is trained by one process group at a time (`train.lock`, taken with
`corrdiff.locks`), and a resumed run keeps the settings that decide what it learns (`check_resumable`).
"""

import logging
from pathlib import Path

import numpy as np
import torch
import yaml

from corrdiff import checkpoint as ckpt, locks
from corrdiff.checkpoint import CheckpointMeta, ModelCheckpoint, RegressionRef
from corrdiff.config import dump_config, RunConfig, TrainSection
from corrdiff.data import DownscalingDataset, load_spec, Normalization, PairedDataset
from corrdiff.data.stats import input_ranges
from corrdiff.distributed import broadcast_flag, DistInfo, init_distributed, shutdown
from corrdiff.errors import CheckpointError, ConfigError, TrainingError
from corrdiff.fast_path import to_channels_last
from corrdiff.file_integrity import atomic_write_text
from corrdiff.models import UNetConfig
from corrdiff.networks import load_network
from corrdiff.training import distill, regression_cache
from corrdiff.training.batches import micro_batching
from corrdiff.training.data_identity import data_fingerprint
from corrdiff.training.distill import DistillTask
from corrdiff.training.tasks import DiffusionTask, RegressionTask, residual_std
from corrdiff.training.trainer import Trainer

log = logging.getLogger(__name__)

LOCK_FILE = "train.lock"
STEPS = ("regression", "diffusion", "distill")  # the training steps, each a section of the run config and a folder

# Settings of a step's section that may change when its run is resumed: they steer the rest of the
# optimisation (learning rate and its schedule, how long, how often to log, validate and save, the EMA,
# the fast path) but neither what was learnt nor which samples and noise make each step. The EMA and
# learning-rate ramp settings are matched by prefix. A change of any other setting is refused.
CHANGEABLE_ON_RESUME = frozenset({
    "steps", "lr", "betas", "weight_decay", "warmup_steps", "warmup_samples", "schedule", "grad_clip",
    "log_every", "validate_every", "checkpoint_every", "keep_last", "num_workers",
    "ema_halflife_samples", "ema_rampup", "precision", "compile", "channels_last", "allow_tf32", "fused_norm",
    "regression_cache",  # μ is the same fp32 regression mean read back or recomputed
    "sample_every",  # when the sample check runs; what it measures (times, members, steps) stays, so that
                     # best-crps compares like with like
    "recipe",  # its values are compared one by one
    "residual_std_samples",  # a resumed run keeps the standard deviation it measured at its start
    "recommended_steps",  # only what the student's checkpoint recommends for sampling
})
CHANGEABLE_PREFIXES = ("ema_", "lr_")


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
    return load_network(checkpoint), RegressionRef(str(checkpoint.path), checkpoint.sha256)


def check_settings(kind: str, section: TrainSection, unet: UNetConfig, target_channels) -> None:
    """ConfigError, naming the key, for settings that the data's grid and channels rule out."""
    if section.channel_weights is not None and len(section.channel_weights) != len(target_channels):
        raise ConfigError(f"{kind}.channel_weights has {len(section.channel_weights)} values, but the data has "
                          f"{len(target_channels)} target channels {list(target_channels)}")
    divisor = 2 ** (len(unet.channel_mult) - 1)
    height, width = unet.img_shape
    if height % divisor or width % divisor:
        raise ConfigError(f"model.channel_mult: {len(unet.channel_mult)} levels need grid sides that are multiples of "
                          f"{divisor}, but the data's fine grid is {height}×{width}; use fewer levels")
    if getattr(section, "patches_per_sample", 1) > 1 and section.patch_shape is None:
        raise ConfigError(f"{kind}.patches_per_sample {section.patches_per_sample} needs {kind}.patch_shape: "
                          "without patches every sample is used whole; set patch_shape or patches_per_sample: 1")
    if section.patch_shape is not None:
        patch_h, patch_w = section.patch_shape
        if patch_h > height or patch_w > width or patch_h % divisor or patch_w % divisor:
            raise ConfigError(f"{kind}.patch_shape: {patch_h}×{patch_w} must fit the fine grid {height}×{width} and "
                              f"have sides that are multiples of {divisor} (model.channel_mult has "
                              f"{len(unet.channel_mult)} levels)")


def check_resumable(kind: str, config: RunConfig, meta: CheckpointMeta, previous: ModelCheckpoint) -> list[str]:
    """The setting changes since `previous` (the run's latest checkpoint) that resuming applies, as
    "key: old -> new"; a ConfigError naming every other change, with its old and new values."""
    try:
        saved = yaml.safe_load(previous.meta.config) or {}
    except yaml.YAMLError:
        saved = None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{previous.path / ckpt.MODEL_META}: its run config is not a YAML mapping")
    new = config.model_dump(mode="json")
    applied, refused = [], []
    section = getattr(config, kind)
    # A section left out of the recorded config (distill: while it is the default) had its defaults.
    old_section = saved[kind] if kind in saved else type(section)().model_dump(mode="json")
    new_section = section.model_dump(mode="json")
    for key, value in new_section.items():
        if key not in old_section or key in ("regression_checkpoint", "teacher_checkpoint"):  # compared below
            continue
        if old_section[key] != value:
            changeable = key in CHANGEABLE_ON_RESUME or key.startswith(CHANGEABLE_PREFIXES)
            (applied if changeable else refused).append(f"{kind}.{key}: {old_section[key]!r} -> {value!r}")
    if "data" in saved and saved["data"] != new["data"]:
        if saved.get("data_fingerprint") and saved["data_fingerprint"] == new.get("data_fingerprint"):
            applied.append(f"data: {saved['data']!r} -> {new['data']!r}: the same spec and data files by contents "
                           "(a run folder moved with its data)")
        else:
            refused.append(f"data: {saved['data']!r} -> {new['data']!r}")
    old_unet, new_unet = previous.meta.unet.to_dict(), meta.unet.to_dict()
    refused += [f"model.{key}: {old_unet[key]!r} -> {new_unet[key]!r}" for key in new_unet
                if old_unet.get(key) != new_unet[key]]
    for key in ("input_channels", "target_channels"):
        old, value = getattr(previous.meta, key), getattr(meta, key)
        if old != value:
            refused.append(f"the data's {key.replace('_', ' ')}: {list(old)} -> {list(value)}")
    if not _same_stats(previous.meta.stats, meta.stats):
        refused.append("the data's normalisation statistics (the training data or its transforms changed)")
    old_ref, new_ref = previous.meta.regression_checkpoint, meta.regression_checkpoint
    if old_ref and new_ref and old_ref.sha256 != new_ref.sha256:
        refused.append(f"diffusion.regression_checkpoint: {old_ref.path} (SHA-256 {old_ref.sha256[:12]}…) -> "
                       f"{new_ref.path} (SHA-256 {new_ref.sha256[:12]}…)")
    old_student, new_student = previous.meta.student, meta.student
    if old_student and new_student and old_student.teacher_sha256 != new_student.teacher_sha256:
        refused.append(f"distill.teacher_checkpoint: {old_student.teacher} (SHA-256 "
                       f"{old_student.teacher_sha256[:12]}…) -> {new_student.teacher} (SHA-256 "
                       f"{new_student.teacher_sha256[:12]}…)")
    if refused:
        raise ConfigError(
            f"--resume: {previous.path.parent.parent} was trained with other settings, which cannot change within "
            f"a run: {'; '.join(refused)}. Set them back, or start a new run (another run_dir)"
        )
    return applied


def _same_stats(old: Normalization, new: Normalization) -> bool:
    """Same channels and transforms, and means and stds equal to float rounding."""
    return all(
        a.names == b.names and a.transforms == b.transforms and a.mean.shape == b.mean.shape
        and np.allclose(a.mean, b.mean, rtol=1e-6, atol=0) and np.allclose(a.std, b.std, rtol=1e-6, atol=0)
        for a, b in ((old.input, new.input), (old.target, new.target))
    )


def exclusive(run_dir: Path, info: DistInfo):
    """Hold `run_dir/train.lock` while training (rank 0, `corrdiff.locks`); a TrainingError, naming the holder, if
    another has it."""
    lock_file = Path(run_dir) / LOCK_FILE
    return locks.exclusive(lock_file, lambda holder: TrainingError(
        f"{run_dir} is being trained by {holder} (lock file {lock_file}); two trainings of one run folder would mix "
        "their checkpoints and logs: wait for it to end or stop it, or set another run_dir"), info)


def run_training(kind: str, config: RunConfig, train_set: PairedDataset, val_set: PairedDataset | None,
                 info: DistInfo, resume: bool = False, progress: bool = True) -> tuple[Path, str]:
    """Train one step on the given datasets; returns the step's run folder and "finished"/"interrupted"."""
    if kind not in STEPS:
        raise ConfigError(f"unknown training step {kind!r}: expected one of {', '.join(map(repr, STEPS))}")
    section = getattr(config, kind)
    teacher = None
    if kind == "distill":  # the student is the teacher's network, on its data and (by default) its patches
        teacher = distill.load_teacher(config)
        distill.check_data(teacher, train_set)
        unet = teacher.meta.unet
        if section.patch_shape is None and teacher.meta.patch_shape is not None:
            section = section.model_copy(update={"patch_shape": teacher.meta.patch_shape})
    else:
        height, width = train_set.lat.shape
        unet = config.model.unet_config((height, width), len(train_set.input_channels),
                                        len(train_set.target_channels))
    check_settings(kind, section, unet, train_set.target_channels)
    micro_batching(section, info.world_size, kind)  # before the run folder is made
    run_dir = Path(config.run_dir) / kind
    spec = getattr(train_set, "spec", None)
    if spec is not None:  # what lets a copied or moved run folder resume (`check_resumable`)
        config = config.model_copy(update={"data_fingerprint": data_fingerprint(spec, run_dir)})
    if teacher is not None:
        if not _same_stats(teacher.meta.stats, train_set.stats):
            raise ConfigError(f"the teacher {teacher.path} was trained with other normalisation statistics than the "
                              "data spec's (the training data or its transforms changed since)")
        meta = distill.student_meta(teacher, section, dump_config(config), section.patch_shape)
    else:
        meta = CheckpointMeta(
            kind=kind, unet=unet, input_channels=train_set.input_channels, target_channels=train_set.target_channels,
            target_attrs=dict(getattr(train_set, "target_attrs", {}) or {}), stats=train_set.stats,
            input_units=tuple(getattr(train_set, "input_units", ()) or ()), input_ranges=input_ranges(train_set.stats),
            config=dump_config(config),
            sigma_data=config.diffusion.sigma_data if kind == "diffusion" else None,
            patch_shape=section.patch_shape if kind == "diffusion" else None,
        )
    with exclusive(run_dir, info):
        root = run_dir / "checkpoints"
        existing = ckpt.read_pointer(root, "latest")
        if existing and not resume:
            raise ConfigError(
                f"{run_dir} already holds checkpoints (latest: {existing}); pass --resume to continue that run, "
                "or set another run_dir, so that nothing is overwritten"
            )
        torch.manual_seed(section.seed)  # initial weights, identical on every rank and every rerun
        try:
            if kind == "regression":
                task = RegressionTask(unet, section)
            elif kind == "distill":
                task = DistillTask(unet, section, distill.teacher_regression(config, teacher),
                                   load_network(teacher))
                task.set_residual_unit(meta.residual_unit())  # the teacher's data units
                task.to_device(info.device, section.fast_path(info.device).channels_last)
            else:
                regression, reference = _frozen_regression(
                    section.regression_checkpoint or Path(config.run_dir) / "regression", meta)
                task = DiffusionTask(unet, section, regression)
                meta = meta.replace(regression_checkpoint=reference)
        except ValueError as err:  # the network cannot be built from these model settings
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"model: these settings give no {kind} network: {err}") from None
        previous = None
        if resume and existing:
            previous = ckpt.load_model(ckpt.resolve(root, "latest"), kind=meta.kind)
            for change in check_resumable(kind, config, meta, previous):
                log.warning(f"--resume: {change} (applied from step {previous.meta.step})")
        if info.is_main:
            removed = ckpt.clean_temporary(root)
            if removed:
                log.info(f"removed what an interrupted checkpoint write left in {root}: {', '.join(removed)}")
            atomic_write_text(run_dir / "config.yaml", dump_config(config))
        if kind == "diffusion" and _use_regression_cache(section, train_set, run_dir, info):
            train_set = _with_regression_cache(task, section, train_set, run_dir, meta, info, progress)
        if kind == "diffusion":
            meta = _with_residual_std(task, section, train_set, meta, previous, info)
        trainer = Trainer(task, section, train_set, val_set, info, run_dir, meta, progress)
        if previous is not None:
            trainer.resume(previous)
        elif resume and info.is_main:
            log.info(f"--resume: no checkpoint in {root} yet; starting from step 0")
        return run_dir, trainer.fit()


RESIDUAL_STD_FLOOR = 1e-3  # normalised target units: a residual this small is no residual; never divide by ~0


def _with_residual_std(task: DiffusionTask, section, train_set: PairedDataset, meta: CheckpointMeta,
                       previous: ModelCheckpoint | None, info: DistInfo) -> CheckpointMeta:
    """`meta` with the residual's per-channel standard deviation that the task then trains with: the run's own when
    resuming (even if `diffusion.residual_normalization` changed since: a run keeps one definition of its data),
    else measured after the regression step when the section asks for it."""
    if previous is not None:
        std = previous.meta.residual_std
        if bool(std) != section.residual_normalization and info.is_main:
            log.warning(f"--resume: the run started {'with' if std else 'without'} residual normalisation and "
                        "goes on so; diffusion.residual_normalization applies to new runs")
    elif section.residual_normalization:
        measured = residual_std(task.to_device(info.device), train_set, section.residual_std_samples, info.device)
        std = tuple(max(v, RESIDUAL_STD_FLOOR) for v in measured)
        if info.is_main:
            listed = ", ".join(f"{name} {value:.3g}" for name, value in zip(meta.target_channels, measured))
            log.info(f"residual standard deviation after the regression step (normalised units, "
                     f"{min(section.residual_std_samples, len(train_set))} training samples): {listed}")
    else:
        std = ()
    meta = meta.replace(residual_std=std)
    task.set_residual_unit(meta.residual_unit())
    return meta


def _use_regression_cache(section, train_set: PairedDataset, run_dir: Path, info: DistInfo) -> bool:
    """Whether diffusion training reads μ from the regression-mean cache (`diffusion.regression_cache`), decided
    by the main process; a TrainingError when it is true and the disk lacks the room."""
    use = False
    if info.is_main and section.regression_cache is not False:
        fits, why = regression_cache.fits_on_disk(run_dir, train_set)
        if section.regression_cache is True and not fits:
            raise TrainingError(f"diffusion.regression_cache=true: {why}; free some space or set "
                                "diffusion.regression_cache=false (μ is then recomputed every step)")
        pays = section.patch_shape is not None and section.steps * section.batch_size >= len(train_set)
        use = section.regression_cache is True or (pays and fits)
        if pays and not fits:
            log.warning(f"diffusion.regression_cache=auto: not caching the regression mean, {why}")
    return broadcast_flag(use, info)


def _with_regression_cache(task: DiffusionTask, section, train_set: PairedDataset, run_dir: Path,
                           meta: CheckpointMeta, info: DistInfo, progress: bool) -> PairedDataset:
    """`train_set` with its cached μ (built first if missing or stale), computed by the task's frozen regression
    on this process's device and in the layout training gives it, so that cached and recomputed μ are equal."""
    regression = task.regression.to(info.device)
    if section.fast_path(info.device).channels_last:
        to_channels_last(regression)
    micro, _ = micro_batching(section, info.world_size, "diffusion")
    return regression_cache.ensure(run_dir, train_set, regression, meta.regression_checkpoint.sha256, info.device,
                                   is_main=info.is_main, batch=micro, progress=progress and info.is_main)


def train(kind: str, config: RunConfig, resume: bool = False, progress: bool = True) -> tuple[Path, str]:
    """Train a step from the run config's data spec, in this process or as one rank of torchrun."""
    info = init_distributed(config.device)
    try:
        train_set, val_set = open_datasets(config, progress and info.is_main)
        return run_training(kind, config, train_set, val_set, info, resume, progress)
    finally:
        shutdown(info)
