"""One time of a generation: the two networks (`Models`), what every time of a generation shares (`Sampling`:
sampler, members, patches, member batching, the training-range check) and `downscale_time`, which samples one
time's ensemble. `corrdiff generate`'s loop over times (`corrdiff.inference.generate`) and the in-memory API
(`corrdiff.api`) both call it, and settle the config, attributes and fingerprint of what they make with the
functions here, so the two give the same values."""

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from corrdiff import __version__
from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta, ModelCheckpoint
from corrdiff.config import CoherenceSection, dump_config, RunConfig
from corrdiff.diffusion import DiffusionCondition, downscale_ensemble, PatchedDenoiser, SamplerConfig
from corrdiff.diffusion.sampler import first_draws
from corrdiff.errors import ConfigError, DataError
from corrdiff.inference import checks, coherence as time_series
from corrdiff.inference.fingerprint import Fingerprint, generation_fingerprint
from corrdiff.inference.input_members import InputMembers
from corrdiff.inference.member_batching import MemberBatching
from corrdiff.fast_path import FastPath, prepare_denoiser, to_channels_last
from corrdiff.networks import load_network
from corrdiff.seeding import members_seed

log = logging.getLogger(__name__)


@dataclass
class Models:
    """The two networks of a CorrDiff run, ready to sample, with what the checkpoints say about them."""

    regression: torch.nn.Module
    denoiser: torch.nn.Module  # EDMPrecond, or a corrdiff.fast_path.FastDenoiser around it
    meta: CheckpointMeta  # the diffusion checkpoint's
    condition: DiffusionCondition
    provenance: dict
    fast: FastPath = FastPath()
    grids: list = field(default_factory=list)
    """(checkpoint folder, lat (H, W) or None, lon (H, W) or None) of each checkpoint: the grid it was trained on."""
    mismatches: list[str] = field(default_factory=list)
    """Why the two checkpoints do not belong together, when --allow-mismatch let them through."""
    sources: dict[str, list[Path]] = field(default_factory=dict)
    """What the networks were read from, by role (checkpoint folders, or a model package): inputs that a
    generation never writes over (`corrdiff.output_paths`)."""
    prepared: bool = False
    """Whether `prepare` has put the networks on the fast path (`fast`) already."""


def load_models(regression_path, diffusion_path, device, allow_mismatch: bool = False) -> Models:
    """Frozen EMA networks from a regression and a diffusion checkpoint (folders or run folders).

    The diffusion checkpoint must have been trained against this regression checkpoint (its SHA-256) with
    the same normalisation; `allow_mismatch` lets a mismatch through, logged and kept in `Models.mismatches`.
    """
    regression = ckpt.load_model(regression_path, kind="regression")
    diffusion = ckpt.load_model(diffusion_path, kind="diffusion")
    return models_from_checkpoints(regression, diffusion, device, allow_mismatch)


def models_from_checkpoints(regression: ModelCheckpoint, diffusion: ModelCheckpoint, device,
                            allow_mismatch: bool = False) -> Models:
    """`Models` from two loaded checkpoints (`load_models`; a model package's are read by `corrdiff.inference.model_package`)."""
    regression_sha256, diffusion_sha256 = regression.sha256, diffusion.sha256
    problems = checks.pairing_problems(regression, diffusion, regression_sha256)
    if not allow_mismatch:
        checks.refuse_mismatch(problems)
    for problem in problems:
        log.warning(f"--allow-mismatch: {problem}")
    provenance = {
        "regression_checkpoint": str(regression.path),
        "regression_checkpoint_sha256": regression_sha256,
        "diffusion_checkpoint": str(diffusion.path),
        "diffusion_checkpoint_sha256": diffusion_sha256,
    }
    grids = [(c.path, None if c.lat is None else c.lat.numpy(), None if c.lon is None else c.lon.numpy())
             for c in (regression, diffusion)]
    sources = {f"the {c.meta.kind} checkpoint": [Path(c.path)] for c in (regression, diffusion)}
    return Models(load_network(regression, device), load_network(diffusion, device), diffusion.meta,
                  DiffusionCondition.from_unet(diffusion.meta.unet), provenance, grids=grids, mismatches=problems,
                  sources=sources)


def select_times(dataset_times: np.ndarray, requested: list[str] | None) -> list[int]:
    """Dataset indices of the requested ISO times (all when None); an error lists the missing ones."""
    times = np.asarray(dataset_times, dtype="datetime64[ns]")
    if not requested:
        return list(range(len(times)))
    wanted = np.array([_time(t) for t in requested])
    missing = [_iso(t) for t in wanted if t not in times]
    if missing:
        held = f"{len(times)} times, {_iso(times[0])} … {_iso(times[-1])}" if len(times) else "no time"
        raise ConfigError(f"--times: times not in the dataset: {', '.join(missing[:5])}"
                          f"{' …' if len(missing) > 5 else ''} (it has {held}; times are matched exactly)")
    return [int(np.flatnonzero(times == t)[0]) for t in wanted]


