"""Generation: load both checkpoints, check that they belong together and fit the data, downscale each
requested time into an ensemble, and write it so that a rerun resumes it (`corrdiff.inference.writer`)."""

import dataclasses
import glob
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from corrdiff import __version__
from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta, ModelCheckpoint
from corrdiff.config import dump_config, RunConfig
from corrdiff.data import DownscalingDataset, load_spec
from corrdiff.data.open_inputs import existing_inputs
from corrdiff.diffusion import DiffusionCondition, downscale_ensemble, PatchedDenoiser, SamplerConfig
from corrdiff.distributed import barrier, DistInfo, init_distributed, shutdown
from corrdiff import ensemble_file, locks, sampler_file
from corrdiff.ensemble_file import FLAG
from corrdiff.errors import ConfigError, DataError, OutputError
from corrdiff.inference import checks
from corrdiff.inference.context import output_context
from corrdiff.inference.fingerprint import Fingerprint, generation_fingerprint
from corrdiff.inference.input_members import downscale_members, InputMembers, member_labels, with_member
from corrdiff.inference.member_batching import MemberBatching
from corrdiff.inference.writer import check_replaceable, EnsembleWriter, io_error, is_io_error, OverlappedWriter, \
    overwrite_path, recorded_input_hashes, remove, replace, resumable
from corrdiff.networks import load_network
from corrdiff.output_paths import check_folder, check_not_an_input, make_folder, spec_inputs
from corrdiff.fast_path import FastPath, prepare_denoiser, to_channels_last
from corrdiff.progress import bar as progress_bar
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
              member_batch: int | None = None, patcher: PatchedDenoiser | None = None, first_member: int = 0):
    """Regression mean (1, C, H, W) and ensemble (members, C, H, W), normalised, for one condition (1, C_in, H, W);
    the members are first_member … first_member + members − 1 of the time's ensemble."""
    return downscale_ensemble(models.regression, models.denoiser, models.condition, condition, members, seed, sampler,
                              member_batch, patcher, models.meta.residual_unit(), first_member)


def open_inference_dataset(config: RunConfig, meta: CheckpointMeta, split: str, inputs: list[str] | None = None,
                           checkpoint: str = "the diffusion checkpoint", input_member=None):
    """The dataset to downscale: the run's data spec, without targets, normalised with the checkpoint's stats.

    With `inputs` (files or globs, e.g. a new forecast), those replace the spec's input stores and every
    time they hold is downscaled; the spec still gives the variables, static fields and the fine grid.
    The spec's channels are checked against the checkpoint's (`checkpoint` names it) before any file is opened.
    `input_member` (a member's number, "mean" or "all") replaces the spec's `member`; with "all", the result is
    an `InputMembers`: one dataset per input member.
    """
    spec = load_spec(config.data)
    if inputs:
        spec = spec.with_inputs([str(p) for p in input_paths(inputs)])
        split = "all"
    if input_member is not None:
        spec = with_member(spec, input_member)
    input_channels, target_channels = checks.spec_channels(spec)
    checks.check_channels("input", input_channels, meta.input_channels, spec.where, checkpoint)
    checks.check_channels("target", target_channels, meta.target_channels, spec.where, checkpoint)
    labels = member_labels(spec)
    open_one = lambda member_spec: DownscalingDataset(member_spec, split=split, stats=meta.stats, with_target=False,
                                                      input_units=checks.trained_input_units(meta))
    if labels is None:
        return open_one(spec)
    return InputMembers([open_one(with_member(spec, label)) for label in labels], labels)


def input_paths(inputs: list[str]) -> list[Path | str]:
    """--input files or globs as absolute paths, URLs (Zarr stores, corrdiff.data.remote) as they are; a ConfigError
    naming a file or glob that matches nothing."""
    return existing_inputs(inputs, lambda _, path, pattern: ConfigError(
        f"--input {path}: {'no file matches it' if pattern else 'no such file'}"))


def check_fits(models: Models, dataset) -> None:
    """A DataError naming what differs when the data's channels, grid or normalisation are not the checkpoints'."""
    spec = getattr(dataset, "spec", None)
    where = spec.where if spec is not None else "the dataset"
    diffusion = models.provenance["diffusion_checkpoint"]
    checks.check_channels("input", dataset.input_channels, models.meta.input_channels, where, diffusion)
    checks.check_channels("target", dataset.target_channels, models.meta.target_channels, where, diffusion)
    for path, lat, lon in models.grids:
        checks.check_grid(dataset.lat, dataset.lon, where, path, lat, lon)
    if not checks.same_stats(dataset.stats, models.meta.stats):
        raise DataError(f"{where}: normalises with other statistics than checkpoint {diffusion}; "
                        "open it with the checkpoint's (generation denormalises with them)")


