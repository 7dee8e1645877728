"""The run configuration: one YAML file for training both steps and generating, validated at load time.

Unknown keys and wrong types are errors naming the key; any value can be overridden with `section.key=value`.
"""

import dataclasses
from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, create_model, Field, field_validator, model_serializer, model_validator, \
    ValidationError

from corrdiff.diffusion import EDMLoss, SamplerConfig
from corrdiff.diffusion.consistency import ConsistencyDistillation
from corrdiff.documents import read_yaml_mapping, yaml_problem
from corrdiff.errors import ConfigError, validation_problems
from corrdiff.models import presets, UNetConfig
from corrdiff.fast_path import configure_backends, FastPath


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# The problem shape comes from the data spec, not from the config.
_FROM_DATA = ("img_shape", "in_channels", "out_channels")


class _ModelBase(Section):
    preset: str = Field("tiny", description=f"named architecture: one of {sorted(presets)}")

    # Values no network can have, refused at load time (None: the preset's). What depends on the data's grid
    # and channels (levels that divide it, heads that divide the channels) is checked when training starts.
    @field_validator("model_channels", "channel_mult_emb", "num_blocks", "num_heads", check_fields=False)
    @classmethod
    def _at_least_one(cls, value):
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("channel_mult", check_fields=False)
    @classmethod
    def _levels(cls, value):
        if value is not None and (len(value) == 0 or min(value) < 1):
            raise ValueError(f"needs at least one level, each a channel multiplier of at least 1; got {list(value)}")
        return value

    @field_validator("attn_resolutions", check_fields=False)
    @classmethod
    def _resolutions(cls, value):
        if value is not None and any(r < 1 for r in value):
            raise ValueError(f"resolutions are grid sides (at least 1); got {list(value)}")
        return value

    @field_validator("dropout", check_fields=False)
    @classmethod
    def _probability(cls, value):
        if value is not None and not 0 <= value < 1:
            raise ValueError(f"must be in [0, 1), got {value}")
        return value

    @field_validator("grid_channels", check_fields=False)
    @classmethod
    def _not_negative(cls, value):
        if value is not None and value < 0:
            raise ValueError(f"must be at least 0, got {value}")
        return value

    def unet_config(self, img_shape, in_channels: int, out_channels: int) -> UNetConfig:
        """The UNetConfig for a dataset's grid and channel counts."""
        if self.preset not in presets:
            raise ConfigError(f"model.preset: unknown preset {self.preset!r}; choose from {sorted(presets)}")
        changes = {k: v for k, v in self.model_dump(exclude={"preset"}).items() if v is not None}
        return presets[self.preset].replace(
            img_shape=tuple(img_shape), in_channels=in_channels, out_channels=out_channels, **changes
        )


# Every architecture field of UNetConfig (its type and meaning are described there) may override the preset.
ModelSection = create_model(
    "ModelSection",
    __base__=_ModelBase,
    __doc__="Network architecture: a named preset, with any field of corrdiff.models.UNetConfig overridden.",
    **{f.name: (f.type | None, None) for f in dataclasses.fields(UNetConfig) if f.name not in _FROM_DATA},
)


class FastPathSection(Section):
    """Switches that make a step faster without changing the method (corrdiff.fast_path)."""

    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = Field(False, description="torch.compile the network (eager, with a warning, if unavailable)")
    channels_last: Literal["auto"] | bool = Field(
        "auto", description="NHWC memory format; auto: by device type (corrdiff.fast_path.CHANNELS_LAST_AUTO: on for both)")
    allow_tf32: bool = Field(False, description="CUDA: let float32 convolutions and matrix products use TF32 (10-bit "
                             "mantissa); off: fp32 is fp32 (PyTorch's own default runs fp32 convolutions in TF32)")
    fused_norm: Literal["auto"] | bool = Field(
        "auto", description="compute each GroupNorm+SiLU as one fused, compiled step (float32 statistics, bf16 in and "
        "out under autocast) instead of torch's GroupNorm; pays only with compile; auto: with compile, by device type "
        "(corrdiff.fast_path.FUSED_NORM_AUTO: off for both until measured on a GPU)")

    def fast_path(self, device) -> FastPath:
        """What these switches mean on `device`; also sets the process's CUDA math (TF32, cuDNN autotuning)."""
        configure_backends(device, allow_tf32=self.allow_tf32)
        return FastPath.resolve(device, self.precision, self.channels_last, self.compile,
                                getattr(self, "cuda_graphs", False), self.fused_norm)


