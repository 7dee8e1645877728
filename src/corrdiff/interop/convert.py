"""PhysicsNeMo CorrDiff checkpoints into a corrdiff run folder (`import_physicsnemo`), and back (`export_physicsnemo`).

An import writes `<out>/regression/checkpoints/step-000000/` and `<out>/diffusion/checkpoints/step-000000/`
through `corrdiff.checkpoint.save_checkpoint`, so `corrdiff generate` and `corrdiff.checkpoint.load_model` read
them like trained ones. The training half (optimizer state, raw weights) is empty: an imported checkpoint
generates, it does not resume training. Each checkpoint's `config` records where it came from (file, SHA-256,
class, arguments). Nothing is written unless both networks convert.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta, RegressionRef
from corrdiff.checkpoint_writer import save_checkpoint
from corrdiff.data import Normalization
from corrdiff.errors import CheckpointError
from corrdiff.file_integrity import sha256_file
from corrdiff.interop.mdlus import MdlusFile, read_mdlus, write_mdlus
from corrdiff.interop.physicsnemo import architecture_problem, check_group_norms, describe, Layout, \
    RESIDUAL_STD_PROBLEM
from corrdiff.interop.weights import to_corrdiff, to_physicsnemo
from corrdiff.networks import build_network
from corrdiff.state_tensors import nonfinite_tensors

PHYSICSNEMO_VERSION = "2.2.2"  # the release whose classes and file layout the export targets
EXPORT_CLASSES = {
    "regression": ("CorrDiffRegressionUNet", "physicsnemo.models.diffusion_unets.unet", "0.2.0"),
    "diffusion": ("EDMPrecondSuperResolution", "physicsnemo.diffusion.preconditioners.legacy", "0.1.0"),
    # A denoiser that scales its condition by c_in(σ): only the deprecated EDMPrecondSR still computes that.
    "diffusion_scaled": ("EDMPrecondSR", "physicsnemo.diffusion.preconditioners.legacy", "0.1.0"),
}


@dataclass
class Converted:
    """One network read from a `.mdlus` file and translated: its layout and corrdiff weights."""

    archive: MdlusFile
    layout: Layout
    weights: dict[str, torch.Tensor]
    sha256: str


@dataclass
class Imported:
    """What an import wrote: the run folder, each checkpoint folder, and notes for the user."""

    run_dir: Path
    checkpoints: dict[str, Path]
    notes: list[str] = field(default_factory=list)


def convert(path: str | Path, kind: str, stats: Normalization) -> Converted:
    """Read and translate one PhysicsNeMo checkpoint of `kind` for the channels of `stats`."""
    archive = read_mdlus(path)
    layout = describe(archive, len(stats.input.names), len(stats.target.names), kind)
    weights = to_corrdiff(archive.state, layout, archive.path)
    bad = nonfinite_tensors(weights)
    if bad:
        raise CheckpointError(f"{archive.path}: holds non-finite weights (in {', '.join(bad[:3])})")
    return Converted(archive, layout, weights, sha256_file(archive.path))


def _provenance(item: Converted) -> str:
    """The checkpoint's `config` text: a YAML mapping saying where the network came from."""
    archive = item.archive
    return yaml.safe_dump({"imported_from": {
        "format": "physicsnemo", "file": str(archive.path.resolve()), "sha256": item.sha256,
        "class": f"{archive.module}.{archive.class_name}", "container": archive.container,
        "physicsnemo_version": archive.metadata.get("physicsnemo_version"), "mdlus_file_version": archive.version,
        "args": archive.args, "grid": item.layout.grid_source, "notes": item.layout.notes}}, sort_keys=False)


def _notes(item: Converted) -> list[str]:
    layout, name = item.layout, item.archive.path.name
    notes = [f"{name}: {note}" for note in layout.notes]
    if layout.grid_source != "none":
        notes.append(f"{name}: grid embedding {layout.grid_source}, kept as corrdiff's 'learned' grid "
                     f"({layout.unet.grid_channels} channels)")
    if layout.scale_condition:
        notes.append(f"{name}: scale_cond_input=True: the condition is scaled by c_in(σ) with the noisy residual "
                     "(kept as the checkpoint's scale_condition)")
    low, high = layout.sigma_range
    if low > 0 or high < math.inf:
        notes.append(f"{name}: PhysicsNeMo clamps the sampler's noise levels to [{low}, {high}]; set "
                     "sampler.sigma_min/sigma_max to match")
    return notes


