"""The run configuration: one YAML file for training both steps and generating, validated at load time.

Unknown keys and wrong types are errors naming the key; any value can be overridden with `section.key=value`.
"""

import dataclasses
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, create_model, Field, ValidationError

from corrdiff.diffusion import EDMLoss, SamplerConfig
from corrdiff.errors import ConfigError
from corrdiff.models import presets, UNetConfig
from corrdiff.perf import FastPath


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# The problem shape comes from the data spec, not from the config.
_FROM_DATA = ("img_shape", "in_channels", "out_channels")


class _ModelBase(Section):
    preset: str = Field("tiny", description=f"named architecture: one of {sorted(presets)}")

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
    """Switches that make a step faster without changing the method (corrdiff.perf)."""

    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = Field(False, description="torch.compile the network (eager, with a warning, if unavailable)")
    channels_last: Literal["auto"] | bool = Field("auto", description="NHWC memory format; auto: on (faster on CUDA and CPU)")

    def fast_path(self, device) -> FastPath:
        """What these switches mean on `device`."""
        return FastPath.resolve(device, self.precision, self.channels_last, self.compile,
                                getattr(self, "cuda_graphs", False))


class TrainSection(FastPathSection):
    """Optimisation settings of one training step (regression or diffusion)."""

    steps: int = Field(1000, gt=0, description="optimizer steps")
    batch_size: int = Field(16, gt=0, description="global batch size, whatever the number of processes")
    batch_per_device: int | None = Field(None, gt=0, description="micro-batch per process; default: whole share")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(50, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0)
    ema_halflife_samples: float = Field(2000.0, gt=0, description="EMA half-life, in training samples")
    ema_rampup: float | None = Field(0.05, description="half-life ≤ rampup × samples seen so far")
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    patch_shape: tuple[int, int] | None = Field(None, description="train on random patches of this (h, w)")
    log_every: int = Field(10, gt=0)
    validate_every: int = Field(100, gt=0)
    validation_samples: int = Field(32, gt=0)
    checkpoint_every: int = Field(100, gt=0)
    keep_last: int = Field(2, gt=0)
    channel_weights: list[float] | None = None


class DiffusionSection(TrainSection):
    """Training settings of the residual diffusion step, with EDM's noise distribution (the one place of its defaults)."""

    P_mean: float = Field(-1.2, description="mean of ln σ of the training noise levels")
    P_std: float = Field(1.2, gt=0, description="standard deviation of ln σ")
    sigma_data: float = Field(0.5, gt=0, description="σ_data of EDM's preconditioning and loss weight")
    regression_checkpoint: str | None = Field(None, description="default: the regression run's best checkpoint")

    def edm_loss(self) -> EDMLoss:
        return EDMLoss(P_mean=self.P_mean, P_std=self.P_std, sigma_data=self.sigma_data)


class GenerateSection(FastPathSection):
    """Ensemble generation settings."""

    members: int = Field(8, gt=0)
    seed: int = 0
    member_batch: int | None = Field(None, gt=0, description="members denoised at once; default all")
    split: str = "test"
    format: Literal["netcdf", "zarr"] = "netcdf"
    patch_shape: tuple[int, int] | None = None
    patch_overlap: tuple[int, int] = (8, 8)
    cuda_graphs: Literal["auto"] | bool = Field("auto", description="replay the denoiser from a CUDA graph; auto: on CUDA")


class RunConfig(Section):
    """The whole run: data spec, networks, both training steps, sampler and generation."""

    data: str = Field(description="path to the dataset spec (YAML), relative to this file")
    run_dir: str = Field("runs/default", description="where checkpoints, logs and outputs go")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    model: ModelSection = ModelSection()
    regression: TrainSection = TrainSection()
    diffusion: DiffusionSection = DiffusionSection()
    sampler: SamplerConfig = Field(SamplerConfig(), description="EDM sampler (corrdiff.diffusion.SamplerConfig)")
    generate: GenerateSection = GenerateSection()
    source: str | None = Field(None, description="(set on load) the file this config came from")


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
        node[leaf] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a run config; relative paths are resolved against the file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    apply_overrides(raw, overrides or [])
    try:
        config = RunConfig(**raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{path}: {problems}") from None
    base = path.resolve().parent
    config.data = str((base / config.data).resolve())
    config.run_dir = str((base / config.run_dir).resolve())
    config.source = str(path.resolve())
    return config


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML text (saved with every run and in output provenance)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
