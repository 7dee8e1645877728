"""The third training step, `corrdiff train distill`: consistency distillation of the diffusion step into a few-step
student (Song et al. 2023; the loss is `corrdiff.diffusion.consistency`, the method in docs/method.md).

The student f_θ (`ConsistencyPrecond`) starts from the teacher's EMA weights; the target network θ⁻ starts from it
too and follows it after every step, θ⁻ ← μθ⁻ + (1 − μ)θ; the teacher D (the run's diffusion checkpoint, or
`distill.teacher_checkpoint`) and the regression network it was trained against stay frozen. Batches are the
diffusion task's (`DiffusionTask.residual_batch`: the residual in the teacher's units, whole or on its patches,
with the teacher's condition), so the `Trainer` runs this task as it runs the other two: progress, checkpoints and
--resume (the target network is kept in the training state), torchrun, bf16, the refusal of non-finite values and
the run folder's lock. The result, `<run_dir>/distill/checkpoints`, is a diffusion checkpoint whose
`CheckpointMeta.student` names the teacher and the sampler it recommends.
"""

import copy
from pathlib import Path

import torch
from torch import nn

from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta, ModelCheckpoint, StudentRef
from corrdiff.config import DistillSection, RunConfig
from corrdiff.diffusion import ConsistencyPrecond, DiffusionCondition, diffusion_network, SamplerConfig
from corrdiff.errors import CheckpointError, ConfigError
from corrdiff.fast_path import to_channels_last
from corrdiff.models import UNetConfig
from corrdiff.networks import load_network, load_weights
from corrdiff.seeding import Draws
from corrdiff.training.tasks import DiffusionTask

TARGET = "target."  # prefix of the target network's tensors in the training state


class DistillTask(DiffusionTask):
    """Consistency distillation: the student's loss against the teacher's ODE step and the target network."""

    kind = "distill"

    def __init__(self, unet: UNetConfig, section: DistillSection, regression: nn.Module, teacher: nn.Module):
        self.unet = unet
        self.section = section
        self.regression = regression.eval().requires_grad_(False)
        self.condition = DiffusionCondition.from_unet(unet)
        self.teacher = teacher.eval().requires_grad_(False)
        self.net: nn.Module = ConsistencyPrecond(diffusion_network(unet), teacher.sigma_data, section.sigma_min,
                                                 teacher.scale_condition)
        self.net.load_state_dict(teacher.state_dict())  # the student starts as the teacher
        self.target = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.distillation = section.distillation()
        self.decay = section.target_ema
        self.residual_unit: tuple[float, ...] = ()

    selects_by_samples = True
    """The validation loss measures the student's consistency with the target network, which moves with it (a
    constant function would score 0), so it cannot rank checkpoints: `best` is the sample check's lowest fair CRPS
    when the check runs (`distill.sample_every`), else the lowest validation loss."""

    def check_sampler(self) -> SamplerConfig:
        """The sample check samples the student as its checkpoint recommends (consistency, `recommended_steps`)."""
        return SamplerConfig(**self.section.recommended_sampler())

    def to_device(self, device, channels_last: bool = False) -> "DistillTask":
        """This task's networks on `device` (NHWC with `channels_last`, as the Trainer lays out the student)."""
        for net in (self.regression, self.teacher, self.net, self.target):
            net.to(device)
            if channels_last:
                to_channels_last(net)
        return self

    def loss(self, module, condition, target, channel_weights=None, draws: Draws | None = None):
        residual, denoiser_condition, positions = self.residual_batch(condition, target, draws)
        return self.distillation(module, self.target, self.teacher, residual, denoiser_condition, positions,
                                 channel_weights, draws.device if draws else None)

    @torch.no_grad()
    def after_step(self, net: nn.Module) -> None:
        """θ⁻ ← μθ⁻ + (1 − μ)θ, after each optimizer step."""
        for target_p, p in zip(self.target.parameters(), net.parameters()):
            target_p.lerp_(p.detach().to(target_p.dtype), 1.0 - self.decay)
        for target_b, b in zip(self.target.buffers(), net.buffers()):
            target_b.copy_(b)

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The target network's weights, kept in the training state for --resume."""
        return {TARGET + k: v for k, v in self.target.state_dict().items()}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], where: Path) -> None:
        """Put back the target network that `extra_state` gave (a CheckpointError naming `where` if it does not fit)."""
        load_weights(self.target, {k[len(TARGET):]: v for k, v in tensors.items() if k.startswith(TARGET)}, where)