def import_physicsnemo(out: str | Path, stats: Normalization, lat, lon, regression: str | Path | None = None,
                       diffusion: str | Path | None = None) -> Imported:
    """Convert PhysicsNeMo checkpoints into a corrdiff run folder `out` (regression/, diffusion/).

    `stats` gives the channel names and normalisation the networks were trained with (inputs, then static
    fields; targets); `lat`, `lon` (H, W) the fine grid. Either checkpoint may be left out; both are converted
    before anything is written, and a run folder that already holds checkpoints is refused.
    """
    out = Path(out)
    sources = {kind: path for kind, path in (("regression", regression), ("diffusion", diffusion)) if path}
    if not sources:
        raise CheckpointError("nothing to import: give a regression and/or a diffusion checkpoint")
    for kind in sources:
        existing = ckpt.read_pointer(out / kind / "checkpoints", "latest")
        if existing:
            raise CheckpointError(f"{out / kind}: already holds checkpoints ({existing}); import into another folder")
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    converted = {kind: convert(path, kind, stats) for kind, path in sources.items()}
    for kind, item in converted.items():
        if tuple(lat.shape) != tuple(item.layout.unet.img_shape):
            raise CheckpointError(f"{item.archive.path}: the network works on a {item.layout.unet.img_shape} grid, "
                                  f"the grid given is {tuple(lat.shape)}")
    written, notes, reference = {}, [], None
    for kind, item in converted.items():
        meta = CheckpointMeta(kind=kind, unet=item.layout.unet, input_channels=tuple(stats.input.names),
                              target_channels=tuple(stats.target.names), stats=stats, config=_provenance(item),
                              sigma_data=item.layout.sigma_data, regression_checkpoint=reference,
                              scale_condition=item.layout.scale_condition)
        folder = save_checkpoint(out / kind / "checkpoints", meta=meta, ema_weights=item.weights, lat=lat,
                                      lon=lon, raw_weights={}, optimizer_state={"state": {}, "param_groups": []},
                                      scheduler_state={}, samples_seen=0, best_val=None, keep_last=1, is_best=True)
        if kind == "regression":
            reference = RegressionRef(path=str(folder.resolve()), sha256=sha256_file(folder / ckpt.MODEL_FILE))
        written[kind] = folder
        notes += _notes(item)
    return Imported(out, written, notes)


def export_args(meta: CheckpointMeta) -> dict:
    """The constructor arguments (args.json's `__args__`) of the PhysicsNeMo network equal to `meta`'s."""
    unet = meta.unet
    problem = architecture_problem(unet)
    if problem:
        raise CheckpointError(problem)
    height = unet.img_shape[0]
    levels = [level for level in range(len(unet.channel_mult)) if (min(unet.img_shape) >> level) in unet.attn_resolutions]
    grid = unet.grid_channels if unet.grid_embedding != "none" else 0
    condition = unet.in_channels + (unet.out_channels if meta.kind == "diffusion" and unet.condition_on_mean else 0)
    args = dict(img_resolution=list(unet.img_shape), img_in_channels=condition + grid,
                img_out_channels=unet.out_channels, use_fp16=False, model_type="SongUNetPosEmbd")
    if meta.kind == "diffusion":
        args |= dict(sigma_data=meta.sigma_data, sigma_min=0.0, sigma_max=math.inf)
    if meta.scale_condition:  # EDMPrecondSR: its deprecated img_channels is required, scale_cond_input explicit
        args |= dict(img_channels=unet.out_channels, scale_cond_input=True)
    return args | dict(
        embedding_type=unet.noise_embedding if meta.kind == "diffusion" else "zero",
        model_channels=unet.model_channels, channel_mult=list(unet.channel_mult),
        channel_mult_emb=unet.channel_mult_emb, num_blocks=unet.num_blocks,
        attn_resolutions=[height >> level for level in levels], dropout=unet.dropout, gridtype="learnable",
        N_grid_channels=grid)