# Named training recipes: values for the keys of a training section that the section itself does not set.
# `paper` is CorrDiff's published optimisation (Mardani et al.; the reference's Taiwan configs); each value,
# its source and what still differs are tabled in docs/method.md.
RECIPES: dict[str, dict] = {
    "paper": {
        "steps": 781_250,  # 200 M samples at batch 256
        "batch_size": 256,
        "lr": 2e-4,
        "betas": (0.9, 0.999),
        "weight_decay": 0.0,  # AdamW without decay is Adam
        "warmup_samples": 10_000_000,
        "schedule": "constant",
        "grad_clip": None,
        "ema_halflife_samples": 500_000.0,
        "ema_rampup": 0.05,
        "P_mean": 0.0,
        "P_std": 1.2,
        "sigma_data": 0.5,
        "residual_normalization": False,  # the residual as it is, in the target's normalised units
    },
}


class TrainSection(FastPathSection):
    """Optimisation settings of one training step (regression or diffusion)."""

    recipe: Literal[tuple(RECIPES)] | None = Field(
        None, description="named training recipe for every key not set in this section (paper: docs/method.md)"
    )
    steps: int = Field(1000, gt=0, description="optimizer steps")
    batch_size: int = Field(16, gt=0, description="global batch size, whatever the number of processes")
    batch_per_device: int | None = Field(None, gt=0, description="micro-batch per process; default: whole share")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(50, ge=0)
    warmup_samples: int | None = Field(
        None, gt=0, description="linear lr ramp-up over this many training samples; replaces warmup_steps when set"
    )
    schedule: Literal["constant", "cosine"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0)
    ema_halflife_samples: float = Field(2000.0, gt=0, description="EMA half-life, in training samples")
    ema_rampup: float | None = Field(0.05, description="half-life ≤ rampup × samples seen so far")
    seed: int = Field(0, ge=0, description="seed of every random draw of training (samples, noise)")
    num_workers: int = Field(0, ge=0)
    patch_shape: tuple[int, int] | None = Field(None, description="train on random patches of this (h, w)")
    log_every: int = Field(10, gt=0)
    validate_every: int = Field(100, gt=0)
    validation_samples: int = Field(32, gt=0)
    checkpoint_every: int = Field(100, gt=0)
    keep_last: int = Field(2, gt=0)
    channel_weights: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_from_recipe(cls, data):
        """The section's keys, completed from its recipe: a key given explicitly wins over the recipe's."""
        if not isinstance(data, dict) or not isinstance(data.get("recipe"), str) or data["recipe"] not in RECIPES:
            return data  # no recipe, or an unknown name, which the field's check reports with the choices
        filled = {k: v for k, v in RECIPES[data["recipe"]].items() if k in cls.model_fields}
        if "warmup_steps" in data:  # a warm-up given in steps replaces the recipe's, given in samples
            filled.pop("warmup_samples", None)
        return filled | data


