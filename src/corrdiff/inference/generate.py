"""Generation into a file: load both checkpoints, check that they belong together and fit the data, downscale
each requested time (`corrdiff.inference.downscaling`) and write the ensemble so that a rerun resumes it
(`corrdiff.inference.writer`); under torchrun each rank takes its share of the times."""

import dataclasses
import glob
import logging
from collections.abc import Callable
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
from corrdiff.inference import checks
from corrdiff.inference.context import output_context
from corrdiff.inference.downscaling import check_fits, downscale_time, ensemble_attrs, generation_fingerprint_of, \
    load_models, Models, resolve_patches, Sampling, select_times
from corrdiff.inference.input_members import downscale_members, InputMembers, member_labels, with_member
from corrdiff.inference.writer import check_replaceable, EnsembleWriter, io_error, is_io_error, OverlappedWriter, \
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
