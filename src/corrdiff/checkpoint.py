"""Checkpoints: their typed metadata (the schema), their folder layout and pointers, and reading them.

Layout of one checkpoint folder, `<run>/checkpoints/step-000100/`:
  model.safetensors  EMA weights (`net.*`) and the fine grid (`grid.lat`, `grid.lon`): enough to generate
  model.json         `CheckpointMeta`: kind, UNet config, channels, normalisation, resolved run config, step,
                     and the SHA-256 of model.safetensors
  state.safetensors  raw weights (`model.*`), optimizer tensors (`optim.<param>.<name>`) and what else the task
                     keeps (`task.*`: the target network of consistency distillation), for --resume
  state.json         `TrainingState`: step, samples seen, best validation loss and folder, best validation fair
                     CRPS and folder, optimizer and scheduler settings, and the SHA-256 of both .safetensors files
`<run>/checkpoints/latest`, `best` and `best-crps` are text files naming a folder (`POINTERS`). Nothing here is pickled: loading
a checkpoint reads tensors and JSON only, and runs no code. Folders are written atomically by
`corrdiff.checkpoint_writer` (a temporary `.step-*` folder, its files synced, renamed into place), so a crash, a
kill or a full disk never leaves a half-written checkpoint behind; `clean_temporary` removes what an interrupted
write left. Reading verifies the recorded hashes, so a damaged file is an error naming it, never a plausible
network. `corrdiff.networks` builds the network a checkpoint describes and loads its weights.
"""

import dataclasses
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors

from corrdiff import __version__
from corrdiff.data import Normalization
from corrdiff.data.stats import ChannelRange
from corrdiff.diffusion.sampler import SamplerConfig
from corrdiff.diffusion.solvers import SOLVERS
from corrdiff.documents import json_object
from corrdiff.errors import CheckpointError, one_line
from corrdiff.file_integrity import atomic_write_text, sha256_bytes, sha256_file
from corrdiff.models import UNetConfig

FORMAT = "corrdiff-checkpoint-1"
# Written instead of FORMAT when a checkpoint needs a feature a reader of FORMAT would silently ignore
# (`scale_condition`): such readers then refuse it rather than run a different network.
FORMAT_SCALED = "corrdiff-checkpoint-2"
# The same for a denoiser of the normalised residual (`residual_std`), which a reader of 1 or 2 would sample unscaled.
FORMAT_RESIDUAL = "corrdiff-checkpoint-3"
# The same for a consistency student (`student`), which a reader of 1 to 3 would sample as a denoiser.
FORMAT_STUDENT = "corrdiff-checkpoint-4"
FORMATS = (FORMAT, FORMAT_SCALED, FORMAT_RESIDUAL, FORMAT_STUDENT)
STEP_PREFIX = "step-"
STEP_NAME = re.compile(rf"{STEP_PREFIX}\d{{6,}}")
MODEL_FILE, MODEL_META, STATE_FILE, STATE_META = "model.safetensors", "model.json", "state.safetensors", "state.json"
POINTERS = ("latest", "best", "best-crps")
# latest: the last checkpoint written; best: the lowest validation loss; best-crps: the lowest validation fair CRPS
# of the sample check of diffusion training (`corrdiff.training.sample_check`). A pointer a run does not have
# (best-crps in a regression run or with the check off; best without validation data) reads as the next one here.
FALLBACK = {"best-crps": "best", "best": "latest"}
KINDS = ("regression", "diffusion")


@dataclass(frozen=True)
class RegressionRef:
    """The frozen regression checkpoint a diffusion model was trained against."""

    path: str
    sha256: str


