"""The run configuration: one YAML file for training both steps and generating, validated at load time.

Unknown keys and wrong types are errors naming the key; any value can be overridden with `section.key=value`.
"""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corrdiff.errors import ConfigError
from corrdiff.models.presets import presets, UNetConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    """Network architecture: a named preset, with any of its fields overridden."""

    preset: str = "tiny"
    model_channels: int | None = None
    channel_mult: list[int] | None = None
    channel_mult_emb: int | None = None
    num_blocks: int | None = None
    attn_resolutions: list[int] | None = None
    dropout: float | None = None
    noise_embedding: Literal["positional", "fourier"] | None = None
    grid_embedding: Literal["sinusoidal", "learned", "none"] | None = None
    grid_channels: int | None = None
    num_heads: int | None = None
    condition_on_mean: bool | None = None
    global_context: bool | None = None

    def unet_config(self, img_shape, in_channels: int, out_channels: int) -> UNetConfig:
        """The UNetConfig for a dataset's grid and channel counts."""
        if self.preset not in presets:
            raise ConfigError(f"model.preset: unknown preset {self.preset!r}; choose from {sorted(presets)}")
        changes = {k: v for k, v in self.model_dump(exclude={"preset"}).items() if v is not None}
        for key in ("channel_mult", "attn_resolutions"):
            if key in changes:
                changes[key] = tuple(changes[key])
        return presets[self.preset].replace(
            img_shape=tuple(img_shape), in_channels=in_channels, out_channels=out_channels, **changes
        )


class TrainSection(Section):
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
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = Field(False, description="torch.compile the network (eager, with a warning, if unavailable)")
    channels_last: Literal["auto"] | bool = Field("auto", description="NHWC memory format; auto: on (faster on CUDA and CPU)")
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
    """Training settings of the residual diffusion step, with EDM's noise distribution."""

    P_mean: float = -1.2
    P_std: float = Field(1.2, gt=0)
    sigma_data: float = Field(0.5, gt=0)
    regression_checkpoint: str | None = Field(None, description="default: the regression run's best checkpoint")


class SamplerSection(Section):
    """EDM sampler settings (Karras et al. 2022); S_churn = 0 is the deterministic sampler."""

    num_steps: int = Field(18, gt=0)
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(800.0, gt=0)
    rho: float = 7.0
    S_churn: float = Field(0.0, ge=0)
    S_min: float = 0.0
    S_max: float = float("inf")
    S_noise: float = 1.0


class GenerateSection(Section):
    """Ensemble generation settings."""

    members: int = Field(8, gt=0)
    seed: int = 0
    member_batch: int | None = Field(None, gt=0, description="members denoised at once; default all")
    split: str = "test"
    format: Literal["netcdf", "zarr"] = "netcdf"
    patch_shape: tuple[int, int] | None = None
    patch_overlap: tuple[int, int] = (8, 8)
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    channels_last: Literal["auto"] | bool = Field("auto", description="NHWC memory format; auto: on (faster on CUDA and CPU)")
    compile: bool = Field(False, description="torch.compile the denoiser (eager, with a warning, if unavailable)")
    cuda_graphs: Literal["auto"] | bool = Field("auto", description="replay the denoiser from a CUDA graph; auto: on CUDA")


class RunConfig(Section):
    """The whole run: data spec, networks, both training steps, sampler and generation."""

    data: str = Field(description="path to the dataset spec (YAML), relative to this file")
    run_dir: str = Field("runs/default", description="where checkpoints, logs and outputs go")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    model: ModelSection = ModelSection()
    regression: TrainSection = TrainSection()
    diffusion: DiffusionSection = DiffusionSection()
    sampler: SamplerSection = SamplerSection()
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