@dataclass
class Sampling:
    """What every time of one generation shares: the networks on their fast path and their device, the sampler,
    members and patches, and the check of inputs against their training ranges (which warns once per channel)."""

    models: Models
    sampler: SamplerConfig
    members: int
    seed: int
    patcher: PatchedDenoiser | None
    batching: MemberBatching
    device: torch.device
    ranges: checks.InputRanges

    @classmethod
    def build(cls, config: RunConfig, models: Models, grid_shape, device) -> "Sampling":
        """From a config whose patches `resolve_patches` has settled, on the fine grid (H, W)."""
        gen = config.generate
        checks.check_arithmetic(config.sampler.arithmetic, models.meta, models.provenance["diffusion_checkpoint"],
                                models.regression, models.denoiser)
        prepare(models, gen.fast_path(device))
        patcher = None
        if gen.patch_shape:
            patcher = PatchedDenoiser(tuple(grid_shape), tuple(gen.patch_shape), tuple(gen.patch_overlap),
                                      condition=models.condition)
        return cls(models, config.sampler, gen.members, gen.seed, patcher,
                   MemberBatching(gen.member_batch, gen.members, device), torch.device(device),
                   checks.InputRanges(models.meta, models.provenance["diffusion_checkpoint"]))


def prepare(models: Models, fast: FastPath) -> None:
    """Put the networks on the fast path, once: compiled code and CUDA graphs are kept across calls."""
    if models.prepared:
        return
    models.fast = fast
    models.denoiser = prepare_denoiser(models.denoiser, fast)
    if fast.channels_last:
        to_channels_last(models.regression)
    models.prepared = True


def downscale_time(sampling: Sampling, sample_input: torch.Tensor, time, first_member: int = 0) -> tuple[np.ndarray,
                                                                                                        np.ndarray]:
    """Ensemble (members, C, H, W) and regression mean (C, H, W) of one time, physical units, float32 numpy.

    `sample_input`: the normalised input (C_in, H, W) of a dataset's sample, checked against the training ranges
    (a warning per channel far outside them); `time` (datetime64) seeds the members: member m of a time depends on
    (seed, time, m) only, so any selection of times gives the same fields (with `sampler.arithmetic: physicsnemo`
    on (seed, m) only, as in PhysicsNeMo: `corrdiff.seeding.members_seed`). The members are m = first_member …
    first_member + sampling.members − 1 (`corrdiff.inference.input_members`: K members per input member).
    """
    sampling.ranges.check(sample_input, time)
    condition = sample_input[None].to(sampling.device)
    seed = members_seed(sampling.seed, time, sampling.sampler.arithmetic)
    mean, ensemble = sampling.batching.run(
        lambda size: downscale(sampling.models, condition, sampling.members, seed, sampling.sampler, size,
                               sampling.patcher, first_member))
    stats = sampling.models.meta.stats  # the checkpoint's own normalisation, never one the data carries
    return stats.denormalize_target(ensemble).cpu().numpy(), stats.denormalize_target(mean)[0].cpu().numpy()


def with_tuned_sampler(config: RunConfig, models: Models, split: str | None = None) -> RunConfig:
    """`config`, with the run folder's recommended sampler (`corrdiff tune`) when the config has no sampler section.

    A warning when that sampler was tuned on times of `split`, the split being generated (None: new inputs)."""
    if "sampler" in config.model_fields_set:
        return config
    recommendation = sampler_file.recommended(config.run_dir, models.provenance["diffusion_checkpoint_sha256"])
    if recommendation is None:
        return config
    tuned, path = recommendation.sampler, sampler_file.path_in(config.run_dir)
    log.info(f"sampler: {path} ({tuned.solver}, {tuned.network_evaluations} network evaluations)")
    if split is not None and recommendation.tuned_on(split):
        log.warning(f"{path}: its sampler was tuned on the {recommendation.split} split and this generates the "
                    f"{split} split: scores of this ensemble are not held out from the choice of sampler")
    return config.model_copy(update={"sampler": tuned})


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
            **({"corrdiff_mismatches": "; ".join(models.mismatches)} if models.mismatches else {})}