def _time(text: str) -> np.datetime64:
    try:
        return np.datetime64(str(text).strip(), "ns")
    except ValueError:
        raise ConfigError(f"--times {text!r} is not a time; give ISO times such as 2021-01-01T06") from None


def _iso(time: np.datetime64) -> str:
    return str(np.datetime64(time, "s"))


@torch.no_grad()
def downscale(models: Models, condition: torch.Tensor, members: int, seed: int, sampler: SamplerConfig,
              member_batch: int | None = None, patcher: PatchedDenoiser | None = None, first_member: int = 0,
              latents: torch.Tensor | None = None):
    """Regression mean (1, C, H, W) and ensemble (members, C, H, W), normalised, for one condition (1, C_in, H, W);
    the members are first_member … first_member + members − 1 of the time's ensemble, started from `latents`
    (members, C, H, W) when given (members as time series), else from their first draw."""
    return downscale_ensemble(models.regression, models.denoiser, models.condition, condition, members, seed, sampler,
                              member_batch, patcher, models.meta.residual_unit(), first_member, latents)


def check_fits(models: Models, dataset) -> None:
    """A DataError naming what differs when the data's channels, grid or normalisation are not the checkpoints'."""
    spec = getattr(dataset, "spec", None)
    where = spec.where if spec is not None else "the dataset"
    diffusion = models.provenance["diffusion_checkpoint"]
    checks.check_channels("input", dataset.input_channels, models.meta.input_channels, where, diffusion)
    checks.check_channels("target", dataset.target_channels, models.meta.target_channels, where, diffusion)
    for path, lat, lon in models.grids:
        checks.check_trained_grid(dataset.lat, dataset.lon, where, path, lat, lon)
    if not checks.same_stats(dataset.stats, models.meta.stats):
        raise DataError(f"{where}: normalises with other statistics than checkpoint {diffusion}; "
                        "open it with the checkpoint's (generation denormalises with them)")


@dataclass
class Sampling:
    """What every time of one generation shares: the networks on their fast path and their device, the sampler,
    members and patches, the members' coherence in time, and the check of inputs against their training ranges
    (which warns once per channel)."""

    models: Models
    sampler: SamplerConfig
    members: int
    seed: int
    patcher: PatchedDenoiser | None
    batching: MemberBatching
    device: torch.device
    ranges: checks.InputRanges
    coherence: CoherenceSection = field(default_factory=CoherenceSection)
    shape: tuple[int, ...] = ()
    """(C, H, W) of one member: the target channels on the fine grid."""

    @classmethod
    def build(cls, config: RunConfig, models: Models, grid_shape, device) -> "Sampling":
        """From a config whose patches `resolve_patches` has settled, on the fine grid (H, W)."""
        gen = config.generate
        checks.check_arithmetic(config.sampler.arithmetic, models.meta, models.provenance["diffusion_checkpoint"],
                                models.regression, models.denoiser)
        checks.check_solver(config.sampler, models.meta, models.provenance["diffusion_checkpoint"])
        time_series.check_sampler(gen.coherence, config.sampler, list(models.meta.target_channels))
        prepare(models, gen.fast_path(device))
        patcher = None
        if gen.patch_shape:
            patcher = PatchedDenoiser(tuple(grid_shape), tuple(gen.patch_shape), tuple(gen.patch_overlap),
                                      condition=models.condition)
        return cls(models, config.sampler, gen.members, gen.seed, patcher,
                   MemberBatching(gen.member_batch, gen.members, device), torch.device(device),
                   checks.InputRanges(models.meta, models.provenance["diffusion_checkpoint"]), gen.coherence,
                   (len(models.meta.target_channels), *grid_shape))


def prepare(models: Models, fast: FastPath) -> None:
    """Put the networks on the fast path, once: compiled code and CUDA graphs are kept across calls."""
    if models.prepared:
        return
    models.fast = fast
    models.denoiser = prepare_denoiser(models.denoiser, fast)
    if fast.channels_last:
        to_channels_last(models.regression)
    models.prepared = True