@dataclass(frozen=True)
class StudentRef:
    """A consistency student's origin and sampler: the diffusion checkpoint it was distilled from
    (`corrdiff train distill`, Song et al. 2023) and how it samples."""

    teacher: str
    """The teacher's checkpoint folder."""
    teacher_sha256: str
    """Hex SHA-256 of the teacher's model.safetensors."""
    sigma_min: float
    """ε of its parameterisation, f(x, ε) = x (`corrdiff.diffusion.ConsistencyPrecond`)."""
    sampler: dict
    """Its recommended sampler: fields of `corrdiff.diffusion.SamplerConfig` (solver consistency, steps, schedule,
    σ range; the others at their defaults), used when nothing else chooses one (docs/sampling.md)."""

    def __post_init__(self):
        if not (isinstance(self.sigma_min, (int, float)) and 0 < self.sigma_min < math.inf):
            raise ValueError(f"student.sigma_min must be a positive number, got {self.sigma_min!r}")
        if not isinstance(self.sampler, dict):
            raise ValueError(f"student.sampler must be a mapping of sampler settings, got {self.sampler!r}")
        try:
            sampler = SamplerConfig(**self.sampler)
        except (TypeError, ValueError) as err:
            raise ValueError(f"student.sampler: {one_line(err)}") from None
        if not SOLVERS[sampler.solver].consistency:
            raise ValueError(f"student.sampler: a student samples with a consistency solver, not {sampler.solver!r}")

    def recommended_sampler(self) -> SamplerConfig:
        """Its recommended sampler (`sampler`)."""
        return SamplerConfig(**self.sampler)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its network (the schema of model.json, format `FORMAT`)."""

    kind: str
    """"regression" (the mean μ(y)) or "diffusion" (the residual denoiser)."""
    unet: UNetConfig
    input_channels: tuple[str, ...]
    target_channels: tuple[str, ...]
    stats: Normalization
    """Normalisation of inputs and targets the network was trained with."""
    config: str
    """The resolved run config (YAML) that trained it."""
    target_attrs: dict[str, dict] = field(default_factory=dict)
    """CF attributes (units, long_name) of each target channel, for the ensemble file."""
    corrdiff_version: str = __version__
    step: int = 0
    val_loss: float | None = None
    val_crps_fair: float | None = None
    """Diffusion only: the sample check's fair CRPS at this step, channel mean, normalised units (None: no check)."""
    sigma_data: float | None = None
    """Diffusion only: σ_data of the EDM preconditioning."""
    regression_checkpoint: RegressionRef | None = None
    """Diffusion only."""
    patch_shape: tuple[int, int] | None = None
    """Diffusion only: the (h, w) patches it was trained on (None: the whole domain); generation's default."""
    model_sha256: str | None = None
    """Hex SHA-256 of model.safetensors, verified on loading (None in checkpoints written before it was kept)."""
    input_units: tuple[str, ...] = ()
    """CF units each input channel was trained in, in `input_channels` order ("" where the files gave none);
    () when unknown (older or imported checkpoints): generation then converts and checks nothing."""
    input_ranges: tuple[ChannelRange, ...] = ()
    """Each input channel's values in training (min, max, 0.1/99.9 percentiles, in `input_units`), in
    `input_channels` order; () when unknown: generation then does not warn about out-of-range inputs."""
    residual_std: tuple[float, ...] = ()
    """Diffusion only: the per-channel standard deviation of the residual x − μ (normalised target units, in
    `target_channels` order) measured after the regression step; the denoiser learnt the residual divided by it
    and times σ_data (`residual_unit`). () when it learnt the residual as it is (the paper's way; checkpoints
    imported from PhysicsNeMo or written before corrdiff kept it)."""
    scale_condition: bool = False
    """Diffusion only: the condition is scaled by c_in(σ) with the noisy residual (`EDMPrecond`), as in networks
    imported from PhysicsNeMo's `EDMPrecondSR(scale_cond_input=True)`; False in corrdiff-trained ones."""
    student: StudentRef | None = None
    """Diffusion only: the network is a consistency student f (`corrdiff train distill`), sampled with a consistency
    solver only; None: an EDM denoiser D, sampled with the others."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "diffusion" and self.sigma_data is None:
            raise ValueError("a diffusion checkpoint needs sigma_data")
        if self.kind != "diffusion" and self.scale_condition:
            raise ValueError("scale_condition applies to a diffusion checkpoint only")
        if self.student is not None and self.kind != "diffusion":
            raise ValueError("student applies to a diffusion checkpoint only")
        object.__setattr__(self, "input_channels", tuple(self.input_channels))
        object.__setattr__(self, "target_channels", tuple(self.target_channels))
        object.__setattr__(self, "input_units", tuple(str(u) for u in self.input_units))
        object.__setattr__(self, "input_ranges", tuple(r if isinstance(r, ChannelRange) else ChannelRange.from_dict(r)
                                                       for r in self.input_ranges))
        for key in ("input_units", "input_ranges"):
            if getattr(self, key) and len(getattr(self, key)) != len(self.input_channels):
                raise ValueError(f"{key} has {len(getattr(self, key))} entries for {len(self.input_channels)} "
                                 "input channels")
        if self.patch_shape is not None:
            object.__setattr__(self, "patch_shape", tuple(int(n) for n in self.patch_shape))
        object.__setattr__(self, "residual_std", tuple(float(v) for v in self.residual_std))
        if self.residual_std:
            if self.kind != "diffusion":
                raise ValueError("residual_std applies to a diffusion checkpoint only")
            if len(self.residual_std) != len(self.target_channels):
                raise ValueError(f"residual_std has {len(self.residual_std)} values for "
                                 f"{len(self.target_channels)} target channels")
            if not all(math.isfinite(v) and v > 0 for v in self.residual_std):
                raise ValueError(f"residual_std must hold positive finite numbers, got {list(self.residual_std)}")

    def residual_unit(self) -> tuple[float, ...]:
        """What one unit of the denoiser's data is in normalised target units, per channel: residual_std / σ_data;
        () when the denoiser learnt the residual as it is. Samples are multiplied by it, training residuals divided."""
        if not self.residual_std:
            return ()
        return tuple(v / self.sigma_data for v in self.residual_std)

    def format(self) -> str:
        """model.json's format: the oldest whose readers understand every feature this checkpoint uses."""
        if self.student is not None:
            return FORMAT_STUDENT
        if self.residual_std:
            return FORMAT_RESIDUAL
        return FORMAT_SCALED if self.scale_condition else FORMAT

    def replace(self, **changes) -> "CheckpointMeta":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """model.json's text."""
        data = {"format": self.format(), "kind": self.kind, "corrdiff_version": self.corrdiff_version,
                "unet": self.unet.to_dict(), "input_channels": list(self.input_channels),
                "target_channels": list(self.target_channels), "target_attrs": self.target_attrs,
                "stats": self.stats.to_dict(), "config": self.config}
        if self.kind == "diffusion":
            data["sigma_data"] = self.sigma_data
            data["regression_checkpoint"] = (dataclasses.asdict(self.regression_checkpoint)
                                             if self.regression_checkpoint else None)
            data["patch_shape"] = list(self.patch_shape) if self.patch_shape else None
            data["scale_condition"] = self.scale_condition
            if self.residual_std:  # absent otherwise: checkpoints without it read as they always did
                data["residual_std"] = list(self.residual_std)
            if self.student is not None:  # likewise
                data["student"] = dataclasses.asdict(self.student)
        data |= {"step": self.step, "val_loss": self.val_loss, "val_crps_fair": self.val_crps_fair,
                 "model_sha256": self.model_sha256,
                 "input_units": list(self.input_units), "input_ranges": [r.to_dict() for r in self.input_ranges]}
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "model.json") -> "CheckpointMeta":
        """Parse model.json; a CheckpointError names `where` and what is missing or wrong."""
        try:
            data = json_object(text)
            if data.get("format") not in FORMATS:
                raise ValueError(f"format is {data.get('format')!r}, expected one of {', '.join(map(repr, FORMATS))}")
            reference = data.get("regression_checkpoint")
            meta = cls(
                kind=data["kind"], unet=UNetConfig.from_dict(data["unet"]),
                input_channels=data["input_channels"], target_channels=data["target_channels"],
                stats=Normalization.from_dict(data["stats"]), config=data["config"],
                target_attrs=data.get("target_attrs") or {}, corrdiff_version=data.get("corrdiff_version", "?"),
                step=int(data.get("step", 0)), val_loss=data.get("val_loss"),
                val_crps_fair=data.get("val_crps_fair"), sigma_data=data.get("sigma_data"),
                regression_checkpoint=RegressionRef(**reference) if reference else None,
                model_sha256=data.get("model_sha256"), patch_shape=data.get("patch_shape"),
                input_units=data.get("input_units") or (), input_ranges=data.get("input_ranges") or (),
                scale_condition=_flag(data.get("scale_condition", False), "scale_condition"),
                residual_std=data.get("residual_std") or (),
                student=StudentRef(**data["student"]) if data.get("student") is not None else None,
            )
            if meta.format() != data["format"]:
                raise ValueError(f"format {data['format']!r} does not go with scale_condition "
                                 f"{data.get('scale_condition')!r}, residual_std {data.get('residual_std')!r} and "
                                 f"student {'set' if data.get('student') is not None else 'none'}")
            return meta
        except KeyError as err:
            raise CheckpointError(f"{where}: not a corrdiff checkpoint description (no {err.args[0]!r})") from None
        except (ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{where}: not a corrdiff checkpoint description ({one_line(err)})") from None


@dataclass
class ModelCheckpoint:
    """A loaded checkpoint: its folder, metadata, EMA weights and the fine grid (H, W) it was trained on."""

    path: Path
    meta: CheckpointMeta
    weights: dict[str, torch.Tensor]
    lat: torch.Tensor | None
    lon: torch.Tensor | None
    content_sha256: str | None = None
    """Hex SHA-256 of the model.safetensors bytes these weights were read from."""

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of model.safetensors (provenance of everything made with it)."""
        return self.content_sha256 or sha256_file(self.path / MODEL_FILE)


def _flag(value, key: str) -> bool:
    """A JSON boolean of model.json; a ValueError naming `key` for anything else (e.g. the string "false")."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, found {value!r}")
    return value