def generate(config: RunConfig, regression_path, diffusion_path, out, times: list[str] | None = None,
             dataset=None, progress: bool = True, inputs: list[str] | None = None, overwrite: bool = False,
             allow_mismatch: bool = False, models_loader: Callable[[torch.device], Models] | None = None,
             input_member=None) -> Path:
    """Write an ensemble file for the chosen times (all times of the split by default); resumable.

    A file already at `out` is resumed only when its fingerprint is this generation's; else it is refused,
    or with `overwrite` replaced once the new file is complete. The format follows the suffix of `out`.
    Under torchrun, ranks take every world_size-th time; NetCDF ranks write part files that rank 0
    merges into `out`, Zarr ranks write their regions of `out` directly. `models_loader(device)`, when
    given, replaces loading the two checkpoint paths (a model package: `corrdiff.inference.model_package`). `input_member`
    (a member's number, "mean" or "all") chooses among the members of ensemble inputs, over the spec's `member`.
    `out` never is, lies inside or holds what the generation reads (`corrdiff.output_paths`), and one generation at a
    time writes it (`corrdiff.locks`: a second is refused, naming the first one's PID).
    """
    info = init_distributed(config.device)
    try:
        return _generate(config, regression_path, diffusion_path, Path(out), times, dataset, progress, info, inputs,
                         overwrite, allow_mismatch, models_loader, input_member)
    finally:
        shutdown(info)


def _generate(config, regression_path, diffusion_path, out: Path, times, dataset, progress, info: DistInfo,
              inputs=None, overwrite=False, allow_mismatch=False, models_loader=None, input_member=None) -> Path:
    gen = config.generate
    fmt = checks.output_format(out, gen.format, "format" in gen.model_fields_set)
    check_folder(out)
    if overwrite:
        check_replaceable(out)
    if models_loader is not None:
        models = models_loader(info.device)
    else:
        models = load_models(regression_path, diffusion_path, info.device, allow_mismatch)
    read = generation_inputs(config, models, {"regression": regression_path, "diffusion": diffusion_path},
                             inputs)  # before the tuned sampler replaces the config's
    config = with_tuned_sampler(config, models, None if inputs else gen.split)
    if dataset is None:
        dataset = open_inference_dataset(config, models.meta, gen.split, inputs, models.provenance["diffusion_checkpoint"],
                                         input_member)
    check_fits(models, dataset)
    config = resolve_patches(config, models, dataset.lat.shape)
    check_not_an_input(out, read | spec_inputs_of(dataset))
    make_folder(out)  # as score, report and the baselines do
    with locks.for_output(out, info):  # rank 0 holds it until every rank is done
        return _write_ensemble(config, models, dataset, out, fmt, times, overwrite, allow_mismatch, progress, info)


def generation_inputs(config: RunConfig, models: Models, checkpoint_paths: dict, inputs) -> dict[str, list]:
    """What a generation reads besides its dataset's files (`spec_inputs_of`), by role: the checkpoints as given
    (run folders or checkpoint folders) and as loaded (or the model package), the run config, the --input files
    and the run's recommended sampler (`corrdiff tune`)."""
    read = checks.checkpoint_inputs(checkpoint_paths)
    for role, paths in models.sources.items():
        read[role] = read.get(role, []) + list(paths)
    read["the run config"] = [config.source] if getattr(config, "source", None) else []
    read["an --input file"] = [p for path in input_paths(inputs or []) for p in map(Path, glob.glob(str(path)))]
    if config.run_dir and "sampler" not in config.model_fields_set:
        read["the run's recommended sampler"] = [sampler_file.path_in(config.run_dir)]
    return read


def spec_inputs_of(dataset) -> dict[str, list[Path]]:
    """The files a dataset reads, by role (`corrdiff.output_paths.spec_inputs`); none for one given in memory."""
    spec = getattr(dataset, "spec", None)
    return spec_inputs(spec) if spec is not None else {}


