"""`corrdiff tune`: the cost/skill trade-off of the samplers, measured on held-out data, and a recommendation.

For every setting of a grid (solver × network evaluations × churn × schedule × σ_min) the ensemble of `members`
members is generated for `times` evenly spaced times of a split (validation by default) with the seeds generation
would use, so every setting sees the same starting noise (common random numbers: differences between settings
are the solvers', not the draws'). Each is scored per channel in physical units against the truth:

    CRPS and fair CRPS, MAE of the ensemble mean, spread/skill (`corrdiff.evaluation.metrics`), and the power
    ratio in the smallest octave, wavelengths 2–4 grid spacings (`corrdiff.evaluation.spectra`; the members'
    mean power over the truth's), the log-spectral distance over all wavenumbers up to Nyquist (mean |log10| of
    the same two spectra's ratio), and the wall-clock seconds per member (regression included, one pass per
    time; the median over times, after one untimed warm-up pass).

Channels are combined by `crps_norm`, the mean over channels of CRPS / (the truth's standard deviation over
the scored pixels), and likewise `crps_fair_norm` and `mae_norm`; `lsd_mean` is the mean LSD over channels.
Per-time sums are kept, so every combined score gets a bootstrap interval over the times, and each setting's
fair CRPS its paired interval of the difference to the best setting's (`corrdiff.experiments.tuning_scores`).

Every decision uses the fair CRPS, whose expectation is lowest at the calibrated spread whatever the number of
members (the usual CRPS of a few members rewards under-dispersion). The recommendation (`tuning_rule.choose`) is the
cheapest setting (fewest network evaluations, then lowest fair CRPS) among the skilful ones — those whose
`crps_fair_norm` is within `tolerance` (1%) of the best, or whose paired difference interval to the best
contains 0, as the scored times cannot tell them from the best — whose `lsd_mean` is within `lsd_tolerance`
(0.05) of the lowest of the skilful ones: as skilful as the best, and with as true a texture as the skilful
ones. Calibration then fits one factor s per channel on the residual of the recommended setting's members
(member = μ + s·r, so a member still depends on its own seed only): the s with the lowest fair CRPS, which
brings spread/skill to about 1. It is fitted and scored on the same times, so its gain is an in-sample
estimate. The test split is tuned on only when asked (`allow_test_split`); the split is recorded in
sampler.yaml, and generation warns when it generates the split its sampler was tuned on.

Each measured setting is logged as soon as it is scored (`corrdiff.experiments.tuning_files.RowLog`): a killed tune, rerun,
measures only what is missing, provided the models, data, seeds and members are the same (`run_fingerprint`).
"""

import dataclasses
import itertools
import logging
import time as clock
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from corrdiff import __version__, arguments, checkpoint as ckpt, locks, sampler_file
from corrdiff.config import RunConfig
from corrdiff.data import DownscalingDataset, load_spec
from corrdiff.diffusion import PatchedDenoiser
from corrdiff.diffusion.sampler import SamplerConfig
from corrdiff.diffusion.solvers import min_network_evaluations, SOLVERS, solvers_for, steps_for
from corrdiff.distributed import pick_device
from corrdiff.errors import ConfigError
from corrdiff.file_integrity import sha256_bytes
from corrdiff.inference import checks, downscale, Fingerprint, load_models
from corrdiff.inference.downscaling import check_fits
from corrdiff.inference.member_batching import MemberBatching
from corrdiff.output_paths import check_not_an_input, check_output, make_folder, spec_inputs
from corrdiff.fast_path import prepare_denoiser
from corrdiff.progress import bar as progress_bar
from corrdiff.seeding import time_seed
from corrdiff.experiments.tuning_files import OUTPUTS, ROWS, RowLog, write_outputs
from corrdiff.experiments.tuning_rule import calibrate, choose, RecommendationRule
from corrdiff.experiments.tuning_scores import bootstrap, combined, LEVEL, PER_CHANNEL, RESAMPLES, Scores, stat_names
from corrdiff.experiments.tuning_scores import SEED as BOOTSTRAP_SEED

log = logging.getLogger(__name__)

