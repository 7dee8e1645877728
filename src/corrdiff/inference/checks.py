"""Checks made before anything is generated: the two checkpoints belong together, they fit the data, and the
output format follows its name (where it may be written is `corrdiff.output_paths`'s). Each error names both sides
and what differs.
While generating, inputs far outside the range the model was trained on are warned about (`InputRanges`)."""

import logging
from pathlib import Path

import numpy as np

from corrdiff import checkpoint as ckpt, ensemble_file
from corrdiff.diffusion import SamplerConfig
from corrdiff.diffusion.solvers import solvers_for, SOLVERS
from corrdiff.errors import CheckpointError, ConfigError, DataError
from corrdiff.interop.physicsnemo import physicsnemo_problem

log = logging.getLogger(__name__)
GRID_TOLERANCE_DEG = 1e-4  # ~10 m: the same grid read from float32 and float64 files agrees far closer
# "Far outside" the training range: beyond min/max by more than this fraction of the 0.1–99.9 percentile span,
# for more than OUTSIDE_FRACTION of a time's points (a wrong unit moves nearly all of them; a record, a few).
RANGE_MARGIN = 0.5
OUTSIDE_FRACTION = 0.01


def check_arithmetic(arithmetic: str, meta, checkpoint: str, *networks) -> None:
    """A ConfigError when `arithmetic` (`sampler.arithmetic`) is physicsnemo and PhysicsNeMo's CorrDiff cannot run
    the `networks` of diffusion checkpoint `checkpoint` (its `CheckpointMeta` `meta`): nothing to reproduce."""
    if arithmetic != "physicsnemo":
        return
    problem = physicsnemo_problem(meta, *networks)
    if problem:
        raise ConfigError(f"sampler.arithmetic: physicsnemo reproduces PhysicsNeMo's CorrDiff, which cannot run "
                          f"{checkpoint}: {problem}; use sampler.arithmetic: edm")


def check_solver(sampler: SamplerConfig, meta, checkpoint: str) -> None:
    """A ConfigError, in one line, when `sampler.solver` cannot sample diffusion checkpoint `checkpoint` (its
    `CheckpointMeta` `meta`): a consistency student samples with a consistency solver only, a denoiser with the
    others only."""
    student = meta.student is not None
    if SOLVERS[sampler.solver].consistency == student:
        return
    if student:
        recommended = meta.student.recommended_sampler()
        raise ConfigError(f"sampler.solver: {checkpoint} is a consistency student (corrdiff train distill), which "
                          f"samples with solver {' or '.join(solvers_for(True))} only, not {sampler.solver}; set "
                          f"sampler.solver: {recommended.solver} (its recommended sampler: {recommended.num_steps} "
                          f"steps, {recommended.schedule} levels from {recommended.sigma_max:g} to "
                          f"{recommended.sigma_min:g}), or leave the sampler section out")
    raise ConfigError(f"sampler.solver: {sampler.solver} samples a consistency student (corrdiff train distill), but "
                      f"{checkpoint} is a denoiser; use one of {', '.join(solvers_for(False))}, or give the student "
                      "(<run_dir>/distill) as the diffusion checkpoint")


def sampler_for(sampler: SamplerConfig, meta) -> SamplerConfig:
    """`sampler`, unless it cannot sample the diffusion checkpoint described by `meta` and that checkpoint is a
    consistency student: then the student's recommended sampler. Used where no one chose the sampler for this
    checkpoint (a config without a sampler section, a model package, tune's base); a chosen one is checked by
    `check_solver`."""
    if meta.student is None or SOLVERS[sampler.solver].consistency:
        return sampler
    return meta.student.recommended_sampler()


def trained_input_units(meta) -> dict[str, str] | None:
    """{input channel: the CF units it was trained in} of a checkpoint's `CheckpointMeta`, for the data layer
    to read generation inputs in (converting compatible units, refusing others); None when the checkpoint does
    not record them (older or imported checkpoints)."""
    if not meta.input_units:
        return None
    return {name: units for name, units in zip(meta.input_channels, meta.input_units) if units}


class InputRanges:
    """Warns, once per channel, when a generation input falls far outside the values seen in training.

    `meta`: the checkpoint's `CheckpointMeta` (its `input_ranges`, and `stats` to undo the normalisation);
    `checkpoint` names it in the warning. Does nothing for checkpoints without recorded ranges.
    """

    def __init__(self, meta, checkpoint: str = "the checkpoint"):
        self.meta, self.checkpoint = meta, checkpoint
        self.warned: set[str] = set()

    def check(self, normalised_input, time) -> list[str]:
        """Check one time's normalised input (C_in, H, W) (tensor or array); returns the channels warned about now."""
        ranges = self.meta.input_ranges
        if not ranges or len(self.warned) == len(ranges):
            return []
        values = self.meta.stats.input.denormalize(np.asarray(
            normalised_input.detach().cpu() if hasattr(normalised_input, "detach") else normalised_input, np.float64))
        units = self.meta.input_units or ("",) * len(ranges)
        warned = []
        for name, found, trained, unit in zip(self.meta.input_channels, values, ranges, units):
            if name in self.warned:
                continue
            line = out_of_range(name, found, trained, unit, time, self.checkpoint)
            if line:
                log.warning(line)
                self.warned.add(name)
                warned.append(name)
        return warned