class SampledSection(TrainSection):
    """A training step whose network samples ensembles (diffusion, distill): its sample check during training
    (`corrdiff.training.sample_check`)."""

    sample_every: int | None = Field(
        100, ge=0, description="every this many steps (and at the last), sample `sample_times` validation times "
        "with the EMA network and log fair CRPS, spread/skill, small-scale power ratio and log-spectral distance "
        "(metrics.csv, TensorBoard); the checkpoint of the lowest fair CRPS is `best-crps` (a student's `best` too). "
        "The sampler: DPM-Solver++(2M) with `sample_steps` steps for the diffusion step, the student's recommended "
        "one for distill. 0 or null: off")
    sample_times: int = Field(4, gt=0, description="validation times of the sample check, evenly spaced")
    sample_members: int = Field(4, ge=2, description="ensemble members per time of the sample check")


class DiffusionSection(SampledSection):
    """Training settings of the residual diffusion step, with EDM's noise distribution (the one place of its defaults)."""

    P_mean: float = Field(0.0, description="mean of ln σ of the training noise levels (EDM's images: -1.2)")
    P_std: float = Field(1.2, gt=0, description="standard deviation of ln σ")
    sigma_data: float = Field(0.5, gt=0, description="σ_data of EDM's preconditioning and loss weight")
    regression_checkpoint: str | None = Field(None, description="default: the regression run's best checkpoint")
    regression_cache: Literal["auto"] | bool = Field(
        "auto", description="true: keep the regression mean μ of every training sample on disk (run_dir/diffusion/"
        "regression_mean, float32, rebuilt when the regression checkpoint or the data change) instead of recomputing "
        "it every step; auto: true for patched training (patch_shape set) that reads each sample at least once "
        "(steps × batch_size ≥ training samples) when the disk has room")
    patches_per_sample: int = Field(
        1, gt=0, description="random patches drawn from each sample per step (needs patch_shape): one full-domain "
        "read and μ feed this many patches, batch_size × this many in all")
    residual_normalization: bool = Field(
        True, description="true: the denoiser learns the residual divided by its per-channel standard deviation "
        "(measured after the regression step on up to `residual_std_samples` training samples, kept in the "
        "checkpoint) times σ_data, so that its data have the spread σ_data that EDM's preconditioning and noise "
        "levels assume; false: the residual in the target's normalised units, as in the paper and PhysicsNeMo "
        "(docs/method.md, 'Residual normalisation')")
    residual_std_samples: int = Field(256, gt=0, description="training samples (evenly spaced) over which the "
                                      "residual's standard deviation is measured")

    sample_steps: int = Field(7, gt=0, description="steps of the sample check's sampler, DPM-Solver++(2M) on "
                              "log-linear noise levels (one network evaluation per step and member)")

    def edm_loss(self) -> EDMLoss:
        return EDMLoss(P_mean=self.P_mean, P_std=self.P_std, sigma_data=self.sigma_data)