NFE = (5, 7, 9, 11, 15, 23, 35)
STUDENT_NFE = (1, 2, 4)  # a consistency student's grid (corrdiff train distill)
STUDENT_SIGMA_MIN = (0.0005, 0.002, 0.008, 0.03, 0.1)
"""A consistency student's σ_min grid: where its log-linear levels end, which places the levels it re-noises to
(NFE 2: τ_1 = sqrt(σ_max·σ_min), 0.63 to 8.9 for σ_max 800). The best level depends on the data and on how far
distillation went (docs/sampling.md, "Few-step student"), so tune measures it."""
CHURN = (0.0,)
HELD_OUT = ("test", "all")  # splits holding the test times: tuned on only with allow_test_split
TUNE_KIND = "an output of corrdiff tune"


def sampler_grid(base: SamplerConfig, solvers=SOLVERS, nfe=NFE, churn=CHURN, schedules=None,
                 sigma_mins=None) -> list[SamplerConfig]:
    """The settings to measure: `base` with each solver (default: every one of `SOLVERS`), schedule, smallest noise
    level σ_min (default: the config's), step count (the most steps within each NFE) and churn (for the solvers
    that take it; the others are measured once, without). Duplicates are dropped, and so is a σ_min that changes
    nothing: one consistency evaluation samples at σ_max alone, so it is measured at the first σ_min only."""
    for solver in solvers:
        arguments.one_of("--solver", solver, list(SOLVERS))
        for evaluations in nfe:
            arguments.whole_number("--nfe", evaluations, min_network_evaluations(solver))
    settings = []
    for solver, schedule, sigma_min in itertools.product(solvers, schedules or (base.schedule,),
                                                         sigma_mins or (base.sigma_min,)):
        for evaluations in sorted(nfe):
            for s_churn in churn if SOLVERS[solver].takes_churn else (0.0,):
                level = sigma_min
                if SOLVERS[solver].consistency and evaluations == 1:
                    level = (sigma_mins or (base.sigma_min,))[0]
                try:
                    setting = dataclasses.replace(base, solver=solver, schedule=schedule, S_churn=float(s_churn),
                                                  sigma_min=float(level),
                                                  num_steps=steps_for(solver, evaluations), residual_scale=())
                except ValueError as err:
                    raise ConfigError(f"tune: {err}") from None
                if setting not in settings:
                    settings.append(setting)
    return settings


@dataclass
class Truth:
    """The scored times: inputs (normalised, (1, C_in, H, W) each), truth (time, C, H, W) in physical units."""

    times: np.ndarray
    conditions: list[torch.Tensor]
    truth: np.ndarray
    seeds: list[int]
    scale: np.ndarray
    """(C,) the truth's standard deviation per channel: divides CRPS and MAE to combine channels."""


def scored_times(dataset, count: int, seed: int, device) -> Truth:
    """`count` evenly spaced times of `dataset` (0: all), with their generation seeds and physical truth."""
    total = len(dataset)
    if total == 0:
        raise ConfigError("tune: the split has no times")
    indices = np.unique(np.linspace(0, total - 1, min(count, total) if count else total).round().astype(int))
    conditions, truth, times, seeds = [], [], [], []
    for index in indices:
        sample = dataset[int(index)]
        if sample.target is None:
            raise ConfigError("tune: the dataset has no targets to score against")
        conditions.append(sample.input[None].to(device))
        truth.append(dataset.stats.denormalize_target(sample.target[None])[0].numpy())
        stamp = np.datetime64(sample.time, "ns")
        times.append(stamp)
        seeds.append(time_seed(seed, stamp))  # as generation seeds a time: members equal generate's
    truth = np.stack(truth).astype(np.float32)
    return Truth(np.array(times), conditions, truth, seeds, np.nanstd(truth, axis=(0, 2, 3)))


@dataclass
class Run:
    """What generating with one setting needs besides the setting."""

    models: object  # corrdiff.inference.downscaling.Models
    truth: Truth
    members: int
    batching: MemberBatching  # members at once, as generation chooses them
    patcher: PatchedDenoiser | None
    fingerprint: Fingerprint  # what determines the scores, besides the setting: when logged rows may be reused
    regression_mae: np.ndarray | None = None
    """(C,) the regression mean's MAE over the scored times, physical units: what an ensemble's CRPS must beat."""