# --------------------------------------------------------------------------------------------- pointers
def read_pointer(root: Path, which: str) -> str | None:
    """The folder name that a pointer (`POINTERS`) names, if the pointer exists; an error if it is unreadable."""
    pointer = Path(root) / which
    try:
        name = pointer.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{pointer}: cannot be read ({one_line(err)})") from None
    if not STEP_NAME.fullmatch(name):
        raise CheckpointError(f"{pointer}: expected the name of a checkpoint folder ({STEP_PREFIX}NNNNNN), "
                              f"found {name[:40]!r}; write the name of an existing {STEP_PREFIX}* folder into it")
    return name


def set_pointer(root: Path, which: str, name: str) -> None:
    """Point `latest`, `best` or `best-crps` at checkpoint folder `name` (atomically)."""
    atomic_write_text(Path(root) / which, name)


def prune(root: Path, keep_last: int) -> None:
    """Delete step folders other than the last `keep_last` and those a pointer names (latest, best, best-crps)."""
    steps = sorted(p.name for p in Path(root).glob(f"{STEP_PREFIX}*") if p.is_dir())
    keep = set(steps[-keep_last:]) | {read_pointer(root, pointer) for pointer in POINTERS}
    for name in steps:
        if name not in keep:
            shutil.rmtree(Path(root) / name, ignore_errors=True)