def out_of_range(name: str, values: np.ndarray, trained, units: str, time, checkpoint: str) -> str | None:
    """One warning line when more than OUTSIDE_FRACTION of `values` (physical units) lie far outside `trained`
    (a `ChannelRange`); None otherwise."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    margin = RANGE_MARGIN * max(trained.high - trained.low, trained.max - trained.min, 1e-12)
    outside = (finite < trained.min - margin) | (finite > trained.max + margin)
    if outside.mean() <= OUTSIDE_FRACTION:
        return None
    unit = f" {units}" if units else ""
    return (f"input {name!r} at {str(time)[:19]}: {outside.mean():.0%} of its values lie far outside the range it was "
            f"trained on ({finite.min():.4g} … {finite.max():.4g}, trained {trained.min:.4g} … {trained.max:.4g}"
            f"{unit}, checkpoint {checkpoint}); check its units and source")


def pairing_problems(regression, diffusion, regression_sha256: str) -> list[str]:
    """Why the diffusion checkpoint was not trained against this regression checkpoint ([] when it was).

    `regression`, `diffusion`: loaded `corrdiff.checkpoint.ModelCheckpoint`s. Channel lists that differ are
    an error at once (no generation could run); a different regression or normalisation is a problem that
    `--allow-mismatch` lets through.
    """
    for key in ("input_channels", "target_channels"):
        mine, theirs = getattr(regression.meta, key), getattr(diffusion.meta, key)
        if mine != theirs:
            raise ConfigError(f"{key} differ: regression {regression.path} has {list(mine)}, "
                              f"diffusion {diffusion.path} has {list(theirs)}")
    problems = []
    reference = diffusion.meta.regression_checkpoint
    if reference is None:
        problems.append(f"{diffusion.path} does not record which regression checkpoint it was trained against")
    elif reference.sha256 != regression_sha256:
        problems.append(f"{diffusion.path} was trained against regression {reference.path} "
                        f"(sha256 {reference.sha256[:12]}…), not {regression.path} (sha256 {regression_sha256[:12]}…)")
    if not same_stats(regression.meta.stats, diffusion.meta.stats):
        problems.append(f"{regression.path} and {diffusion.path} normalise with different statistics")
    return problems


def refuse_mismatch(problems: list[str]) -> None:
    """A CheckpointError listing the pairing problems and the two ways on."""
    if problems:
        raise CheckpointError("; ".join(problems) + ": pass the regression checkpoint the diffusion model was "
                              "trained with (--checkpoint-regression), or --allow-mismatch to generate anyway "
                              "(recorded in the output's attributes)")


def same_stats(a, b) -> bool:
    """Whether two `Normalization`s transform every channel alike (their `info` aside)."""
    return all(getattr(a, part).to_dict() == getattr(b, part).to_dict() for part in ("input", "target"))


def check_channels(kind: str, data_channels, checkpoint_channels, data_where: str, checkpoint_path) -> None:
    """A DataError when the data's `kind` ("input"/"target") channels are not the checkpoint's, in order."""
    data, trained = list(data_channels), list(checkpoint_channels)
    if not data or data == trained:
        return  # a dataset without targets has no target channels to compare
    missing, extra = [c for c in trained if c not in data], [c for c in data if c not in trained]
    detail = ", ".join(filter(None, [f"missing {missing}" if missing else "", f"extra {extra}" if extra else ""]))
    raise DataError(f"{data_where}: the data gives {kind} channels {data}, checkpoint {checkpoint_path} was trained "
                    f"on {trained} ({detail or 'in another order'})")


def spec_channels(spec) -> tuple[list[str], list[str]]:
    """The (input, target) channels a dataset spec gives: its inputs then static fields, and its targets."""
    inputs = list(spec.inputs.variables) + (list(spec.static.variables) if spec.static else [])
    return inputs, list(spec.targets.variables) if spec.targets else []


def check_trained_grid(lat: np.ndarray, lon: np.ndarray, data_where: str, checkpoint_path, trained_lat, trained_lon) -> None:
    """A DataError when the data's fine grid (H, W) is not the one the checkpoint was trained on."""
    if trained_lat is None or trained_lon is None:
        return  # a checkpoint that records no grid
    trained_lat, trained_lon = np.asarray(trained_lat, np.float64), np.asarray(trained_lon, np.float64)
    if trained_lat.shape != np.shape(lat):
        raise DataError(f"{data_where}: the fine grid is {np.shape(lat)[0]}×{np.shape(lat)[1]}, checkpoint "
                        f"{checkpoint_path} was trained on {trained_lat.shape[0]}×{trained_lat.shape[1]}")
    dlat = float(np.max(np.abs(np.asarray(lat) - trained_lat)))
    dlon = float(np.max(np.abs((np.asarray(lon) - trained_lon + 180.0) % 360.0 - 180.0)))  # 359.9° = -0.1°
    if max(dlat, dlon) > GRID_TOLERANCE_DEG:
        raise DataError(f"{data_where}: the fine grid differs from the one checkpoint {checkpoint_path} was trained "
                        f"on: max |Δlat| = {dlat:.3g}°, max |Δlon| = {dlon:.3g}°")


