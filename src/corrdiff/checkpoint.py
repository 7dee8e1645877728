"""Checkpoints: their typed metadata, their folder layout, loading them into networks, and hashing them.

Layout of one checkpoint folder, `<run>/checkpoints/step-000100/`:
  model.safetensors  EMA weights (`net.*`) and the fine grid (`grid.lat`, `grid.lon`): enough to generate
  model.json         `CheckpointMeta`: kind, UNet config, channels, normalisation, resolved run config, step
  state.safetensors  raw weights (`model.*`) and optimizer tensors (`optim.<param>.<name>`), for --resume
  state.json         `TrainingState`: step, samples seen, best validation loss, optimizer and scheduler settings
`<run>/checkpoints/latest` and `best` are text files naming a folder. Nothing here is pickled: loading
a checkpoint reads tensors and JSON only, and runs no code. Folders are written atomically (a temporary
folder renamed into place), so a crash or a full disk never leaves a half-written checkpoint behind.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from corrdiff import __version__
from corrdiff.data import Normalization
from corrdiff.diffusion import diffusion_network, EDMPrecond
from corrdiff.errors import CheckpointError
from corrdiff.models import UNetConfig

FORMAT = "corrdiff-checkpoint-1"
STEP_PREFIX = "step-"
MODEL_FILE, MODEL_META, STATE_FILE, STATE_META = "model.safetensors", "model.json", "state.safetensors", "state.json"
KINDS = ("regression", "diffusion")


@dataclass(frozen=True)
class RegressionRef:
    """The frozen regression checkpoint a diffusion model was trained against."""

    path: str
    sha256: str


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
    sigma_data: float | None = None
    """Diffusion only: σ_data of the EDM preconditioning."""
    regression_checkpoint: RegressionRef | None = None
    """Diffusion only."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "diffusion" and self.sigma_data is None:
            raise ValueError("a diffusion checkpoint needs sigma_data")
        object.__setattr__(self, "input_channels", tuple(self.input_channels))
        object.__setattr__(self, "target_channels", tuple(self.target_channels))

    def replace(self, **changes) -> "CheckpointMeta":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """model.json's text."""
        data = {"format": FORMAT, "kind": self.kind, "corrdiff_version": self.corrdiff_version,
                "unet": self.unet.to_dict(), "input_channels": list(self.input_channels),
                "target_channels": list(self.target_channels), "target_attrs": self.target_attrs,
                "stats": self.stats.to_dict(), "config": self.config}
        if self.kind == "diffusion":
            data["sigma_data"] = self.sigma_data
            data["regression_checkpoint"] = (dataclasses.asdict(self.regression_checkpoint)
                                             if self.regression_checkpoint else None)
        data |= {"step": self.step, "val_loss": self.val_loss}
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "model.json") -> "CheckpointMeta":
        """Parse model.json; a CheckpointError names `where` and what is missing or wrong."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            reference = data.get("regression_checkpoint")
            return cls(
                kind=data["kind"], unet=UNetConfig.from_dict(data["unet"]),
                input_channels=data["input_channels"], target_channels=data["target_channels"],
                stats=Normalization.from_dict(data["stats"]), config=data["config"],
                target_attrs=data.get("target_attrs") or {}, corrdiff_version=data.get("corrdiff_version", "?"),
                step=int(data.get("step", 0)), val_loss=data.get("val_loss"), sigma_data=data.get("sigma_data"),
                regression_checkpoint=RegressionRef(**reference) if reference else None,
            )
        except KeyError as err:
            raise CheckpointError(f"{where}: not a corrdiff checkpoint description (no {err.args[0]!r})") from None
        except (ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{where}: not a corrdiff checkpoint description ({err})") from None


@dataclass(frozen=True)
class TrainingState:
    """Where training stood at a checkpoint (the schema of state.json); the tensors are in state.safetensors."""

    step: int
    samples_seen: int
    best_val: float | None
    optimizer: dict
    """Optimizer hyper-parameters (`param_groups`) and its non-tensor state."""
    scheduler: dict
    """The learning-rate scheduler's state_dict, without its (unpicklable) lambdas."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "state.json") -> "TrainingState":
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{where}: not a corrdiff training state ({err})") from None


