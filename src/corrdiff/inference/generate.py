"""Generation into a file: load both checkpoints, check that they belong together and fit the data, downscale
each requested time (`corrdiff.inference.downscaling`) and write the ensemble so that a rerun resumes it
(`corrdiff.inference.writer`); under torchrun each rank takes its share of the times."""

import dataclasses
import glob
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from corrdiff.checkpoint import CheckpointMeta
from corrdiff.config import RunConfig
from corrdiff.data import DownscalingDataset, load_spec
from corrdiff.data.open_inputs import existing_inputs
from corrdiff.distributed import barrier, DistInfo, init_distributed, shutdown
from corrdiff import ensemble_file, locks, sampler_file
from corrdiff.ensemble_file import FLAG
from corrdiff.errors import ConfigError, OutputError
from corrdiff.inference import checks, coherence as time_series
from corrdiff.inference.context import output_context
from corrdiff.inference.downscaling import check_fits, downscale_time, ensemble_attrs, generation_fingerprint_of, \
    load_models, Models, resolve_patches, Sampling, select_times, series_latents
from corrdiff.inference.input_members import downscale_members, InputMembers, member_labels, with_member
from corrdiff.inference.writer import check_not_a_folder, EnsembleWriter, io_error, is_io_error, OverlappedWriter, \
    overwrite_path, recorded_input_hashes, remove, replace, resumable
from corrdiff.output_paths import check_folder, check_not_an_input, make_folder, spec_inputs
from corrdiff.progress import bar as progress_bar

log = logging.getLogger(__name__)


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


def with_tuned_sampler(config: RunConfig, models: Models, split: str | None = None) -> RunConfig:
    """`config`, with the run folder's recommended sampler (`corrdiff tune`) when the config has no sampler section
    (without one, a consistency student's own recommended sampler: `checks.sampler_for`).

    A warning when that sampler was tuned on times of `split`, the split being generated (None: new inputs)."""
    if "sampler" in config.model_fields_set:
        return config
    recommendation = sampler_file.recommended(config.run_dir, models.provenance["diffusion_checkpoint_sha256"])
    if recommendation is None:
        sampler = checks.sampler_for(config.sampler, models.meta)
        return config if sampler == config.sampler else config.model_copy(update={"sampler": sampler})
    tuned, path = recommendation.sampler, sampler_file.path_in(config.run_dir)
    log.info(f"sampler: {path} ({tuned.solver}, {tuned.network_evaluations} network evaluations)")
    if split is not None and recommendation.tuned_on(split):
        log.warning(f"{path}: its sampler was tuned on the {recommendation.split} split and this generates the "
                    f"{split} split: scores of this ensemble are not held out from the choice of sampler")
    return config.model_copy(update={"sampler": tuned})


@dataclass(frozen=True)
class GenerationRequest:
    """What a generation reads: the two networks, the data, and which of its times."""

    regression: Path | str | None = None
    """The regression checkpoint: a checkpoint folder or a run folder (None with `models_loader`)."""
    diffusion: Path | str | None = None
    """The diffusion checkpoint, likewise."""
    models_loader: Callable[[torch.device], Models] | None = None
    """`models_loader(device)` gives both networks instead of the two checkpoints (a model package:
    `corrdiff.inference.model_package`)."""
    allow_mismatch: bool = False
    """Generate with a diffusion checkpoint trained against another regression checkpoint (logged and recorded)."""
    dataset: object = None
    """The dataset to downscale (a `PairedDataset`, or `InputMembers`); None: opened from the config's spec."""
    inputs: list[str] | None = None
    """Files or globs (--input) read instead of the spec's inputs; every time they hold is downscaled."""
    input_member: int | str | None = None
    """Of ensemble inputs: a member's number, "mean" or "all"; over the spec's `member`."""
    times: list[str] | None = None
    """ISO times to downscale; None: every time of the split (or of `inputs`)."""


@dataclass(frozen=True)
class EnsembleOutput:
    """Where and how a generation writes its ensemble."""

    path: Path
    """The ensemble file: NetCDF (.nc, .nc4) or a Zarr store (.zarr); the suffix sets the format."""
    overwrite: bool = False
    """Replace what is at `path` once the new file is complete, instead of resuming it."""
    progress: bool = True
    """A progress bar (rank 0's) of the times written."""


def generate(config: RunConfig, request: GenerationRequest, output: EnsembleOutput) -> Path:
    """Write an ensemble file for the chosen times (all times of the split by default); resumable. `config` says
    how to sample (the sampler and the `generate:` section), `request` what to read, `output` what to write.

    A file already at `output.path` is resumed only when its fingerprint is this generation's; else it is refused,
    or with `output.overwrite` replaced once the new file is complete. Under torchrun, ranks take contiguous blocks
    of the times (`rank_positions`); NetCDF ranks write part files that rank 0 merges into the file, Zarr ranks write their
    regions of the store directly. The file never is, lies inside or holds what the generation reads
    (`corrdiff.output_paths`), and one generation at a time writes it (`corrdiff.locks`: a second is refused,
    naming the first one's PID).
    """
    info = init_distributed(config.device)
    try:
        return _generate(config, request, dataclasses.replace(output, path=Path(output.path)), info)
    finally:
        shutdown(info)