def _grid_file(path: Path, lat: np.ndarray, lon: np.ndarray) -> None:
    """Earth2Studio's output_latlon_grid.nc: 1-D lat and lon for a regular grid (it refuses 2-D ones), else 2-D."""
    import xarray as xr

    regular = np.allclose(lat, lat[:, :1]) and np.allclose(lon, lon[:1, :])
    if regular:
        ds = xr.Dataset(coords={"lat": ("lat", lat[:, 0]), "lon": ("lon", lon[0, :])})
    else:
        ds = xr.Dataset({"lat": (("y", "x"), lat), "lon": (("y", "x"), lon)})
    ds.to_netcdf(path)


def _package_files(out: Path, meta: CheckpointMeta, lat, lon) -> list[str]:
    """stats.json, metadata.json and output_latlon_grid.nc in Earth2Studio's layout; notes on what they lack."""
    stats, notes = meta.stats, []
    if any(stats.input.transforms) or any(stats.target.transforms):
        notes.append("channel transforms (e.g. log) are not expressible in Earth2Studio's stats.json: apply them "
                     "before and after the networks")
    table = lambda part: {name: {"mean": float(m), "std": float(s)} for name, m, s in zip(part.names, part.mean, part.std)}
    (out / "stats.json").write_text(json.dumps({"input": table(stats.input), "output": table(stats.target)}, indent=1))
    (out / "metadata.json").write_text(json.dumps({
        "input_variables": list(meta.input_channels), "output_variables": list(meta.target_channels),
        "hr_mean_conditioning": bool(meta.unet.condition_on_mean), "sampler_type": "stochastic"}, indent=1))
    if lat is not None:
        _grid_file(out / "output_latlon_grid.nc", np.asarray(lat), np.asarray(lon))
    notes.append("Earth2Studio also needs input_latlon_grid.nc (the coarse grid), which a corrdiff checkpoint does "
                 "not hold; static channels are listed as inputs")
    return notes


def export_physicsnemo(run_dir: str | Path, out: str | Path, which: str = "best") -> tuple[list[Path], list[str]]:
    """Write `regression.mdlus` and `diffusion.mdlus` that PhysicsNeMo 2.2's `Module.from_checkpoint` loads, with
    Earth2Studio's stats.json, metadata.json and output grid; returns the files and notes."""
    run_dir, out = Path(run_dir), Path(out)
    written, metas, grid = [], {}, (None, None)
    if (run_dir / "diffusion").exists():
        diffusion = ckpt.load_model(run_dir / "diffusion", which, kind="diffusion")
        if diffusion.meta.residual_std:  # before anything is written
            raise CheckpointError(f"{diffusion.path}: {RESIDUAL_STD_PROBLEM}; train the diffusion step with "
                                  "diffusion.residual_normalization=false to export it")
    for kind in ckpt.KINDS:
        if not (run_dir / kind).exists():
            continue
        loaded = ckpt.load_model(run_dir / kind, which, kind=kind)
        net = build_network(loaded.meta)
        try:
            check_group_norms(net)
        except ValueError as err:
            raise CheckpointError(f"{loaded.path}: {err}") from None
        class_name, module, version = EXPORT_CLASSES["diffusion_scaled" if loaded.meta.scale_condition else kind]
        state = to_physicsnemo(loaded.weights, loaded.meta.unet, kind)
        written.append(write_mdlus(out / f"{kind}.mdlus", class_name, module, export_args(loaded.meta),
                                   {"physicsnemo_version": PHYSICSNEMO_VERSION, "mdlus_file_version": version}, state))
        metas[kind] = loaded.meta
        grid = (loaded.lat.numpy(), loaded.lon.numpy()) if loaded.lat is not None else grid
    if not written:
        raise CheckpointError(f"{run_dir}: no regression/ or diffusion/ checkpoints to export")
    notes = _package_files(out, metas.get("diffusion") or metas["regression"], *grid)
    return written, notes
