"""Checkpoints in safetensors with JSON sidecars; written atomically, pruned to the last K and the best.

Layout of one checkpoint folder, `<run>/checkpoints/step-000100/`:
  model.safetensors  EMA weights (`net.*`) and the fine grid (`grid.lat`, `grid.lon`): enough to generate
  model.json         resolved config, UNet config, channel names, normalisation statistics, version, step
  state.safetensors  raw weights (`model.*`) and optimizer tensors (`optim.<param>.<name>`), for --resume
  state.json         optimizer hyper-parameters, scheduler state, step, samples seen, best validation loss
`<run>/checkpoints/latest` and `best` are text files naming a folder. Nothing here is pickled: loading
a checkpoint reads tensors and JSON only, and runs no code.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from corrdiff.errors import CheckpointError

STEP_PREFIX = "step-"


@dataclass
class Checkpoint:
    """What generation needs from a checkpoint: EMA weights, the sidecar and the grid."""

    path: Path
    weights: dict[str, torch.Tensor]
    meta: dict
    lat: torch.Tensor | None
    lon: torch.Tensor | None


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
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


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into flat tensors (for safetensors) and JSON-able metadata."""
    state = optimizer.state_dict()
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


def save_checkpoint(
    root: Path,
    step: int,
    model_tensors: dict[str, torch.Tensor],
    model_meta: dict,
    state_tensors: dict[str, torch.Tensor],
    state_meta: dict,
    keep_last: int,
    is_best: bool,
) -> Path:
    """Write checkpoint folder `step-NNNNNN` atomically, update `latest` (and `best`), prune old ones.

    If writing fails (disk full, say), the partial folder is removed and the previous checkpoints and
    pointers are left exactly as they were.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{STEP_PREFIX}{step:06d}"
    final = root / name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        cpu = lambda tensors: {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(cpu(model_tensors), str(tmp / "model.safetensors"))
        _write_json(tmp / "model.json", model_meta)
        save_file(cpu(state_tensors), str(tmp / "state.safetensors"))
        _write_json(tmp / "state.json", state_meta)
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


def resolve(path: str | Path, which: str = "best") -> Path:
    """A checkpoint folder from a folder, a run folder, a `checkpoints` folder or a model.safetensors file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    if (path / "model.safetensors").exists():
        return path
    for root in (path / "checkpoints", path):
        for pointer in (which, "latest"):
            name = read_pointer(root, pointer) if root.is_dir() else None
            if name and (root / name / "model.safetensors").exists():
                return root / name
    raise CheckpointError(f"no checkpoint found at {path} (expected a folder with model.safetensors, or a run folder)")


def load_model(path: str | Path, which: str = "best") -> Checkpoint:
    """EMA weights, sidecar and grid of a checkpoint (see `resolve` for what `path` may be)."""
    folder = resolve(path, which)
    try:
        tensors = load_file(str(folder / "model.safetensors"))
        meta = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"could not read checkpoint {folder}: {err}") from err
    weights = {k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")}
    return Checkpoint(folder, weights, meta, tensors.get("grid.lat"), tensors.get("grid.lon"))


def load_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Training state tensors and metadata of a checkpoint folder, for --resume."""
    folder = Path(folder)
    try:
        return load_file(str(folder / "state.safetensors")), json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"could not read training state in {folder}: {err}") from err
