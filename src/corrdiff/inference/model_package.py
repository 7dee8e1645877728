"""Model packages: a trained CorrDiff model in one self-contained folder, and the same contents read from a run.

`corrdiff export RUN_DIR --out model/` writes (nothing in it executes on load: tensors and JSON only):

    model/regression.safetensors   the regression checkpoint's model.safetensors, byte for byte (EMA weights
                                   `net.*`, fine grid `grid.lat`/`grid.lon`), so its SHA-256 stays the checkpoint's
    model/diffusion.safetensors    the same for the diffusion checkpoint
    model/fields.safetensors       the fine grid `grid.lat`, `grid.lon` (H, W) float64, degrees, and each static
                                   field `static.<name>` (H, W) float32, physical units
    model/model.json               `FORMAT`: both checkpoints' descriptions (channels, units, normalisation, network,
                                   run config), how inputs are read (`InputRules`), the static channels, the fine
                                   grid's projection (`grid.mapping`: CF grid-mapping attributes, null for none), the
                                   sampler and generation defaults, the corrdiff version, and the SHA-256 of every
                                   other file

Keys are only ever added within a `FORMAT`: a package without `grid.mapping` (exported before it was kept) loads,
and its output has no `crs`, as before; an older corrdiff reading a newer package ignores the keys it does not know.

Loading verifies every recorded SHA-256 and a digest of model.json's own contents, so a damaged, edited or
incomplete package is a one-line CheckpointError naming the file. `Package` is what the Python API
(`corrdiff.api`) and `corrdiff generate --model` use; `from_checkpoints` builds one from a run folder's checkpoints
and dataset spec, so a run and its export downscale alike.
"""

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors, save as save_tensors

from corrdiff import __version__, locks, sampler_file
from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta, ModelCheckpoint
from corrdiff.config import apply_overrides, RunConfig
from corrdiff.data import load_spec
from corrdiff.data.readers import open_fields
from corrdiff.diffusion import SamplerConfig
from corrdiff.documents import read_json_object
from corrdiff.errors import CheckpointError, ConfigError, DataError, OutputError, validation_problems
from corrdiff.file_integrity import atomic_folder, sha256_bytes
from corrdiff.inference import checks
from corrdiff.inference.context import fine_grid_mapping
from corrdiff.inference.downscaling import Models, models_from_checkpoints
from corrdiff.inference.generate import EnsembleOutput, generate as run_generation, GenerationRequest, input_paths
from corrdiff.inference.input_members import open_members, rules_with_member
from corrdiff.inference.inputs import CoarseInputs, InputRules
from corrdiff.output_paths import check_not_an_input, make_folder, spec_inputs

FORMAT = "corrdiff-model-package-1"
META = "model.json"
NETWORK_FILES = {"regression": "regression.safetensors", "diffusion": "diffusion.safetensors"}
FIELDS_FILE = "fields.safetensors"


@dataclass
class Package:
    """A model ready to downscale: both checkpoints, how its inputs are read, the fine grid and static fields."""

    regression: ModelCheckpoint
    diffusion: ModelCheckpoint
    rules: InputRules
    lat: np.ndarray
    """(H, W) float64, degrees north."""
    lon: np.ndarray
    static: dict[str, np.ndarray]
    """Static channels in order, each (H, W) float32 in physical units."""
    sampler: SamplerConfig
    sampler_source: str
    """Where the sampler came from: the run's recommended sampler (`corrdiff tune`) or its run config."""
    generate: dict = field(default_factory=dict)
    """Generation defaults (keys of the config's `generate:` section)."""
    source: Path | None = None
    """The package folder (None: built from checkpoints)."""
    mismatches: list[str] = field(default_factory=list)
    config: RunConfig | None = None
    """The run config it was read with (None: loaded from a package folder), recorded in what it generates."""
    grid_mapping: dict | None = None
    """CF grid-mapping attributes of the fine grid's projection (None: a lat/lon grid, or a package exported
    before packages kept it); the output's `crs` and projection coordinates."""

    @property
    def stats(self):
        return self.diffusion.meta.stats

    def models(self, device) -> Models:
        """Both networks on `device`, frozen; provenance names the checkpoint folders, or the package's files."""
        models = models_from_checkpoints(self.regression, self.diffusion, device, allow_mismatch=bool(self.mismatches))
        if self.source is not None:  # what a generation with it must never write over
            models.sources = {"the model package": [Path(self.source)]}
        return models

    def run_config(self, overrides: list[str] | None = None) -> RunConfig:
        """A run config holding the package's sampler and generation defaults, with `section.key=value` overrides."""
        where = str(self.source or self.diffusion.path)
        raw = self.config.model_dump(mode="json") if self.config is not None else {"data": where, "run_dir": where}
        raw |= {"sampler": _sampler_dict(self.sampler), "generate": dict(self.generate)}
        apply_overrides(raw, overrides or [])
        try:
            return RunConfig(**raw)
        except ValidationError as err:
            raise ConfigError(f"--set: {validation_problems(err)}") from None