def downscale_time(sampling: Sampling, sample_input: torch.Tensor, time, first_member: int = 0,
                   latents: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble (members, C, H, W) and regression mean (C, H, W) of one time, physical units, float32 numpy.

    `sample_input`: the normalised input (C_in, H, W) of a dataset's sample, checked against the training ranges
    (a warning per channel far outside them); `time` (datetime64) seeds the members: member m of a time depends on
    (seed, time, m) only, so any selection of times gives the same fields (with `sampler.arithmetic: physicsnemo`
    on (seed, m) only, as in PhysicsNeMo: `corrdiff.seeding.members_seed`). The members are m = first_member …
    first_member + sampling.members − 1 (`corrdiff.inference.input_members`: K members per input member), started
    from `latents` (sampling.members, C, H, W) when given (members as time series: `series_latents`).
    """
    sampling.ranges.check(sample_input, time)
    condition = sample_input[None].to(sampling.device)
    seed = members_seed(sampling.seed, time, sampling.sampler.arithmetic)
    mean, ensemble = sampling.batching.run(
        lambda size: downscale(sampling.models, condition, sampling.members, seed, sampling.sampler, size,
                               sampling.patcher, first_member, latents))
    stats = sampling.models.meta.stats  # the checkpoint's own normalisation, never one the data carries
    return stats.denormalize_target(ensemble).cpu().numpy(), stats.denormalize_target(mean)[0].cpu().numpy()


def first_draws_of(sampling: Sampling, time, members: int) -> torch.Tensor:
    """The first draw of members 0 … members − 1 of `time`: what independent sampling starts them from,
    (members, C, H, W) on the sampling device, drawn without the networks."""
    seed = members_seed(sampling.seed, time, sampling.sampler.arithmetic)
    return first_draws(sampling.shape, range(members), seed, sampling.sampler.arithmetic, sampling.device)


def series_latents(sampling: Sampling, times, members: int) -> time_series.SeriesLatents | None:
    """The starting noise of the `members` members (every input member's) at each of `times` (the output's, in its
    order) when they are time series (`corrdiff.inference.coherence`); None when they are independent."""
    return time_series.series_latents(sampling.coherence, times, lambda time: first_draws_of(sampling, time, members),
                                      list(sampling.models.meta.target_channels))


def resolve_patches(config: RunConfig, models: Models, grid_shape) -> RunConfig:
    """`config` with generate.patch_shape settled (the checkpoint's training patches unless set), checked on (H, W)."""
    gen = config.generate
    patch_shape = checks.generation_patches("patch_shape" in gen.model_fields_set, gen.patch_shape, models.meta)
    if patch_shape != (tuple(gen.patch_shape) if gen.patch_shape else None):
        # The checkpoint's training patches: the copy goes into the fingerprint and the recorded config.
        gen = gen.model_copy(update={"patch_shape": patch_shape})
        config = config.model_copy(update={"generate": gen})
    checks.check_patches(gen.patch_shape, gen.patch_overlap, tuple(grid_shape), models.meta.unet.channel_mult)
    return config


def ensemble_attrs(config: RunConfig, models: Models, allow_mismatch: bool) -> dict:
    """The global attributes of an ensemble (its fingerprint's aside): settings, checkpoints and provenance."""
    gen = config.generate
    return {"title": "CorrDiff downscaled ensemble", "source": f"corrdiff {__version__}",
            "corrdiff_seed": gen.seed, "corrdiff_members": gen.members,
            "corrdiff_config": dump_config(config), **models.provenance,
            **{f"sampler_{k}": str(v) for k, v in dataclasses.asdict(config.sampler).items()},
            "corrdiff_allow_mismatch": int(allow_mismatch or bool(models.mismatches)),
            **({"corrdiff_mismatches": "; ".join(models.mismatches)} if models.mismatches else {}),
            **time_series.output_attrs(gen.coherence)}


def generation_fingerprint_of(config: RunConfig, models: Models, dataset, times: np.ndarray, hashes=None) -> Fingerprint:
    """The fingerprint of generating `times` (datetime64) of `dataset` with `config` and `models`; `hashes`: the
    input hashes an earlier file recorded (`writer.recorded_input_hashes`), so unchanged inputs are not read."""
    gen = config.generate
    files, spec_file = checks.input_files(dataset)
    spec = getattr(dataset, "spec", None)
    member = f"all: {list(dataset.labels)}" if isinstance(dataset, InputMembers) else \
        (spec.inputs.member if spec is not None else None)
    return generation_fingerprint(
        regression_sha256=models.provenance["regression_checkpoint_sha256"],
        diffusion_sha256=models.provenance["diffusion_checkpoint_sha256"],
        sampler=dataclasses.asdict(config.sampler), seed=gen.seed, members=gen.members,
        channels=models.meta.target_channels, bf16=models.fast.bf16, patch_shape=gen.patch_shape,
        patch_overlap=gen.patch_overlap, times=times, lat=dataset.lat, lon=dataset.lon, input_files=files,
        spec_file=spec_file, version=__version__,
        tf32=gen.allow_tf32 and next(models.regression.parameters()).device.type == "cuda", input_member=member,
        hashes=hashes, coherence=time_series.fingerprint_settings(gen.coherence))
