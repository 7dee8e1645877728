"""The Python API: `corrdiff.load(path)` gives a `Downscaler`, which downscales coarse fields given as xarray.

    import corrdiff, xarray as xr
    model = corrdiff.load("model/")                      # a model package, a run folder, or (regression, diffusion)
    ens = model.downscale(xr.open_dataset("forecast.nc"), members=8, seed=0)
    ens["t2m"]                                           # (time, member, y, x), with lat/lon and t2m_regression

The inputs are read by the model's dataset-spec rules (variable names and `rename`, levels such as `t@850`, the time
axis, units), interpolated to the fine grid, followed by the static fields and normalised with the checkpoint's
statistics. The result is the dataset `corrdiff generate` writes, in memory: the same values, attributes and
fingerprint, since both call `corrdiff.inference.downscaling.downscale_time` for each time (docs/api.md).
"""

import dataclasses
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from pydantic import ValidationError

from corrdiff import arguments, ensemble_file
from corrdiff.inference import model_package
from corrdiff.checkpoint import POINTERS
from corrdiff.config import CoherenceSection, load_config
from corrdiff.diffusion import SamplerConfig
from corrdiff.diffusion.sampler import use_arithmetic
from corrdiff.distributed import pick_device
from corrdiff.ensemble_file import FLAG, regression_name
from corrdiff.errors import CheckpointError, ConfigError, OutputError, validation_problems
from corrdiff.inference import checks, coherence as time_series
from corrdiff.inference.context import output_context
from corrdiff.inference.downscaling import check_fits, downscale_time, ensemble_attrs, generation_fingerprint_of, \
    prepare, resolve_patches, Sampling, select_times, series_latents
from corrdiff.data.open_inputs import argument_errors, input_paths, OPENED
from corrdiff.inference.input_members import downscale_members, InputMembers, open_members, rules_with_member
from corrdiff.inference.inputs import CoarseInputs
from corrdiff.inference.writer import first_nonfinite_field
from corrdiff.inference.model_package import Package
from corrdiff.progress import bar as progress_bar


def load(path, *, config=None, which: str = "best", device: str = "auto", allow_mismatch: bool = False) -> "Downscaler":
    """A `Downscaler` from a model package folder (`corrdiff export`), a run folder (regression/, diffusion/), or a
    (regression, diffusion) pair of checkpoint folders.

    Checkpoints are read with the dataset spec of `config` (a run config file; default: the run config recorded in
    the diffusion checkpoint), which gives the input rules and the static fields. `which`: "best" (lowest validation
    loss), "best-crps" (the diffusion checkpoint of the lowest validation fair CRPS, `corrdiff.checkpoint.POINTERS`;
    the regression's best) or "latest" checkpoint of a run folder. `device`: "auto" (CUDA when there is one), "cpu", "cuda:N".
    """
    arguments.one_of("which", which, POINTERS)  # also for a package, which holds one checkpoint of each kind
    run_config = load_config(config) if config is not None else None
    if isinstance(path, (tuple, list)):
        if len(path) != 2:
            raise ConfigError(f"give a (regression, diffusion) pair of checkpoints, got {len(path)} paths")
        package = model_package.from_checkpoints(*path, config=run_config, which=which, allow_mismatch=allow_mismatch)
    elif model_package.is_package(path):
        package = model_package.load(path)
    elif (Path(path) / "diffusion").is_dir() and (Path(path) / "regression").is_dir():
        package = model_package.from_checkpoints(Path(path) / "regression", Path(path) / "diffusion", run_config,
                                                 run_dir=path, which=which, allow_mismatch=allow_mismatch)
    elif (Path(path) / model_package.META).exists():
        package = model_package.load(path)  # says what is wrong with it
    else:
        raise CheckpointError(f"{path}: neither a model package (model.json) nor a run folder (regression/ and "
                              "diffusion/); give one of them, or a (regression, diffusion) pair of checkpoints")
    return Downscaler(package, device)