def generate(path, inputs: list[str], out, overrides: list[str] | None = None, times: list[str] | None = None,
             progress: bool = True, overwrite: bool = False, input_member=None) -> Path:
    """`corrdiff generate --model`: downscale every time of the input files (or `times`) with the package at `path`
    into the ensemble file `out`, resumable as any generation (`corrdiff.inference.generate.generate`)."""
    if not inputs:
        raise ConfigError("--model needs --input: the coarse files to downscale (a package holds no dataset)")
    package = load(path)
    config = package.run_config(overrides)
    paths = input_paths(inputs)
    dataset = open_members(lambda rules: CoarseInputs.from_files(paths, rules, package.lat, package.lon, package.static,
                                                                 package.stats, checks.trained_input_units(
                                                                     package.diffusion.meta), package.grid_mapping),
                           rules_with_member(package.rules, input_member))
    try:
        return run_generation(config, GenerationRequest(models_loader=package.models, dataset=dataset, times=times),
                              EnsembleOutput(out, overwrite=overwrite, progress=progress))
    finally:
        dataset.close()


# --------------------------------------------------------------------------------------------- from a run
def from_checkpoints(regression_path, diffusion_path, config: RunConfig | None = None, run_dir=None,
                     which: str = "best", allow_mismatch: bool = False) -> Package:
    """A package of two checkpoints (folders or run folders), read with their run config's dataset spec.

    `config`: the run config whose spec gives the input rules and static fields (default: the one recorded in the
    diffusion checkpoint). `run_dir`: where a recommended sampler (sampler.yaml) may be.
    """
    regression = ckpt.load_model(regression_path, which, kind="regression")
    diffusion = ckpt.load_model(diffusion_path, which, kind="diffusion")
    problems = checks.pairing_problems(regression, diffusion, regression.sha256)
    if not allow_mismatch:
        checks.refuse_mismatch(problems)
    config = config or _recorded_config(diffusion)
    spec = load_spec(config.data)
    inputs, targets = checks.spec_channels(spec)
    checks.check_channels("input", inputs, diffusion.meta.input_channels, spec.where, diffusion.path)
    checks.check_channels("target", targets, diffusion.meta.target_channels, spec.where, diffusion.path)
    if diffusion.lat is None:
        raise CheckpointError(f"{diffusion.path}: records no fine grid (a checkpoint of an older corrdiff); "
                              "train or import it again")
    lat, lon = diffusion.lat.numpy(), diffusion.lon.numpy()
    static = _static_fields(spec, lat.shape, checks.trained_input_units(diffusion.meta))
    sampler, source = config.sampler, "run config"
    tuned = sampler_file.recommended_sampler(run_dir or config.run_dir, diffusion.sha256)
    if tuned is not None:
        sampler, source = tuned, f"recommended ({sampler_file.FILE_NAME}, corrdiff tune)"
    elif checks.sampler_for(sampler, diffusion.meta) != sampler:
        sampler, source = checks.sampler_for(sampler, diffusion.meta), "the consistency student's recommended"
    # Settings left at None mean "the default" (e.g. the checkpoint's training patches): keep them unset.
    # The output format and split follow each command's own --out and --input.
    generate = {k: v for k, v in config.generate.model_dump(mode="json").items()
                if v is not None and k not in ("format", "split")}
    return Package(regression, diffusion, InputRules.from_spec(spec), lat, lon, static, sampler, source, generate,
                   None, problems, config, fine_grid_mapping(spec))