def generation_patches(explicit: bool, configured, meta) -> tuple[int, int] | None:
    """The patch shape to sample with: generate.patch_shape when set (`explicit`), else the one the diffusion
    checkpoint was trained on. A network trained with global context must sample on its training patches:
    resized to other patches (or to none, the whole domain) the context would mean something else."""
    patch = tuple(configured) if explicit and configured else (None if explicit else meta.patch_shape)
    if meta.unet.global_context:
        trained = meta.patch_shape
        if trained is None and patch is None:
            raise ConfigError("generate.patch_shape: this diffusion network was trained on patches with global "
                              "context, and its checkpoint does not say which; set generate.patch_shape to the "
                              "training patch (diffusion.patch_shape of its run config)")
        if trained is not None and patch != trained:
            shown = "none (the whole domain)" if patch is None else f"{patch[0]}×{patch[1]}"
            raise ConfigError(f"generate.patch_shape: {shown}, but this diffusion network was trained on "
                              f"{trained[0]}×{trained[1]} patches with global context, which means a whole domain "
                              f"resized to that patch; sample on {list(trained)} (the default: leave it unset)")
    return patch


def check_patches(patch_shape, overlap, grid_shape, channel_mult) -> None:
    """A ConfigError naming generate.patch_shape or generate.patch_overlap when the patches cannot tile the fine
    grid (H, W) or do not fit a network with `channel_mult` levels (sides multiples of 2^(levels-1))."""
    if patch_shape is None:
        return
    (patch_h, patch_w), (over_h, over_w), (height, width) = patch_shape, overlap, grid_shape
    divisor = 2 ** (len(channel_mult) - 1)
    if not (0 < patch_h <= height and 0 < patch_w <= width) or patch_h % divisor or patch_w % divisor:
        raise ConfigError(f"generate.patch_shape: {patch_h}×{patch_w} must fit the fine grid {height}×{width} and "
                          f"have sides that are multiples of {divisor} (the checkpoint's network has "
                          f"{len(channel_mult)} levels); change it, or leave it unset to sample the whole grid")
    if not (0 <= over_h < patch_h and 0 <= over_w < patch_w):
        raise ConfigError(f"generate.patch_overlap: {over_h}×{over_w} must be at least 0 and smaller than the "
                          f"patch {patch_h}×{patch_w}")


def output_format(out: Path, configured: str, explicit: bool) -> str:
    """The output format: from the suffix of `out` (.zarr, .nc, .nc4), else the configured one.

    `explicit`: the format was given (--format or generate.format); one that contradicts the suffix is an error.
    """
    by_suffix = ensemble_file.format_from_suffix(out)
    if by_suffix is None:
        return "zarr" if ensemble_file.is_zarr(out) else configured
    if explicit and by_suffix != configured:
        raise ConfigError(f"--out {out} names a {by_suffix} file (suffix {Path(out).suffix}) but generate.format "
                          f"is {configured!r}: change one of them")
    return by_suffix


def checkpoint_inputs(paths: dict, which: str = "best") -> dict[str, list[Path]]:
    """{"the <kind> checkpoint": [the path as given, the checkpoint folder it resolves to]} for each {kind: path}
    (None: left out): inputs that a command never writes over (`corrdiff.output_paths`). A path that does not
    resolve is listed as given; loading it says what is wrong."""
    found = {}
    for kind, path in paths.items():
        if path is None:
            continue
        found[f"the {kind} checkpoint"] = [Path(path)]
        try:
            found[f"the {kind} checkpoint"].append(ckpt.resolve(path, which))
        except CheckpointError:
            pass
    return found


def input_files(dataset) -> tuple[list[Path], Path | None]:
    """The input files whose contents make the values (the spec's inputs and static fields) and the spec file."""
    spec = getattr(dataset, "spec", None)
    if spec is None:
        return [], None  # a dataset given in memory: its grid and times still enter the fingerprint
    files = spec.files(spec.inputs, "inputs") + (spec.files(spec.static, "static") if spec.static else [])
    return files, spec.source_file