@torch.no_grad()
def regression_mae(models, truth: Truth) -> np.ndarray:
    """(C,) MAE of the regression mean μ over the scored times, per channel, physical units (float64 sums)."""
    errors = [np.abs(models.meta.stats.denormalize_target(models.regression(condition).float().cpu())[0].numpy()
                     - target).astype(np.float64).mean(axis=(1, 2))
              for condition, target in zip(truth.conditions, truth.truth)]
    return np.mean(errors, axis=0)


def measure(run: Run, sampler: SamplerConfig, bar=None, keep: bool = False):
    """The per-time `Scores` of `sampler` over the run's times, seconds per member (the median over times: robust
    to other work on a shared machine), and (with `keep`) the normalised (mean, ensemble) of each time for
    calibration."""
    stats = run.models.meta.stats
    truth = run.truth.truth
    scores = Scores(truth.shape[1], run.members, truth.shape[2:])
    seconds, kept = [], []
    for t, (condition, seed) in enumerate(zip(run.truth.conditions, run.truth.seeds)):
        start = clock.perf_counter()
        mean, ensemble = run.batching.run(
            lambda size: downscale(run.models, condition, run.members, seed, sampler, size, run.patcher))
        mean, ensemble = mean.cpu(), ensemble.cpu()  # waits for the device: the time is the work's
        seconds.append(clock.perf_counter() - start)
        scores.add(stats.denormalize_target(ensemble).numpy(), truth[t], t)
        if keep:
            kept.append((mean, ensemble))
        if bar is not None:
            bar.update()
    return scores, float(np.median(seconds)) / run.members, kept


