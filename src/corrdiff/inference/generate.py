"""Generation: load both checkpoints, downscale each requested time into an ensemble, write it."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from corrdiff import __version__
from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta
from corrdiff.config import dump_config, RunConfig
from corrdiff.data import DownscalingDataset, load_spec
from corrdiff.diffusion import DiffusionCondition, PatchedDenoiser, SamplerConfig, sample_ensemble
from corrdiff.distributed import barrier, DistInfo, init_distributed, shutdown
from corrdiff import ensemble_file
from corrdiff.ensemble_file import FLAG
from corrdiff.errors import ConfigError, OutputError
from corrdiff.inference.writer import EnsembleWriter
from corrdiff.perf import autocast, FastPath, prepare_denoiser, to_channels_last
from corrdiff.seeding import derive_seed


@dataclass
class Models:
    """The two networks of a CorrDiff run, ready to sample, with what the checkpoints say about them."""

    regression: torch.nn.Module
    denoiser: torch.nn.Module  # EDMPrecond, or a corrdiff.perf.FastDenoiser around it
    meta: CheckpointMeta  # the diffusion checkpoint's
    condition: DiffusionCondition
    provenance: dict
    fast: FastPath = FastPath()


def load_models(regression_path, diffusion_path, device) -> Models:
    """Frozen EMA networks from a regression and a diffusion checkpoint (folders or run folders)."""
    regression = ckpt.load_model(regression_path, kind="regression")
    diffusion = ckpt.load_model(diffusion_path, kind="diffusion")
    for key in ("input_channels", "target_channels"):
        mine, theirs = getattr(regression.meta, key), getattr(diffusion.meta, key)
        if mine != theirs:
            raise ConfigError(f"{key} differ: regression {regression.path} has {list(mine)}, "
                              f"diffusion {diffusion.path} has {list(theirs)}")
    provenance = {
        "regression_checkpoint": str(regression.path),
        "regression_checkpoint_sha256": regression.sha256,
        "diffusion_checkpoint": str(diffusion.path),
        "diffusion_checkpoint_sha256": diffusion.sha256,
    }
    return Models(ckpt.load_network(regression, device), ckpt.load_network(diffusion, device), diffusion.meta,
                  DiffusionCondition.from_unet(diffusion.meta.unet), provenance)


def select_times(dataset_times: np.ndarray, requested: list[str] | None) -> list[int]:
    """Dataset indices of the requested ISO times (all when None); an error lists the missing ones."""
    times = np.asarray(dataset_times, dtype="datetime64[ns]")
    if not requested:
        return list(range(len(times)))
    wanted = np.array([np.datetime64(t, "ns") for t in requested])
    missing = [str(t) for t in wanted if t not in times]
    if missing:
        raise ConfigError(f"times not in the dataset: {', '.join(missing[:5])}"
                          f"{' …' if len(missing) > 5 else ''} (it has {times[0]} … {times[-1]})")
    return [int(np.flatnonzero(times == t)[0]) for t in wanted]


@torch.no_grad()
def downscale(models: Models, condition: torch.Tensor, members: int, seed: int, sampler: SamplerConfig,
              member_batch: int | None = None, patcher: PatchedDenoiser | None = None):
    """Regression mean (1, C, H, W) and ensemble (members, C, H, W), normalised, for one condition (1, C_in, H, W)."""
    with autocast(models.fast.bf16, condition.device):
        mean = models.regression(condition).to(torch.float32)
    field = models.condition.field(condition, mean)
    # A patcher builds each patch's condition from the whole field; one pass over the domain takes it whole.
    denoiser_condition = field if patcher is not None else models.condition.whole_domain(field)
    ensemble = sample_ensemble(models.denoiser, mean, denoiser_condition, range(members), seed, sampler,
                               member_batch, patcher)
    return mean, ensemble


def open_inference_dataset(config: RunConfig, stats, split: str, inputs: list[str] | None = None):
    """The dataset to downscale: the run's data spec, without targets, normalised with the checkpoint's stats.

    With `inputs` (files or globs, e.g. a new forecast), those replace the spec's input stores and every
    time they hold is downscaled; the spec still gives the variables, static fields and the fine grid.
    """
    spec = load_spec(config.data)
    if inputs:
        spec = spec.with_inputs([str(Path(p).expanduser().absolute()) for p in inputs])
        split = "all"
    return DownscalingDataset(spec, split=split, stats=stats, with_target=False)


def generate(config: RunConfig, regression_path, diffusion_path, out, times: list[str] | None = None,
             dataset=None, progress: bool = True, inputs: list[str] | None = None) -> Path:
    """Write an ensemble file for the chosen times (all times of the split by default); resumable.

    Under torchrun, ranks take every world_size-th time; NetCDF ranks write part files that rank 0
    merges into `out`, Zarr ranks write their regions of `out` directly.
    """
    info = init_distributed(config.device)
    try:
        return _generate(config, regression_path, diffusion_path, Path(out), times, dataset, progress, info, inputs)
    finally:
        shutdown(info)


def _generate(config, regression_path, diffusion_path, out, times, dataset, progress, info: DistInfo,
              inputs=None) -> Path:
    gen = config.generate
    models = load_models(regression_path, diffusion_path, info.device)
    models.fast = gen.fast_path(info.device)
    models.denoiser = prepare_denoiser(models.denoiser, models.fast)  # once: compiled code and graphs are kept
    if models.fast.channels_last:
        to_channels_last(models.regression)
    if dataset is None:
        dataset = open_inference_dataset(config, models.meta.stats, gen.split, inputs)
    if tuple(dataset.input_channels) != models.meta.input_channels:
        raise ConfigError(f"the data gives input channels {list(dataset.input_channels)}, the checkpoints were "
                          f"trained on {list(models.meta.input_channels)}")
    indices = select_times(dataset.times, times)
    chosen_times = np.asarray(dataset.times, dtype="datetime64[ns]")[indices]
    channels = list(models.meta.target_channels)
    attrs = {"title": "CorrDiff downscaled ensemble", "source": f"corrdiff {__version__}",
             "corrdiff_seed": gen.seed, "corrdiff_members": gen.members,
             "corrdiff_config": dump_config(config), **models.provenance,
             **{f"sampler_{k}": str(v) for k, v in dataclasses.asdict(config.sampler).items()}}
    # Ranks take every world_size-th time. NetCDF cannot take concurrent writers: each rank fills a part
    # file of its own times; a Zarr store is shared, each rank writing its own time chunks.
    mine = list(range(len(indices)))[info.rank :: info.world_size]
    parts = info.world_size > 1 and gen.format == "netcdf"
    if parts:
        path, slot_times = out.with_name(f"{out.name}.part-{info.rank:03d}-of-{info.world_size:03d}"), chosen_times[mine]
    else:
        path, slot_times = out, chosen_times
    slots = list(range(len(mine))) if parts else mine
    open_writer = lambda: EnsembleWriter(path, slot_times, gen.members, dataset.lat, dataset.lon, channels,
                                         models.meta.target_attrs, attrs, gen.format)
    if not parts and info.world_size > 1:
        if info.is_main:
            open_writer().close()  # rank 0 lays out the shared store before anyone writes to it
        barrier(info)
    writer = open_writer()
    done = writer.written()
    sampler: SamplerConfig = config.sampler
    patcher = None
    if gen.patch_shape:
        patcher = PatchedDenoiser(tuple(dataset.lat.shape), tuple(gen.patch_shape), tuple(gen.patch_overlap),
                                  condition=models.condition)
    todo = [(slot, k) for slot, k in zip(slots, mine) if not done[slot]]
    bar = tqdm(todo, desc="generate", unit="time", disable=not (progress and info.is_main))
    try:
        for slot, k in bar:
            sample = dataset[indices[k]]
            condition = sample.input[None].to(info.device)
            # Member m of a time depends on (seed, time, m) only: any selection of times gives the same fields.
            seconds = int(chosen_times[k].astype("datetime64[s]").astype("int64")) % 2**64
            time_seed = derive_seed(gen.seed, seconds)
            mean, ensemble = downscale(models, condition, gen.members, time_seed, sampler, gen.member_batch, patcher)
            stats = dataset.stats
            writer.write(slot, stats.denormalize_target(ensemble).cpu().numpy(),
                         stats.denormalize_target(mean)[0].cpu().numpy())
    finally:
        writer.close()
    barrier(info)
    if parts and info.is_main:
        merge_parts(out, info.world_size)
    if gen.format == "zarr" and info.is_main:
        import zarr

        zarr.consolidate_metadata(str(out))  # readers then open the store with one metadata read
    barrier(info)
    return out


def merge_parts(out: Path, world_size: int) -> None:
    """Concatenate the ranks' NetCDF part files in time order into `out`, then remove them."""
    part_paths = [out.with_name(f"{out.name}.part-{r:03d}-of-{world_size:03d}") for r in range(world_size)]
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
        p.unlink(missing_ok=True)