def load_teacher(config: RunConfig) -> ModelCheckpoint:
    """The diffusion checkpoint to distil: `distill.teacher_checkpoint`, else the run's (its best); never a student."""
    path = config.distill.teacher_checkpoint or Path(config.run_dir) / "diffusion"
    try:
        teacher = ckpt.load_model(path, kind="diffusion")
    except CheckpointError as err:
        if config.distill.teacher_checkpoint:
            raise CheckpointError(f"distill.teacher_checkpoint: {err}") from None
        raise CheckpointError(f"distill: the teacher, the run's diffusion checkpoint: {err}; train it first "
                              "(corrdiff train diffusion), or set distill.teacher_checkpoint") from None
    if teacher.meta.student is not None:
        raise ConfigError(f"distill.teacher_checkpoint: {teacher.path} is a consistency student itself; distil a "
                          "diffusion checkpoint (a denoiser)")
    return teacher


def check_data(teacher: ModelCheckpoint, train_set) -> None:
    """A ConfigError when the training data's channels or grid are not those the teacher was trained on."""
    meta = teacher.meta
    if tuple(train_set.input_channels) != meta.input_channels or tuple(train_set.target_channels) != \
            meta.target_channels:
        raise ConfigError(f"the teacher {teacher.path} was trained on channels {list(meta.input_channels)} -> "
                          f"{list(meta.target_channels)}, but the data spec gives {list(train_set.input_channels)} -> "
                          f"{list(train_set.target_channels)}")
    if tuple(train_set.lat.shape) != tuple(meta.unet.img_shape):
        raise ConfigError(f"the teacher {teacher.path} was trained on a {tuple(meta.unet.img_shape)} grid, the data "
                          f"spec gives {tuple(train_set.lat.shape)}")


def teacher_regression(config: RunConfig, teacher: ModelCheckpoint) -> nn.Module:
    """The regression network the teacher was trained against (its recorded folder, else the run's), checked by
    its SHA-256; a ConfigError when neither is it."""
    recorded = teacher.meta.regression_checkpoint
    candidates = [Path(config.diffusion.regression_checkpoint or Path(config.run_dir) / "regression")]
    if recorded is not None:
        candidates.insert(0, Path(recorded.path))
    for path in candidates:
        try:
            regression = ckpt.load_model(path, kind="regression")
        except CheckpointError:
            continue
        if recorded is None or regression.sha256 == recorded.sha256:
            return load_network(regression)
    wanted = f"{recorded.path} (SHA-256 {recorded.sha256[:12]}…)" if recorded else "a regression checkpoint"
    raise ConfigError(f"the teacher {teacher.path} was trained against {wanted}, which is neither there nor at "
                      f"{candidates[-1]}; restore it, or set diffusion.regression_checkpoint to it")


def student_meta(teacher: ModelCheckpoint, section: DistillSection, config_text: str,
                 patch_shape) -> CheckpointMeta:
    """The checkpoint description of a student of `teacher`: the teacher's (network, channels, normalisation,
    residual units, regression), its own run config, training patches and `StudentRef`."""
    student = StudentRef(str(teacher.path), teacher.sha256, section.sigma_min, section.recommended_sampler())
    return teacher.meta.replace(config=config_text, step=0, val_loss=None, val_crps_fair=None, model_sha256=None,
                                patch_shape=tuple(patch_shape) if patch_shape else None, student=student)