def _recorded_config(diffusion: ModelCheckpoint) -> RunConfig:
    try:
        raw = yaml.safe_load(diffusion.meta.config)
        return RunConfig(**raw)
    except (yaml.YAMLError, TypeError, ValidationError):
        raise ConfigError(f"{diffusion.path}: records no run config with a dataset spec (an imported checkpoint?); "
                          "pass the run config whose `data:` gives the inputs and static fields") from None


def _static_fields(spec, shape, units: dict[str, str] | None) -> dict[str, np.ndarray]:
    """The spec's static fields {name: (H, W) float32} in `units` (those trained in); a DataError when one is
    incomplete or off the grid."""
    if not spec.static:
        return {}
    stores = []
    try:
        fields = open_fields(spec, spec.static, "static", static=True, opened=stores, expected=units)
        values = {f.name: np.asarray(f.array.values, np.float32) for f in fields}
    finally:
        for store in stores:
            store.close()
    for f in fields:
        if values[f.name].shape != tuple(shape):
            raise DataError(f"{f.file}: static field {f.name!r} is {values[f.name].shape}, the fine grid {tuple(shape)}")
        if not np.isfinite(values[f.name]).all():
            raise DataError(f"{f.file}: static field {f.name!r} has NaN/inf values; static fields must be complete")
    return values


def export(run_dir, out, config: RunConfig | None = None, which: str = "best", diffusion=None) -> Package:
    """`corrdiff export`: the package of a run folder's two checkpoints (`from_checkpoints`), written as the folder
    `out` (`write`). `diffusion`: another diffusion checkpoint than the run's (its consistency student,
    <run_dir>/distill, say). `out` is never one of what the export reads, nor inside or holding one
    (`corrdiff.output_paths`), and one export at a time writes it (`corrdiff.locks`)."""
    run_dir = Path(run_dir)
    paths = {kind: run_dir / kind for kind in ckpt.KINDS}
    if diffusion is not None:
        paths["diffusion"] = Path(diffusion)
    package = from_checkpoints(paths["regression"], paths["diffusion"], config, run_dir=run_dir, which=which)
    read = checks.checkpoint_inputs(paths, which) | spec_inputs(load_spec(package.config.data))
    read["the run config"] = [package.config.source] if package.config.source else []
    read["the run's recommended sampler"] = [sampler_file.path_in(run_dir)]
    check_not_an_input(out, read)
    make_folder(out)
    with locks.for_output(out):
        write(package, out)
    return package


