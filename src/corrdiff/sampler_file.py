"""The run folder's recommended sampler, `<run_dir>/sampler.yaml`: written by `corrdiff tune`, read by generation.

The file holds a whole `sampler:` section (every field of `corrdiff.diffusion.SamplerConfig`, its calibration
`residual_scale` included, in the order of `target_channels`), the SHA-256 of the diffusion checkpoint it was
tuned for, and how it was chosen, the split it was tuned on among it (`tuning.split`; files written before
it was recorded load without it). A recommendation for another checkpoint is never used.
"""

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from corrdiff.diffusion.sampler import SamplerConfig
from corrdiff.errors import ConfigError
from corrdiff.file_integrity import atomic_write_text

log = logging.getLogger(__name__)

FILE_NAME = "sampler.yaml"
FORMAT = "corrdiff-sampler-1"


@dataclass(frozen=True)
class Recommendation:
    """A tuned sampler and what it was tuned on."""

    sampler: SamplerConfig
    diffusion_checkpoint_sha256: str
    target_channels: tuple[str, ...]
    """The order of `sampler.residual_scale`."""
    tuning: dict = field(default_factory=dict)
    """How it was chosen: split, times, members, seed, tolerance, its CRPS and the best (see `corrdiff tune`)."""

    @property
    def split(self) -> str | None:
        """The split it was tuned on; None for a file that does not say (written before tune recorded it)."""
        split = self.tuning.get("split")
        return str(split) if split is not None else None

    def tuned_on(self, split: str) -> bool:
        """Whether the times it was tuned on are among those of `split` (the same split, or either is all)."""
        return self.split is not None and (self.split == split or "all" in (self.split, split))


def path_in(run_dir) -> Path:
    """Where a run folder keeps its recommended sampler."""
    return Path(run_dir) / FILE_NAME


def write(path, recommendation: Recommendation) -> Path:
    """Write `recommendation` as YAML at `path` (atomically: a reader sees the old file or the new one)."""
    path = Path(path)
    sampler = {k: _yaml_value(v) for k, v in dataclasses.asdict(recommendation.sampler).items()}
    body = {"format": FORMAT, "sampler": sampler,
            "diffusion_checkpoint_sha256": recommendation.diffusion_checkpoint_sha256,
            "target_channels": list(recommendation.target_channels),
            "tuning": {k: _yaml_value(v) for k, v in recommendation.tuning.items()}}
    text = ("# The sampler `corrdiff tune` recommends for this run's diffusion checkpoint (docs/sampling.md).\n"
            "# `corrdiff generate` uses it when the run config has no sampler section of its own.\n"
            + yaml.safe_dump(body, sort_keys=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


def read(path) -> Recommendation:
    """The recommendation at `path`; a ConfigError naming the file and key if it cannot be used."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no recommended sampler there (write one with `corrdiff tune`)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a recommended-sampler file (expected format: {FORMAT})")
    try:
        sampler = SamplerConfig(**(raw.get("sampler") or {}))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: sampler: {err}") from None
    return Recommendation(sampler, str(raw.get("diffusion_checkpoint_sha256", "")),
                          tuple(raw.get("target_channels") or ()), dict(raw.get("tuning") or {}))


def recommended(run_dir, diffusion_sha256: str | None = None) -> Recommendation | None:
    """The recommendation in `run_dir` (its sampler.yaml), or None when there is none.

    With `diffusion_sha256`, a recommendation tuned for another diffusion checkpoint is ignored (None, logged).
    """
    path = path_in(run_dir)
    if not path.exists():
        return None
    recommendation = read(path)
    if diffusion_sha256 is not None and recommendation.diffusion_checkpoint_sha256 != diffusion_sha256:
        log.warning(f"{path}: tuned for another diffusion checkpoint; not used (rerun `corrdiff tune`)")
        return None
    return recommendation


def recommended_sampler(run_dir, diffusion_sha256: str | None = None) -> SamplerConfig | None:
    """The sampler recommended in `run_dir` (its sampler.yaml), or None when there is none (see `recommended`)."""
    recommendation = recommended(run_dir, diffusion_sha256)
    return recommendation.sampler if recommendation is not None else None


def _yaml_value(value):
    """A YAML-friendly value: tuples as lists, infinities as YAML's .inf (safe_dump writes them so)."""
    if isinstance(value, tuple):
        return [_yaml_value(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