def build_table(settings: list[SamplerConfig], results: list[Scores], seconds: list, truth: Truth, channels,
                resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> xr.Dataset:
    """The measured grid as a Dataset: per-channel scores (setting, channel), combined scores and their bootstrap
    intervals (setting), and the per-time sums and spectra they come from (`corrdiff.experiments.tuning_scores`)."""
    members = results[0].members
    per_channel = {k: np.stack([r.result()[k] for r in results]) for k in PER_CHANNEL}
    data = {k: (("setting", "channel"), v) for k, v in per_channel.items()}
    data["seconds_per_member"] = (("setting",), np.array(seconds))
    scores = combined(per_channel, truth.scale)
    data |= {k: (("setting",), v) for k, v in scores.items()}
    arrays = [r.arrays() for r in results]
    sums, power = np.stack([a["sums"] for a in arrays]), np.stack([a["power"] for a in arrays])
    best = int(np.nanargmin(scores["crps_fair_norm"])) if np.isfinite(scores["crps_fair_norm"]).any() else 0
    intervals = bootstrap(sums, power, arrays[0]["true_power"], members, arrays[0]["wavenumber"], truth.scale, best,
                          resamples, seed)
    data |= {k: (("setting",), v) for k, v in intervals.items()}
    data["sums"] = (("setting", "time", "channel", "stat"), sums)
    data["power"] = (("setting", "time", "channel", "wavenumber"), power)
    data["true_power"] = (("time", "channel", "wavenumber"), arrays[0]["true_power"])
    coords = {"setting": np.arange(len(settings)), "channel": list(channels),
              "solver": ("setting", [s.solver for s in settings]),
              "schedule": ("setting", [s.schedule for s in settings]),
              "num_steps": ("setting", [s.num_steps for s in settings]),
              "network_evaluations": ("setting", [s.network_evaluations for s in settings]),
              "S_churn": ("setting", [s.S_churn for s in settings]),
              "sigma_min": ("setting", [s.sigma_min for s in settings]),
              "truth_std": ("channel", truth.scale.astype(np.float64)), "time": truth.times,
              "stat": stat_names(members), "wavenumber": arrays[0]["wavenumber"]}
    table = xr.Dataset(data, coords)
    table.attrs.update(members=members, bootstrap_resamples=resamples, bootstrap_seed=seed,
                       bootstrap_level=LEVEL, best=best)
    return table


@dataclass
class TuneResult:
    table: xr.Dataset
    recommendation: sampler_file.Recommendation
    best: int
    chosen: int
    paths: list[Path]


@dataclass(frozen=True)
class TuneGrid:
    """The sampler settings to measure: each solver × network evaluations × churn × schedule × σ_min, on the
    config's sampler (`sampler_grid`)."""

    solvers: Sequence[str] = dataclasses.field(default_factory=lambda: tuple(SOLVERS))
    """Every solver by default (read when the grid is made, so a solver added to `SOLVERS` is in it); of every
    solver, tune measures those that can sample the diffusion checkpoint (`grid_solvers`): the consistency solver
    for a consistency student, the others for a denoiser."""
    nfe: Sequence[int] | None = None
    """Network evaluations per member: each solver gets the most steps within each. None: `NFE`, for a consistency
    student `STUDENT_NFE`."""
    churn: Sequence[float] = CHURN
    """S_churn, for the solvers that take it (their `SOLVERS` entry lists `S_churn`; the others are measured once, without)."""
    schedules: Sequence[str] | None = None
    """karras or loglinear; None: the config's."""
    sigma_mins: Sequence[float] | None = None
    """Smallest noise levels the sampler stops at; None: the config's sampler.sigma_min, for a consistency student
    `STUDENT_SIGMA_MIN`."""


@dataclass(frozen=True)
class TuneRequest:
    """What a tune reads and scores: the two checkpoints, and members for evenly spaced times of a split."""

    regression: Path | str
    """The regression checkpoint: a checkpoint folder or a run folder."""
    diffusion: Path | str
    """The diffusion checkpoint, likewise."""
    split: str = "validation"
    """The split scored; it needs targets."""
    allow_test_split: bool = False
    """Tune on the test split (or all times, which hold it): its scores are then no longer held out."""
    times: int = 32
    """Evenly spaced times of the split scored (0: all)."""
    members: int = 8
    """Ensemble members per time (at least 2: spread needs two)."""
    dataset: object = None
    """The dataset scored, with targets; None: the config's spec, `split`."""


@dataclass(frozen=True)
class TuneOutputs:
    """Where a tune writes: tune.csv, tune.nc, tune.png (and its row log) in `folder`, and the recommendation."""

    folder: Path | None = None
    """None: <run_dir>/tune."""
    recommendation: Path | None = None
    """The recommended sampler (sampler.yaml); None: <run_dir>/sampler.yaml, where generate finds it."""
    overwrite: bool = False
    """Replace the outputs of an earlier tune."""
    progress: bool = True
    """A progress bar of the times measured."""


def grid_solvers(solvers: Sequence[str], meta, checkpoint) -> list[str]:
    """The solvers to measure on diffusion checkpoint `checkpoint` (its `CheckpointMeta` `meta`): of every solver
    (the grid's default), those that can sample it; else `solvers`, a ConfigError naming one that cannot."""
    fitting = solvers_for(meta.student is not None)
    if set(solvers) == set(SOLVERS):
        return fitting
    for name in solvers:
        if name in SOLVERS and name not in fitting:  # an unknown name is refused by `sampler_grid`, with the choices
            kind = "a consistency student" if meta.student is not None else "a denoiser"
            raise ConfigError(f"tune: --solver {name} cannot sample {checkpoint}, {kind}; choose from "
                              f"{', '.join(fitting)}")
    return list(solvers)


def check_split(split: str, allow_test_split: bool) -> None:
    """A ConfigError, naming --allow-test-split, for a split that holds the test times unless it is allowed."""
    if split in HELD_OUT and not allow_test_split:
        raise ConfigError(f"tune: --split {split} holds the test times, which the final scores need held out from "
                          "the choice of sampler; tune on --split validation, or pass --allow-test-split")


def tune_files(out_dir, recommendation_path) -> list[Path]:
    """The files a tune writes: its tables in `out_dir`, and the recommended sampler."""
    return [Path(out_dir) / name for name in OUTPUTS] + [Path(recommendation_path)]


def check_outputs(paths: list[Path], overwrite: bool, inputs: dict[str, list] | None = None) -> None:
    """An OutputError before any work when an output is, lies inside or holds one of the command's `inputs`
    ({role: paths}), or exists and `overwrite` is not given (`corrdiff.output_paths`)."""
    for path in paths:
        check_output(path, inputs or {}, TUNE_KIND, lambda found: found.is_file(), overwrite, option="output")


def tune_inputs(config: RunConfig, request: TuneRequest) -> dict[str, list]:
    """What a tune reads, by role: the checkpoints, the run config, the dataset spec and its files."""
    read = checks.checkpoint_inputs({"regression": request.regression, "diffusion": request.diffusion})
    read["the run config"] = [config.source] if config.source else []
    spec = getattr(request.dataset, "spec", None) if request.dataset is not None else load_spec(config.data)
    return read | (spec_inputs(spec) if spec is not None else {})


def tune(config: RunConfig, request: TuneRequest, grid: TuneGrid | None = None,
         rule: RecommendationRule = RecommendationRule(), outputs: TuneOutputs = TuneOutputs()) -> TuneResult:
    """Measure the `grid` on the times of `request`, recommend a sampler by `rule`, calibrate it, and write
    tune.csv, tune.nc, tune.png in `outputs.folder` (default <run_dir>/tune) and the recommendation at
    `outputs.recommendation` (default <run_dir>/sampler.yaml). `config` gives the base sampler, the seed and
    generation's patches, fast path and member batching.

    Settings already measured by an interrupted tune of the same models and data (its row log in the folder)
    are not measured again. The test split (or all times, which hold it) is refused unless
    `request.allow_test_split`: scores on it would no longer be held out from the choice of sampler. One tune
    at a time writes the folder (`corrdiff.locks`)."""
    check_split(request.split, request.allow_test_split)
    if config.sampler.arithmetic != "edm":
        raise ConfigError(f"tune: sampler.arithmetic is {config.sampler.arithmetic}, which reproduces another "
                          "implementation's sampling rather than choosing corrdiff's; tune with arithmetic: edm")
    if request.members < 2:
        raise ConfigError(f"tune: --members must be at least 2 (spread needs two), got {request.members}")
    arguments.whole_number("--times", request.times, 0)
    arguments.at_least("--tolerance", rule.tolerance, 0)
    if rule.lsd_tolerance is not None:
        arguments.at_least("--lsd-tolerance", rule.lsd_tolerance, 0)
    grid = grid if grid is not None else TuneGrid()
    for solver in grid.solvers:  # the arguments first, then the checkpoint they are for
        arguments.one_of("--solver", solver, list(SOLVERS))
    meta = ckpt.load_meta(request.diffusion, kind="diffusion")
    student = meta.student is not None
    nfe = grid.nfe or (STUDENT_NFE if student else NFE)
    sigma_mins = grid.sigma_mins or (STUDENT_SIGMA_MIN if student else None)
    # A student's base is its own recommended sampler unless the config's can sample it (`checks.sampler_for`).
    settings = sampler_grid(checks.sampler_for(config.sampler, meta), grid_solvers(grid.solvers, meta,
                            request.diffusion), nfe, grid.churn, grid.schedules, sigma_mins)
    if not settings:
        raise ConfigError("tune: the grid is empty (give at least one solver and one NFE)")
    folder = Path(outputs.folder) if outputs.folder is not None else Path(config.run_dir) / "tune"
    recommendation_path = Path(outputs.recommendation or sampler_file.path_in(config.run_dir))
    outputs = dataclasses.replace(outputs, folder=folder, recommendation=recommendation_path)
    read_by_role = tune_inputs(config, request)
    check_not_an_input(folder, read_by_role)
    make_folder(folder)
    with locks.for_output(folder):
        check_outputs(tune_files(folder, recommendation_path), outputs.overwrite, read_by_role)
        return _tune(config, request, settings, rule, outputs)


def _tune(config: RunConfig, request: TuneRequest, settings: list[SamplerConfig], rule: RecommendationRule,
          outputs: TuneOutputs) -> TuneResult:
    """`tune` of checked settings into checked, locked outputs (`outputs` with both paths settled)."""
    run = _prepare(config, request)
    channels = list(run.models.meta.target_channels)
    passes = len(run.truth.times) * (len(settings) + (1 if rule.calibration else 0))
    row_log = RowLog(outputs.folder / ROWS, run.fingerprint)
    resumed = [s for s in settings if row_log.get(s) is not None]
    if resumed:
        log.info(f"{row_log.path}: {len(resumed)} of {len(settings)} settings measured by an interrupted tune; "
                 "measuring the rest")
    scores_of_settings, seconds_per_member = [], []
    with progress_bar(total=passes, desc="tune", unit="time", disable=not outputs.progress) as bar:
        for setting in settings:
            measured = row_log.get(setting)  # (scores, seconds per member), of an interrupted tune
            if measured is None:
                bar.set_postfix_str(f"{setting.solver} NFE {setting.network_evaluations} churn {setting.S_churn:g}")
                measured = measure(run, setting, bar)[:2]
                row_log.add(setting, *measured)
            else:
                bar.update(len(run.truth.times))
            scores_of_settings.append(measured[0])
            seconds_per_member.append(measured[1])
        table = build_table(settings, scores_of_settings, seconds_per_member, run.truth, channels)
        if run.regression_mae is not None:  # the trust rule "CRPS worse than the regression mean's MAE"
            table = table.assign_coords(regression_mae=("channel", run.regression_mae))
        chosen = choose(table, rule.tolerance, rule.lsd_tolerance)
        recommended = settings[chosen]
        if rule.calibration:
            bar.set_postfix_str("calibration")
            _, _, kept_fields = measure(run, recommended, bar, keep=True)
            calibration = calibrate(kept_fields, run.truth.truth, run.models.meta.stats)
            table = table.merge(calibration)
            if not np.allclose(calibration["residual_scale"].values, 1.0):
                recommended = dataclasses.replace(
                    recommended, residual_scale=tuple(calibration["residual_scale"].values.tolist()))
    best = int(table.attrs["best"])
    table["recommended"] = ("setting", np.arange(len(settings)) == chosen)
    lsd_rule = float(rule.lsd_tolerance) if rule.lsd_tolerance is not None else float("inf")
    table.attrs.update(title="corrdiff tune", split=request.split, times=len(run.truth.times),
                       members=request.members, seed=config.generate.seed, tolerance=rule.tolerance,
                       lsd_tolerance=lsd_rule, recommended=chosen, resumed_settings=len(resumed),
                       fingerprint=run.fingerprint.digest,
                       comment="crps_norm, crps_fair_norm, mae_norm: mean over channels of the score / truth_std; "
                               "lsd_mean: mean over channels of the log-spectral distance; <score>_low, _high: "
                               f"central {LEVEL:.0%} of the score over {RESAMPLES} bootstrap resamples of the "
                               "times; crps_fair_norm_diff_low, _high: the same for the fair CRPS minus the best "
                               "setting's, paired (the same resampled times); sums, power, true_power: per time")
    difference_interval = [float(table["crps_fair_norm_diff_low"][chosen]),
                           float(table["crps_fair_norm_diff_high"][chosen])]
    record = {"split": request.split, "times": len(run.truth.times), "members": request.members,
              "seed": config.generate.seed, "tolerance": rule.tolerance, "lsd_tolerance": lsd_rule,
              "network_evaluations": recommended.network_evaluations,
              "crps_fair_norm": float(table["crps_fair_norm"][chosen]),
              "best_crps_fair_norm": float(table["crps_fair_norm"][best]),
              "crps_fair_norm_diff_interval": difference_interval,
              "interval": f"central {LEVEL:.0%} of {RESAMPLES} bootstrap resamples of the times, paired",
              "crps_norm": float(table["crps_norm"][chosen]), "best_crps_norm": float(table["crps_norm"][best]),
              "lsd_mean": float(table["lsd_mean"][chosen]), "best_lsd_mean": float(table["lsd_mean"][best]),
              "setting": label(settings[chosen]),
              "best": label(settings[best]), "seconds_per_member": float(table["seconds_per_member"][chosen]),
              "table": str(outputs.folder / "tune.nc")}
    recommendation = sampler_file.Recommendation(
        recommended, run.models.provenance["diffusion_checkpoint_sha256"], tuple(channels), record)
    written = write_outputs(table, recommendation, outputs.folder, outputs.recommendation)
    row_log.remove()  # the outputs hold every row now
    return TuneResult(table, recommendation, best, chosen, written)


def _prepare(config: RunConfig, request: TuneRequest) -> Run:
    """Models on the configured device, with generation's fast path, patches and member batching; the scored
    times."""
    generation = config.generate
    members = request.members
    device = pick_device(config.device)
    models = load_models(request.regression, request.diffusion, device)
    dataset = request.dataset
    if dataset is None:
        dataset = DownscalingDataset(load_spec(config.data), split=request.split, stats=models.meta.stats,
                                     with_target=True)
    patch_shape, patcher, batching = on_generation_path(config, models, dataset, members, device)
    truth = scored_times(dataset, request.times, generation.seed, device)
    fingerprint = run_fingerprint(models, truth, request.split, members, generation.seed, patch_shape,
                                  generation.patch_overlap)
    run = Run(models, truth, members, batching, patcher, fingerprint, regression_mae(models, truth))
    # One untimed pass first: lazy initialisation, compilation, CUDA graphs and the GPU's member batch are
    # not the solvers' cost.
    warm_up = dataclasses.replace(config.sampler, solver="euler" if models.meta.student is None else "consistency",
                                  num_steps=2, S_churn=0.0, residual_scale=())
    batching.run(lambda size: downscale(models, run.truth.conditions[0], members, 0, warm_up, size, patcher))
    return run


def on_generation_path(config: RunConfig, models, dataset, members: int, device):
    """`models` checked against `dataset` and put on generation's fast path; the patch shape, the patcher and the
    member batching that `corrdiff generate` would use: (patch_shape or None, PatchedDenoiser or None,
    MemberBatching)."""
    generation = config.generate
    check_fits(models, dataset)
    patch_shape = checks.generation_patches("patch_shape" in generation.model_fields_set, generation.patch_shape,
                                            models.meta)
    checks.check_patches(patch_shape, generation.patch_overlap, dataset.lat.shape, models.meta.unet.channel_mult)
    models.fast = generation.fast_path(device)
    models.denoiser = prepare_denoiser(models.denoiser, models.fast)
    patcher = None
    if patch_shape:
        patcher = PatchedDenoiser(tuple(dataset.lat.shape), tuple(patch_shape), tuple(generation.patch_overlap),
                                  condition=models.condition)
    return patch_shape, patcher, MemberBatching(generation.member_batch, members, device)


def run_fingerprint(models, truth: Truth, split: str, members: int, seed: int, patch_shape,
                    patch_overlap) -> Fingerprint:
    """What determines a setting's scores besides the setting: checkpoints, the scored inputs and truth (their
    bytes), times, seed, members, patches, precision and corrdiff's version. Not the device or member batch,
    which only reorder float32 arithmetic (seconds per member are reused as measured)."""
    def digest(arrays) -> str:
        return sha256_bytes(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))

    return Fingerprint({
        "corrdiff_version": __version__,
        "regression_checkpoint_sha256": models.provenance["regression_checkpoint_sha256"],
        "diffusion_checkpoint_sha256": models.provenance["diffusion_checkpoint_sha256"],
        "split": split, "seed": int(seed), "members": int(members),
        "times": [str(np.datetime64(t, "s")) for t in truth.times],
        "inputs_sha256": digest([c.float().cpu().numpy() for c in truth.conditions]),
        "truth_sha256": digest([truth.truth]),
        "patch_shape": list(patch_shape) if patch_shape else None,
        "patch_overlap": list(patch_overlap) if patch_shape else None,
        "bf16": bool(models.fast.bf16)})


def label(sampler: SamplerConfig) -> str:
    """One line naming a setting: solver, schedule, steps, evaluations, churn and a σ_min other than the default."""
    churn = f", S_churn {sampler.S_churn:g}" if sampler.S_churn else ""
    churn += f", sigma_min {sampler.sigma_min:g}" if sampler.sigma_min != SamplerConfig().sigma_min else ""
    return f"{sampler.solver} ({sampler.schedule}), {sampler.num_steps} steps, NFE {sampler.network_evaluations}{churn}"