def _write_ensemble(config: RunConfig, models: Models, dataset, out: Path, fmt: str, times, overwrite: bool,
                    allow_mismatch: bool, progress: bool, info: DistInfo) -> Path:
    """Generate the chosen times into `out` (checked, and locked by this run): resume, or with `overwrite` build
    the new file beside it; under torchrun each rank its share of the times."""
    gen = config.generate
    sampling = Sampling.build(config, models, dataset.lat.shape, info.device)
    indices = select_times(dataset.times, times)
    chosen_times = np.asarray(dataset.times, dtype="datetime64[ns]")[indices]
    fingerprint = generation_fingerprint_of(config, models, dataset, chosen_times, recorded_input_hashes(out, fmt))
    channels = list(models.meta.target_channels)
    attrs = ensemble_attrs(config, models, allow_mismatch)
    # With --overwrite the new file is built beside `out` and renamed over it once complete.
    target = overwrite_path(out) if overwrite else out
    # Ranks take every world_size-th time. NetCDF cannot take concurrent writers: each rank fills a part
    # file of its own times; a Zarr store is shared, each rank writing its own time chunks.
    mine = list(range(len(indices)))[info.rank :: info.world_size]
    parts = info.world_size > 1 and fmt == "netcdf"
    if parts and not overwrite and resumable(out, fmt, fingerprint):
        return out  # merged already: parts are merged only once every time is written
    if parts:
        path, slot_times = part_path(target, info.rank, info.world_size), chosen_times[mine]
    else:
        path, slot_times = target, chosen_times
    slots = list(range(len(mine))) if parts else mine
    context = output_context(dataset, slot_times)  # forecast reference/lead times, input files, projection
    members = gen.members * (len(dataset.labels) if isinstance(dataset, InputMembers) else 1)
    if isinstance(dataset, InputMembers):
        context = dataclasses.replace(context, coords={**context.coords, **dataset.coords(gen.members)})
    open_writer = lambda: EnsembleWriter(path, slot_times, members, dataset.lat, dataset.lon, channels,
                                         models.meta.target_attrs, {**attrs, **context.attrs}, fmt,
                                         fingerprint=fingerprint, replace=overwrite, **context.template_options())
    if not parts and info.world_size > 1:
        if info.is_main:
            open_writer().close()  # rank 0 lays out the shared store before anyone writes to it
        barrier(info)
    writer = open_writer()
    done = writer.written()  # read before any write is in flight: then only the writer's thread touches the file
    todo = [(slot, k) for slot, k in zip(slots, mine) if not done[slot]]
    bar = progress_bar(total=len(todo), desc="generate", unit="time", disable=not (progress and info.is_main))
    # Time t is written in the background while time t+1 is sampled; the bar counts times written.
    output = OverlappedWriter(writer, gen.overlap_writes, on_written=lambda slot: bar.update())
    try:
        for slot, k in todo:
            output.write(slot, *downscale_members(downscale_time, sampling, dataset, indices[k], chosen_times[k]))
    finally:
        try:
            output.close()
        finally:
            bar.close()
    barrier(info)
    if info.is_main:
        _finish(target, out, fmt, info.world_size if parts else 0, overwrite)
    barrier(info)
    return out


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
        hashes=hashes)


def _finish(target: Path, out: Path, fmt: str, parts: int, overwrite: bool) -> None:
    """Merge the part files (`parts` ranks, 0: none), consolidate a Zarr store, and move an --overwrite file in place."""
    try:
        if parts:
            merge_parts(target, parts)
        if fmt == "zarr":
            import zarr

            zarr.consolidate_metadata(str(target))  # readers then open the store with one metadata read
        if overwrite:
            replace(target, out)
    except (OSError, RuntimeError) as err:
        if not is_io_error(err):
            raise
        raise io_error(target, err, "finishing it") from err


def part_path(out: Path, rank: int, world_size: int) -> Path:
    """The NetCDF part file of one rank."""
    return out.with_name(f"{out.name}.part-{rank:03d}-of-{world_size:03d}")


def merge_parts(out: Path, world_size: int) -> None:
    """Concatenate the ranks' NetCDF part files in time order into `out`, then remove them."""
    part_paths = [part_path(out, r, world_size) for r in range(world_size)]
    parts = [xr.open_dataset(p, engine="netcdf4") for p in part_paths if p.exists()]
    try:
        merged = xr.concat([p for p in parts if p.sizes["time"]], dim="time", data_vars="all",
                           coords="minimal", compat="override", combine_attrs="override").sortby("time")
        if not bool(merged[FLAG].all()):
            raise OutputError(f"{out}: some times were not written; rerun the same command to finish them")
        ensemble_file.write(merged, out, "netcdf")
    finally:
        for p in parts:
            p.close()
    for p in part_paths:
        remove(p)