class DistillSection(SampledSection):
    """Consistency distillation of the diffusion step into a few-step student (Song et al. 2023; docs/method.md,
    "Few-step student"): `corrdiff train distill` writes it to <run_dir>/distill as a diffusion checkpoint."""

    steps: int = Field(1000, gt=0, description="optimizer steps")
    lr: float = Field(2e-4, gt=0, description="the training default: at 2e-5 a demo student had barely moved from "
                      "the teacher after its diffusion training's cost (docs/sampling.md, 'Few-step student')")
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    teacher_checkpoint: str | None = Field(
        None, description="the diffusion checkpoint distilled (a checkpoint or run folder); default: the run's "
        "diffusion checkpoint (its best)")
    num_scales: int = Field(18, ge=2, description="N: noise levels of the Karras discretisation from sigma_min to "
                            "sigma_max; the teacher takes one ODE step between neighbours")
    sigma_min: float = Field(0.002, gt=0, description="ε: the student's boundary, f(x, ε) = x, and the lowest level")
    sigma_max: float = Field(800.0, gt=0, description="the highest level (the sampler's starting noise)")
    rho: float = Field(7.0, gt=0, description="ρ of the Karras discretisation")
    target_ema: float = Field(0.95, ge=0, lt=1, description="μ: decay per step of the target network θ⁻ ← μθ⁻ + "
                              "(1 − μ)θ (0: the student itself, without gradients)")
    teacher_solver: Literal["heun", "euler"] = Field("heun", description="the teacher's ODE step between neighbouring "
                                                       "levels")
    distance: Literal["l2", "pseudo_huber"] = Field(
        "l2", description="l2: mean squared difference; pseudo_huber: sqrt(‖Δ‖² + c²) − c per sample "
        "(Song & Dhariwal 2023)")
    huber_c: float | None = Field(None, gt=0, description="c of pseudo_huber; default 0.00054·sqrt(elements of a "
                                  "sample)")
    patches_per_sample: int = Field(1, gt=0, description="random patches drawn from each sample per step (needs "
                                    "patch_shape)")
    sample_times: int = Field(16, gt=0, description="validation times of the sample check, evenly spaced: more "
                              "than the diffusion step's 4, since a student's checkpoints differ by less and its "
                              "sampling costs 2 evaluations, and its fair CRPS picks `best`")
    sample_members: int = Field(8, ge=2, description="ensemble members per time of the sample check")
    recommended_steps: int = Field(2, gt=0, description="network evaluations of the sampler the student's "
                                   "checkpoint recommends (solver consistency, loglinear levels from sigma_max to "
                                   "sigma_min)")

    @model_validator(mode="after")
    def _levels(self):
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"need sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}")
        return self

    def distillation(self) -> ConsistencyDistillation:
        """The loss these settings describe."""
        return ConsistencyDistillation(self.num_scales, self.sigma_min, self.sigma_max, self.rho, self.teacher_solver,
                                       self.distance, self.huber_c)

    def recommended_sampler(self) -> dict:
        """The settings (of `SamplerConfig`) of the sampler a student trained with these settings recommends, kept
        in its checkpoint: the others are SamplerConfig's defaults."""
        return {"solver": "consistency", "schedule": "loglinear", "num_steps": self.recommended_steps,
                "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class CoherenceSection(Section):
    """Members that are time series (docs/sampling.md): how each member's starting noise relates across the
    consecutive times of one generation (`corrdiff.inference.coherence`)."""

    method: Literal["independent", "ar1"] = Field(
        "independent", description="independent: member m of time t depends on (seed, t, m) only; ar1: member m's "
        "starting noise is an AR(1) series along each run of times with a constant step, z_t = rho·z_(t-1) + "
        "sqrt(1 − rho²)·eps_t (eps_t: the independent draw), so that a deterministic sampler maps it to samples "
        "that are correlated in time; a gap in time starts a new series")
    rho: float | tuple[float, ...] = Field(0.0, description="ar1: lag-1 correlation of the starting noise between "
                                           "consecutive times of a series, 0 <= rho < 1 (0: the independent samples, "
                                           "bit for bit); one value, or one per output channel in the checkpoint's "
                                           "order (a member's lag-1 autocorrelation follows its channel's rho)")

    @field_validator("rho")
    @classmethod
    def _rho_in_range(cls, rho):
        values = rho if isinstance(rho, tuple) else (rho,)
        if not values or not all(0 <= float(v) < 1 for v in values):  # NaN fails both comparisons
            raise ValueError(f"rho {rho!r}: each value must be at least 0 and below 1")
        return rho

    def rho_per_channel(self, channels: list[str]) -> tuple[float, ...]:
        """One rho per output channel; a ConfigError naming the channels when a list has another length."""
        if not isinstance(self.rho, tuple):
            return (float(self.rho),) * len(channels)
        if len(self.rho) != len(channels):
            raise ConfigError(f"generate.coherence.rho has {len(self.rho)} values for {len(channels)} output "
                              f"channels ({', '.join(channels)}): give one value, or one per channel in that order")
        return tuple(float(v) for v in self.rho)

    @property
    def coherent(self) -> bool:
        """Whether the members are time series (anything but independent)."""
        return self.method != "independent"


class GenerateSection(FastPathSection):
    """Ensemble generation settings."""

    members: int = Field(8, gt=0)
    seed: int = Field(0, ge=0, description="member m of time t depends on (seed, t, m) only (as time series, "
                      "`coherence`, also on the times before t in its series)")
    member_batch: int | None = Field(None, gt=0, description="members denoised at once; default: all on a CPU, as many as fit on a GPU (halved on out-of-memory)")
    split: str = "test"
    format: Literal["netcdf", "zarr"] = "netcdf"
    patch_shape: tuple[int, int] | None = None
    patch_overlap: tuple[int, int] = (8, 8)
    cuda_graphs: Literal["auto"] | bool = Field("auto", description="replay the denoiser from a CUDA graph; auto: on CUDA")
    overlap_writes: bool = Field(True, description="write time t to the output file in a background thread while time "
                                 "t+1 is sampled (one write in flight at most); false: write each time in turn")
    coherence: CoherenceSection = Field(default_factory=CoherenceSection, description="members as time series (method, rho); "
                                        "default: independent")

    @model_serializer(mode="wrap")
    def _without_default_coherence(self, handler):
        """The section's values, `coherence` left out while it is the default: the config text that checkpoints and
        ensembles record (`dump_config`) stays what it was before the setting existed."""
        values = handler(self)
        if isinstance(values, dict) and self.coherence == CoherenceSection():
            values.pop("coherence", None)
        return values


class RunConfig(Section):
    """The whole run: data spec, networks, both training steps, sampler and generation."""

    data: str = Field(description="path to the dataset spec (YAML), relative to this file")
    run_dir: str = Field("runs/default", description="where checkpoints, logs and outputs go")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    model: ModelSection = ModelSection()
    regression: TrainSection = TrainSection()
    diffusion: DiffusionSection = DiffusionSection()
    distill: DistillSection = Field(DistillSection(), description="consistency distillation of the diffusion step "
                                    "(`corrdiff train distill`)")
    sampler: SamplerConfig = Field(SamplerConfig(), description="EDM sampler (corrdiff.diffusion.SamplerConfig)")
    generate: GenerateSection = GenerateSection()
    source: str | None = Field(None, description="(set on load) the file this config came from")
    data_fingerprint: str | None = Field(None, description="(set by training) the data's contents, by which a moved "
                                         "run folder resumes (corrdiff.training.data_identity)")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value == "auto":
            return value
        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError(f"{value!r} is not a device: expected auto, cpu, cuda or cuda:N") from None
        return value


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply `a.b.c=value` strings (values parsed as YAML) to a nested dict, in place; returns it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: expected KEY=VALUE, got {item!r}")
        dotted, value = item.split("=", 1)
        *parents, leaf = dotted.strip().split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {dotted!r}: {key!r} is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: {item!r}: the value is not valid YAML ({yaml_problem(err)}); write it "
                              "as YAML, quoted for the shell, e.g. --set 'regression.patch_shape=[64, 64]'") from None
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a run config; relative paths are resolved against the file's folder."""
    path = Path(path)
    raw = read_yaml_mapping(path, ConfigError, "run config", "sections", "configs/example.yaml")
    if "inputs" in raw and "data" not in raw:
        raise ConfigError(f"{path} is a dataset spec (it has `inputs`), not a run config; give the run config, "
                          "whose `data:` names this spec (configs/example.yaml)")
    apply_overrides(raw, overrides or [])
    try:
        config = RunConfig(**raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {validation_problems(err)}") from None
    base = path.resolve().parent
    config.data = str((base / config.data).resolve())
    config.run_dir = str((base / config.run_dir).resolve())
    config.source = str(path.resolve())
    return config


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML text (saved with every run and in output provenance); `distill` left out while
    it is the default, so that the text of a run without distillation is what it was before the section existed."""
    values = config.model_dump(mode="json")
    if config.distill == DistillSection():
        values.pop("distill")
    return yaml.safe_dump(values, sort_keys=False)