@dataclass
class ModelCheckpoint:
    """A loaded checkpoint: its folder, metadata, EMA weights and the fine grid (H, W) it was trained on."""

    path: Path
    meta: CheckpointMeta
    weights: dict[str, torch.Tensor]
    lat: torch.Tensor | None
    lon: torch.Tensor | None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of model.safetensors (provenance of everything made with it)."""
        return file_sha256(self.path / MODEL_FILE)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- writing
def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _replace_text(path: Path, text: str) -> None:
    """Atomically set a small text file (temp file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into flat tensors (for safetensors) and JSON-able metadata."""
    tensors, other = {}, {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                other.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "non_tensor_state": other}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Rebuild an optimizer state_dict from optimizer_to_tensors' output."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in meta.get("non_tensor_state", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(root: Path, meta: CheckpointMeta, ema_weights: dict[str, torch.Tensor], lat, lon,
                    raw_weights: dict[str, torch.Tensor], optimizer_state: dict, scheduler_state: dict,
                    samples_seen: int, best_val: float | None, keep_last: int, is_best: bool) -> Path:
    """Write checkpoint folder `step-NNNNNN` (step from `meta`) atomically, update `latest` (and `best`), prune.

    If writing fails (disk full, say), the partial folder is removed and the previous checkpoints and
    pointers are left exactly as they were.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{STEP_PREFIX}{meta.step:06d}"
    final = root / name
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer_state)
    model_tensors = {f"net.{k}": v for k, v in ema_weights.items()}
    model_tensors["grid.lat"] = torch.as_tensor(lat, dtype=torch.float64)
    model_tensors["grid.lon"] = torch.as_tensor(lon, dtype=torch.float64)
    state_tensors = {f"model.{k}": v for k, v in raw_weights.items()} | opt_tensors
    state = TrainingState(meta.step, samples_seen, best_val, opt_meta, scheduler_state)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        cpu = lambda tensors: {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(cpu(model_tensors), str(tmp / MODEL_FILE))
        _write_text(tmp / MODEL_META, meta.to_json())
        save_file(cpu(state_tensors), str(tmp / STATE_FILE))
        _write_text(tmp / STATE_META, state.to_json())
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = read_pointer(root, "latest")
        kept = f"; the previous checkpoint {previous} is intact" if previous else ""
        raise CheckpointError(f"could not write checkpoint {final}: {err}{kept}") from err
    _replace_text(root / "latest", name)
    if is_best:
        _replace_text(root / "best", name)
    prune(root, keep_last)
    return final


def read_pointer(root: Path, which: str) -> str | None:
    """The folder name that `latest` or `best` points at, if any."""
    pointer = Path(root) / which
    return pointer.read_text().strip() if pointer.exists() else None


def prune(root: Path, keep_last: int) -> None:
    """Delete step folders other than the last `keep_last`, the best and the latest."""
    steps = sorted(p.name for p in Path(root).glob(f"{STEP_PREFIX}*") if p.is_dir())
    keep = set(steps[-keep_last:]) | {read_pointer(root, "best"), read_pointer(root, "latest")}
    for name in steps:
        if name not in keep:
            shutil.rmtree(Path(root) / name, ignore_errors=True)


# --------------------------------------------------------------------------------------------- reading
def resolve(path: str | Path, which: str = "best") -> Path:
    """A checkpoint folder from a folder, a run folder, a `checkpoints` folder or a model.safetensors file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if (path / MODEL_FILE).exists():
        return path
    for root in (path / "checkpoints", path):
        for pointer in (which, "latest"):
            name = read_pointer(root, pointer) if root.is_dir() else None
            if name and (root / name / MODEL_FILE).exists():
                return root / name
    raise CheckpointError(f"no checkpoint found at {path} (expected a folder with {MODEL_FILE}, or a run folder)")


def load_model(path: str | Path, which: str = "best", kind: str | None = None) -> ModelCheckpoint:
    """EMA weights, metadata and grid of a checkpoint (see `resolve` for what `path` may be).

    With `kind`, a checkpoint of the other kind is an error naming both.
    """
    folder = resolve(path, which)
    try:
        tensors = load_file(str(folder / MODEL_FILE))
        text = (folder / MODEL_META).read_text()
    except (OSError, ValueError) as err:
        raise CheckpointError(f"could not read checkpoint {folder}: {err}") from err
    meta = CheckpointMeta.from_json(text, str(folder / MODEL_META))
    if kind is not None and meta.kind != kind:
        raise CheckpointError(f"{folder} is a {meta.kind!r} checkpoint, not a {kind} one")
    weights = {k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")}
    return ModelCheckpoint(folder, meta, weights, tensors.get("grid.lat"), tensors.get("grid.lon"))


def load_training_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict, TrainingState]:
    """Raw weights, optimizer state_dict and TrainingState of a checkpoint folder, for --resume."""
    folder = Path(folder)
    try:
        tensors = load_file(str(folder / STATE_FILE))
        state = TrainingState.from_json((folder / STATE_META).read_text(), str(folder / STATE_META))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"could not read training state in {folder}: {err}") from err
    raw = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return raw, optimizer_from_tensors(tensors, state.optimizer), state


def build_network(meta: CheckpointMeta) -> nn.Module:
    """The untrained network a checkpoint's weights belong to: the regression UNet, or the EDM denoiser."""
    if meta.kind == "regression":
        return meta.unet.build_regression()
    return EDMPrecond(diffusion_network(meta.unet), sigma_data=meta.sigma_data)


def load_network(checkpoint: ModelCheckpoint, device="cpu") -> nn.Module:
    """The checkpoint's EMA network on `device`, frozen (eval mode, no gradients)."""
    net = build_network(checkpoint.meta)
    try:
        net.load_state_dict(checkpoint.weights)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint.path}: the weights do not fit the network its {MODEL_META} "
                              f"describes ({str(err).splitlines()[0]})") from None
    return net.to(device).eval().requires_grad_(False)