class Downscaler:
    """A trained CorrDiff model: coarse fields (xarray) in, an ensemble of fine fields (xarray) out."""

    def __init__(self, package: Package, device: str | torch.device = "auto"):
        self.package = package
        self.device = pick_device(device) if isinstance(device, str) else torch.device(device)
        self.models = package.models(self.device)
        self.config = package.run_config()
        prepare(self.models, self.config.generate.fast_path(self.device))

    @property
    def input_channels(self) -> list[str]:
        """The input variables, then the static fields, as the networks take them."""
        return list(self.models.meta.input_channels)

    @property
    def target_channels(self) -> list[str]:
        return list(self.models.meta.target_channels)

    @property
    def lat(self) -> np.ndarray:
        """Latitude of the fine grid, (H, W) degrees north."""
        return self.package.lat

    @property
    def lon(self) -> np.ndarray:
        return self.package.lon

    def inputs(self, inputs, rename: dict | None = None, member=None):
        """The inputs on the fine grid, normalised: `self.inputs(ds)[i].input` is (C_in, H, W).

        `inputs`: an xarray Dataset, or a path, glob or list of them (NetCDF, Zarr, GRIB; read as `open_inputs`
        reads them). `rename`: {channel: its name in the files}, over the model's own; `member`: of ensemble
        inputs, a member's number, "mean" or "all" (then an `InputMembers`, one dataset per input member)."""
        p = self.package
        rules = rules_with_member(p.rules, member)
        if isinstance(inputs, xr.Dataset) and OPENED in inputs.attrs:  # open_inputs named them as the channels
            rename = {}
        if rename is not None:
            if not isinstance(rename, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in rename.items()):
                raise ConfigError(f"rename {rename!r}: expected a dict {{channel: its name in the files}} of strings")
            rules = rules.model_copy(update={"inputs": rules.inputs.model_copy(update={"rename": dict(rename)})})
        units = checks.trained_input_units(self.models.meta)
        if isinstance(inputs, (str, Path, list, tuple)):
            paths = input_paths(inputs)
            open_one = lambda r: CoarseInputs.from_files(paths, r, p.lat, p.lon, p.static, p.stats, units,
                                                                p.grid_mapping)
        else:
            open_one = lambda r: CoarseInputs.from_dataset(inputs, r, p.lat, p.lon, p.static, p.stats, units,
                                                                  grid_mapping=p.grid_mapping)
        with argument_errors():
            dataset = open_members(open_one, rules)
            check_fits(self.models, dataset)
        return dataset

    def downscale(self, inputs, members: int = 8, seed: int = 0, sampler: SamplerConfig | dict | None = None,
                  times=None, progress: bool = False, rename: dict | None = None, member=None,
                  coherence: CoherenceSection | dict | None = None) -> xr.Dataset:
        """The ensemble of every time of `inputs` (or of `times`, ISO strings or datetimes), as `corrdiff generate`
        writes it: `<name>` (time, member, y, x) and `<name>_regression` (time, y, x), float32 in the targets' units,
        2-D lat/lon, provenance and fingerprint attributes. Member m of a time depends on (seed, time, m) only.

        `sampler`: a `SamplerConfig` or its fields as a dict (default: the model's, see docs/sampling.md);
        `{"arithmetic": "physicsnemo"}` reproduces PhysicsNeMo's numbers for networks imported from it (then member
        m depends on (seed, m) only, docs/interop.md).
        `inputs`, `rename`, `member`: as `inputs` takes them; with member="all", `members` per input member and an
        `input_member` coordinate along `member` (`corrdiff.inference.input_members`).
        `coherence`: members as time series over the chosen times, `{"method": "ar1", "rho": 0.9}` (the run config's
        `generate.coherence`; default: the model's, independent unless it says otherwise): the same values as
        `corrdiff generate --coherence ar1 --coherence-rho 0.9` (docs/sampling.md, "Members that are time series").
        """
        dataset = self.inputs(inputs, rename, member)
        try:
            return self._downscale(dataset, members, seed, sampler, times, progress, coherence)
        finally:
            dataset.close()

    def _downscale(self, dataset, members, seed, sampler, times, progress, coherence) -> xr.Dataset:
        config = self._config(members, seed, sampler, coherence)
        config = resolve_patches(config, self.models, dataset.lat.shape)
        sampling = Sampling.build(config, self.models, dataset.lat.shape, self.device)
        indices, chosen = self._times(dataset, times)
        channels = self.target_channels
        height, width = dataset.lat.shape
        total = sampling.members * (len(dataset.labels) if isinstance(dataset, InputMembers) else 1)
        ensembles = np.empty((len(indices), total, len(channels), height, width), np.float32)
        means = np.empty((len(indices), len(channels), height, width), np.float32)
        series = series_latents(sampling, chosen, total)  # None: independent members
        for i, k in enumerate(progress_bar(indices, desc="downscale", unit="time", disable=not progress)):
            latents = series.at(i) if series is not None else None
            ensembles[i], means[i] = downscale_members(downscale_time, sampling, dataset, k, chosen[i], latents)
            found = first_nonfinite_field(ensembles[i], means[i], channels)
            if found:  # as generation's writer refuses it
                raise OutputError(f"the ensemble of {found[1]!r} at {np.datetime64(chosen[i], 's')} came out NaN or "
                                  "infinite; the checkpoints or the input at this time may be broken (try more "
                                  "sampler.num_steps)")
        fingerprint = generation_fingerprint_of(config, self.models, dataset, chosen)
        context = output_context(dataset, chosen)  # forecast reference/lead times, as the file records them
        if isinstance(dataset, InputMembers):
            context = dataclasses.replace(context, coords={**context.coords, **dataset.coords(sampling.members)})
        series_coords = time_series.output_coords(config.generate.coherence, chosen, range(len(chosen)))
        context = dataclasses.replace(context, coords={**context.coords, **series_coords})
        attrs = ensemble_attrs(config, self.models, allow_mismatch=False) | context.attrs | fingerprint.attrs()
        ds = ensemble_file.template(chosen, total, dataset.lat, dataset.lon, channels, self.models.meta.target_attrs,
                                    attrs, complete=True, command="corrdiff.Downscaler.downscale",
                                    **context.template_options())
        for c, name in enumerate(channels):
            ds[name] = ds[name].copy(data=ensembles[:, :, c])
            ds[regression_name(name)] = ds[regression_name(name)].copy(data=means[:, c])
        ds[FLAG] = ds[FLAG].copy(data=np.ones(len(chosen), dtype="int8"))
        return ds

    @torch.no_grad()
    def regression(self, inputs, times=None, progress: bool = False, rename: dict | None = None,
                   member=None) -> xr.Dataset:
        """The regression mean alone: `<name>_regression` (time, y, x) per target, as in `downscale`'s result
        (`inputs`, `rename`, `member` as `inputs` takes them; not member="all"), with the GroupNorm of the model's
        `sampler.arithmetic`."""
        if member == "all":
            raise ConfigError("regression(member='all'): give one member, or 'mean'; downscale(member='all') gives "
                              "the ensemble of every input member")
        dataset = self.inputs(inputs, rename, member)
        try:
            return self._regression(dataset, times, progress)
        finally:
            dataset.close()

    def _regression(self, dataset, times, progress: bool) -> xr.Dataset:
        indices, chosen = self._times(dataset, times)
        stats = self.models.meta.stats
        use_arithmetic(self.config.sampler.arithmetic, self.models.regression)  # the model's sampler's GroupNorm
        means = np.empty((len(indices), len(self.target_channels), *dataset.lat.shape), np.float32)
        for i, k in enumerate(progress_bar(indices, desc="regression", unit="time", disable=not progress)):
            condition = dataset[k].input[None].to(self.device)
            # As in downscale: one float32 call per time, never under autocast.
            means[i] = stats.denormalize_target(self.models.regression(condition).to(torch.float32))[0].cpu().numpy()
        ds = ensemble_file.template(chosen, 1, dataset.lat, dataset.lon, self.target_channels,
                                    self.models.meta.target_attrs, {**self.models.provenance},
                                    command="corrdiff.Downscaler.regression",
                                    **output_context(dataset, chosen).template_options())
        ds = ds.drop_vars([*self.target_channels, FLAG]).drop_dims("member")
        for c, name in enumerate(self.target_channels):
            ds[regression_name(name)] = ds[regression_name(name)].copy(data=means[:, c])
        return ds

    def _config(self, members: int, seed: int, sampler, coherence=None):
        members, seed = arguments.whole_number("members", members, 1), arguments.whole_number("seed", seed, 0)
        gen = self.config.generate.model_copy(update={"members": members, "seed": seed})
        if coherence is not None:
            gen = gen.model_copy(update={"coherence": _coherence(coherence)})
        update = {"generate": gen}
        if sampler is not None:
            try:
                update["sampler"] = sampler if isinstance(sampler, SamplerConfig) else SamplerConfig(**sampler)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"sampler: {err}") from None
        return self.config.model_copy(update=update)

    @staticmethod
    def _times(dataset: CoarseInputs, times) -> tuple[list[int], np.ndarray]:
        if times is not None:
            times = [str(t) if isinstance(t, str) else str(np.datetime64(t, "s")) for t in np.atleast_1d(times)]
        indices = select_times(dataset.times, times)
        return indices, np.asarray(dataset.times, dtype="datetime64[ns]")[indices]


def _coherence(value) -> CoherenceSection:
    """`downscale`'s `coherence` argument as the config section; a ConfigError in one line naming what is wrong."""
    if isinstance(value, CoherenceSection):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"coherence {value!r}: expected a dict such as {{'method': 'ar1', 'rho': 0.9}}")
    try:
        return CoherenceSection(**value)
    except ValidationError as err:
        raise ConfigError(f"coherence: {validation_problems(err)}") from None