# --------------------------------------------------------------------------------------------- writing
def write(package: Package, out) -> Path:
    """Write `package` as the folder `out` (atomically: a temporary folder renamed); returns `out`.

    An existing non-empty `out` is refused.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"--out {out}: already exists and is not an empty folder; choose another --out")
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp:  # an empty `out` is replaced
        files = {}
        for kind, name in NETWORK_FILES.items():
            checkpoint = getattr(package, kind)
            data = (checkpoint.path / ckpt.MODEL_FILE).read_bytes()
            files[name] = _write(tmp / name, data)
            if files[name] != checkpoint.sha256:
                raise CheckpointError(f"{checkpoint.path / ckpt.MODEL_FILE}: changed while it was exported; export again")
        tensors = {"grid.lat": torch.as_tensor(package.lat, dtype=torch.float64),
                   "grid.lon": torch.as_tensor(package.lon, dtype=torch.float64)}
        tensors |= {f"static.{name}": torch.as_tensor(values, dtype=torch.float32) for name, values in package.static.items()}
        files[FIELDS_FILE] = _write(tmp / FIELDS_FILE, save_tensors({k: v.contiguous() for k, v in tensors.items()}))
        body = _metadata(package, files)
        (tmp / META).write_text(json.dumps(body | {"metadata_sha256": _digest(body)}, indent=1))
    return out


def _write(path: Path, data: bytes) -> str:
    """Write one file of the package being built (`atomic_folder` syncs it); its SHA-256."""
    path.write_bytes(data)
    return sha256_bytes(data)


def _metadata(package: Package, files: dict[str, str]) -> dict:
    meta = package.diffusion.meta
    return {
        "format": FORMAT, "corrdiff_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "exported_from": {kind: str(getattr(package, kind).path) for kind in NETWORK_FILES},
        "channels": {"inputs": list(package.rules.inputs.variables), "static": list(package.static),
                     "targets": list(meta.target_channels), "target_attrs": meta.target_attrs,
                     "units": package.rules.units},
        "normalisation": meta.stats.to_dict(),
        "inputs": package.rules.to_dict(),
        "grid": {"file": FIELDS_FILE, "shape": list(package.lat.shape), "lat": "grid.lat", "lon": "grid.lon",
                 "mapping": _json_from_netcdf(package.grid_mapping)},
        "sampler": _sampler_dict(package.sampler), "sampler_source": package.sampler_source,
        "generate": package.generate, "mismatches": package.mismatches,
        "networks": {kind: {"file": name, "checkpoint": json.loads(getattr(package, kind).meta.to_json())}
                     for kind, name in NETWORK_FILES.items()},
        "files": files,
    }


def _json_from_netcdf(value):
    """`value` with numpy arrays and scalars (as netCDF attributes come) as JSON lists and numbers."""
    if isinstance(value, dict):
        return {str(k): _json_from_netcdf(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_json_from_netcdf(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _digest(body: dict) -> str:
    return sha256_bytes(json.dumps(body, sort_keys=True))


def _sampler_dict(sampler: SamplerConfig) -> dict:
    """JSON-safe: infinities as the string "inf"."""
    plain = lambda v: list(v) if isinstance(v, tuple) else (str(v) if isinstance(v, float) and math.isinf(v) else v)
    return {k: plain(v) for k, v in dataclasses.asdict(sampler).items()}


def _sampler(raw: dict) -> SamplerConfig:
    number = lambda v: float(v) if v in ("inf", "-inf") else tuple(v) if isinstance(v, list) else v
    return SamplerConfig(**{k: number(v) for k, v in raw.items()})


# --------------------------------------------------------------------------------------------- reading
def is_package(path) -> bool:
    """Whether `path` is a folder holding a model package's model.json."""
    meta = Path(path) / META
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load(path) -> Package:
    """The package in folder `path`, every file verified; a CheckpointError naming what is damaged or missing."""
    path = Path(path)
    where = path / META
    body = read_json_object(where, CheckpointError,
                            f"{path}: not a corrdiff model package (no {META}); write one with `corrdiff export`")
    if body.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a corrdiff model package (expected format {FORMAT})")
    recorded = body.pop("metadata_sha256", None)
    if recorded != _digest(body):
        raise CheckpointError(f"{where}: its contents differ from what was exported (the file was edited or damaged); "
                              "export the model again")
    try:
        data = {name: _read_verified(path / name, sha) for name, sha in body["files"].items()}
        checkpoints = {}
        for kind, entry in body["networks"].items():
            meta = CheckpointMeta.from_json(json.dumps(entry["checkpoint"]), f"{where} ({kind})")
            tensors = _tensors(data[entry["file"]], path / entry["file"])
            weights = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
            checkpoints[kind] = ModelCheckpoint(path / entry["file"], meta, weights, tensors.get("grid.lat"),
                                                tensors.get("grid.lon"), body["files"][entry["file"]])
        fields = _tensors(data[body["grid"]["file"]], path / body["grid"]["file"])
        static = {name: fields[f"static.{name}"].numpy() for name in body["channels"]["static"]}
        return Package(checkpoints["regression"], checkpoints["diffusion"], InputRules.from_dict(body["inputs"]),
                       fields["grid.lat"].numpy(), fields["grid.lon"].numpy(), static, _sampler(body["sampler"]),
                       body.get("sampler_source", "?"), dict(body.get("generate") or {}), path,
                       list(body.get("mismatches") or []), grid_mapping=body["grid"].get("mapping"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: not a complete model package description ({type(err).__name__}: "
                              f"{' '.join(str(err).split())})") from None


def _read_verified(path: Path, sha256: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the model package is incomplete: export it again") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err})") from None
    digest = sha256_bytes(data)
    if digest != sha256:
        raise CheckpointError(f"{path}: content hash differs from the package's {META} (SHA-256 {digest[:16]}…, "
                              f"recorded {str(sha256)[:16]}…): the file is damaged or was changed; export it again")
    return data


def _tensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(data)
    except (SafetensorError, ValueError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({' '.join(str(err).split())})") from None