def clean_temporary(root: Path) -> list[str]:
    """Remove what interrupted writes left in a checkpoints folder (`.step-*` folders, `.latest.*` files).

    Call it only while holding the run's lock: another process's write in progress looks the same.
    Returns the names removed.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for path in root.glob(".*"):
        if path.name.startswith(f".{STEP_PREFIX}") and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(tuple(f".{p}." for p in POINTERS)) and path.is_file():
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path.name)
    return removed


# --------------------------------------------------------------------------------------------- reading
def _is_checkpoint_folder(path: Path) -> bool:
    return STEP_NAME.fullmatch(path.name) is not None or any(
        (path / name).exists() for name in (MODEL_FILE, MODEL_META, STATE_FILE, STATE_META))


def pointer_chain(which: str) -> list[str]:
    """The pointers `resolve` tries for `which`, in order: it, then its `FALLBACK`s (best-crps, best, latest)."""
    if which not in POINTERS:
        raise CheckpointError(f"unknown checkpoint {which!r}: expected one of {', '.join(POINTERS)}")
    chain = [which]
    while chain[-1] in FALLBACK:
        chain.append(FALLBACK[chain[-1]])
    return chain


def resolve(path: str | Path, which: str = "best") -> Path:
    """A checkpoint folder from a folder, a run folder, a `checkpoints` folder, a pointer file in one
    (`checkpoints/best-crps`) or a model.safetensors file.

    In a run folder, `which` (one of `POINTERS`) picks the pointer; a pointer the run does not have reads as
    the next of `pointer_chain(which)`: best-crps → best → latest (a regression run, or a diffusion run with its
    sample check off, has no best-crps; a run without validation data no best). A pointer naming a folder
    that is not there is an error.
    """
    chain = pointer_chain(which)
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    elif path.is_file() and path.name in POINTERS:
        path, chain = path.parent, [path.name]
    if path.is_dir() and _is_checkpoint_folder(path):
        return path
    for root in (path / "checkpoints", path):
        if not root.is_dir():
            continue
        for pointer in chain:
            name = read_pointer(root, pointer)
            if name is None:
                continue
            if not (root / name).is_dir():
                raise CheckpointError(f"{root / pointer} names {name}, which is not in {root}: the run folder is "
                                      f"damaged; write the name of an existing {STEP_PREFIX}* folder into it")
            return root / name
    raise CheckpointError(f"no checkpoint found at {path} (expected a folder with {MODEL_FILE}, or a run folder)")


def read_text(path: Path) -> str:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint folder is incomplete") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: cannot be read ({one_line(err)})") from None
    if not text.strip():
        raise CheckpointError(f"{path}: empty; the checkpoint folder is damaged")
    return text


def read_tensors(path: Path, expected_sha256: str | None, recorded_in: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors of a safetensors file and the SHA-256 of its bytes, checked against the recorded one."""
    try:
        data = path.read_bytes()  # hashed and parsed from the same bytes: what is checked is what is loaded
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint folder is incomplete") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({one_line(err)})") from None
    digest = sha256_bytes(data)
    if expected_sha256 is not None and digest != expected_sha256:
        raise CheckpointError(f"{path}: content hash differs: the file is damaged (SHA-256 {digest[:16]}…, "
                              f"{recorded_in.name} records {str(expected_sha256)[:16]}…); use another checkpoint")
    try:
        return load_tensors(data), digest
    except (SafetensorError, ValueError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({one_line(err)})") from None


def load_meta(path: str | Path, which: str = "best", kind: str | None = None) -> CheckpointMeta:
    """The metadata (model.json) of a checkpoint, without reading its weights; `path`, `which` and `kind` as
    `load_model` takes them."""
    folder = resolve(path, which)
    return _meta_of(folder, kind)


def _meta_of(folder: Path, kind: str | None) -> CheckpointMeta:
    meta = CheckpointMeta.from_json(read_text(folder / MODEL_META), str(folder / MODEL_META))
    if kind is not None and meta.kind != kind:
        raise CheckpointError(f"{folder} is a {meta.kind!r} checkpoint, not a {kind} one")
    return meta


def load_model(path: str | Path, which: str = "best", kind: str | None = None) -> ModelCheckpoint:
    """EMA weights, metadata and grid of a checkpoint (see `resolve` for what `path` may be).

    With `kind`, a checkpoint of the other kind is an error naming both. A damaged or incomplete
    checkpoint is a CheckpointError naming the file and what is wrong.
    """
    folder = resolve(path, which)
    meta = _meta_of(folder, kind)
    tensors, digest = read_tensors(folder / MODEL_FILE, meta.model_sha256, folder / MODEL_META)
    weights = {k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")}
    if not weights:
        raise CheckpointError(f"{folder / MODEL_FILE}: holds no network weights (net.*)")
    lat, lon = tensors.get("grid.lat"), tensors.get("grid.lon")
    if lat is not None and tuple(lat.shape) != tuple(meta.unet.img_shape):
        raise CheckpointError(f"{folder / MODEL_FILE}: its grid is {tuple(lat.shape)}, but {MODEL_META} describes "
                              f"a network on {tuple(meta.unet.img_shape)}")
    return ModelCheckpoint(folder, meta, weights, lat, lon, digest)