def _generate(config: RunConfig, request: GenerationRequest, output: EnsembleOutput, info: DistInfo) -> Path:
    generation = config.generate
    out = output.path
    file_format = checks.output_format(out, generation.format, "format" in generation.model_fields_set)
    check_folder(out)
    if output.overwrite:
        check_not_a_folder(out)
    if request.models_loader is not None:
        models = request.models_loader(info.device)
    else:
        models = load_models(request.regression, request.diffusion, info.device, request.allow_mismatch)
    checkpoints = {"regression": request.regression, "diffusion": request.diffusion}
    # Before the tuned sampler replaces the config's: then the run's sampler.yaml is among what is read.
    read_by_role = generation_inputs(config, models, checkpoints, request.inputs)
    config = with_tuned_sampler(config, models, None if request.inputs else generation.split)
    dataset = request.dataset
    if dataset is None:
        dataset = open_inference_dataset(config, models.meta, generation.split, request.inputs,
                                         models.provenance["diffusion_checkpoint"], request.input_member)
    check_fits(models, dataset)
    config = resolve_patches(config, models, dataset.lat.shape)
    check_not_an_input(out, read_by_role | spec_inputs_of(dataset))
    make_folder(out)  # as score, report and the baselines do
    with locks.for_output(out, info):  # rank 0 holds it until every rank is done
        return _write_ensemble(config, models, dataset, request, output, file_format, info)


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


def _write_ensemble(config: RunConfig, models: Models, dataset, request: GenerationRequest, output: EnsembleOutput,
                    file_format: str, info: DistInfo) -> Path:
    """Generate the chosen times into `output.path` (checked, and locked by this run): resume, or with `overwrite`
    build the new file beside it; under torchrun each rank its share of the times."""
    generation = config.generate
    out = output.path
    sampling = Sampling.build(config, models, dataset.lat.shape, info.device)
    indices = select_times(dataset.times, request.times)
    chosen_times = np.asarray(dataset.times, dtype="datetime64[ns]")[indices]
    fingerprint = generation_fingerprint_of(config, models, dataset, chosen_times,
                                            recorded_input_hashes(out, file_format))
    channels = list(models.meta.target_channels)
    attrs = ensemble_attrs(config, models, request.allow_mismatch)
    # With --overwrite the new file is built beside `out` and renamed over it once complete.
    target = overwrite_path(out) if output.overwrite else out
    # Ranks take contiguous blocks of the times. NetCDF cannot take concurrent writers: each rank fills a part
    # file of its own times; a Zarr store is shared, each rank writing its own time chunks.
    my_positions = rank_positions(len(indices), info.rank, info.world_size)  # in `indices`, this rank's
    in_part_files = info.world_size > 1 and file_format == "netcdf"
    if in_part_files and not output.overwrite and resumable(out, file_format, fingerprint):
        return out  # merged already: parts are merged only once every time is written
    if in_part_files:
        path, slot_times = part_path(target, info.rank, info.world_size), chosen_times[my_positions]
    else:
        path, slot_times = target, chosen_times
    slots = list(range(len(my_positions))) if in_part_files else my_positions  # the file's time index of each
    context = output_context(dataset, slot_times)  # forecast reference/lead times, input files, projection
    members = generation.members * (len(dataset.labels) if isinstance(dataset, InputMembers) else 1)
    if isinstance(dataset, InputMembers):
        context = dataclasses.replace(context, coords={**context.coords, **dataset.coords(generation.members)})
    series_coords = time_series.output_coords(generation.coherence, chosen_times,
                                            my_positions if in_part_files else range(len(indices)))
    context = dataclasses.replace(context, coords={**context.coords, **series_coords})
    open_writer = lambda: EnsembleWriter(path, slot_times, members, dataset.lat, dataset.lon, channels,
                                         models.meta.target_attrs, {**attrs, **context.attrs}, file_format,
                                         fingerprint=fingerprint, replace=output.overwrite,
                                         **context.template_options())
    if not in_part_files and info.world_size > 1:
        if info.is_main:
            open_writer().close()  # rank 0 lays out the shared store before anyone writes to it
        barrier(info)
    writer = open_writer()
    done = writer.written()  # read before any write is in flight: then only the writer's thread touches the file
    todo = [(slot, position) for slot, position in zip(slots, my_positions) if not done[slot]]
    bar = progress_bar(total=len(todo), desc="generate", unit="time", disable=not (output.progress and info.is_main))
    # Time t is written in the background while time t+1 is sampled; the bar counts times written.
    overlapped = OverlappedWriter(writer, generation.overlap_writes, on_written=lambda slot: bar.update())
    # Members as time series: each time's starting noise, rebuilt from its series' start where this run starts.
    series = series_latents(sampling, chosen_times, members)
    try:
        for slot, position in todo:
            latents = series.at(position) if series is not None else None
            overlapped.write(slot, *downscale_members(downscale_time, sampling, dataset, indices[position],
                                                      chosen_times[position], latents))
    finally:
        try:
            overlapped.close()
        finally:
            bar.close()
    barrier(info)
    if info.is_main:
        _finish(target, out, file_format, info.world_size if in_part_files else 0, output.overwrite)
    barrier(info)
    return out


def rank_positions(times: int, rank: int, world_size: int) -> list[int]:
    """The positions (of `times` in all) that rank `rank` of `world_size` generates: a contiguous block, the first
    `times % world_size` ranks one time more (members as time series then rebuild one series' state per rank)."""
    size, extra = divmod(times, world_size)
    start = rank * size + min(rank, extra)
    return list(range(start, start + size + (rank < extra)))


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
