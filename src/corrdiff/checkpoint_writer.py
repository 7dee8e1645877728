"""Writing a checkpoint folder (its layout and schema: `corrdiff.checkpoint`).

`save_checkpoint` builds `step-NNNNNN` whole under a temporary name beside it (`corrdiff.file_integrity.atomic_folder`:
every file synced before the folder is renamed into place), then points `latest` (and `best`, `best-crps`) at it
and prunes the older folders. If anything fails, the previous checkpoints and pointers are left as they were.
"""

from pathlib import Path

import torch
from safetensors.torch import save as save_tensors

from corrdiff.checkpoint import CheckpointMeta, MODEL_FILE, MODEL_META, prune, read_pointer, STATE_FILE, STATE_META, \
    STEP_PREFIX
from corrdiff.errors import CheckpointError
from corrdiff.file_integrity import atomic_folder, atomic_write_text, sha256_bytes
from corrdiff.state_tensors import optimizer_to_tensors
from corrdiff.training_state import TrainingState


def _write_bytes(path: Path, data: bytes) -> None:
    """Write one file of a checkpoint folder being built (`atomic_folder` syncs it before the folder is renamed
    into place): the one place a checkpoint's files are written, where the reliability tests fail or kill it."""
    Path(path).write_bytes(data)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors as safetensors; returns the hex SHA-256 of the bytes written."""
    data = save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    _write_bytes(path, data)
    return sha256_bytes(data)


def save_checkpoint(root: Path, meta: CheckpointMeta, ema_weights: dict[str, torch.Tensor], lat, lon,
                    raw_weights: dict[str, torch.Tensor], optimizer_state: dict, scheduler_state: dict,
                    samples_seen: int, best_val: float | None, keep_last: int, is_best: bool,
                    best_crps: float | None = None, is_best_crps: bool = False,
                    task_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint folder `step-NNNNNN` (step from `meta`) atomically, update `latest` (and `best`, and
    `best-crps`), prune. `task_state`: tensors the training task keeps besides the network and optimizer (the
    target network of consistency distillation), kept in state.safetensors as `task.<name>`.

    If writing fails (disk full, say), the partial folder is removed and the previous checkpoints and
    pointers are left exactly as they were. The caller checks that the weights are finite.
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
    state_tensors |= {f"task.{k}": v for k, v in (task_state or {}).items()}
    best = name if is_best else read_pointer(root, "best")
    best_crps_folder = name if is_best_crps else read_pointer(root, "best-crps")
    try:
        # A folder already at `final` (a step a killed run renamed into place but never pointed to) is replaced.
        with atomic_folder(final) as tmp:
            model_sha256 = _write_tensors(tmp / MODEL_FILE, model_tensors)
            _write_bytes(tmp / MODEL_META, meta.replace(model_sha256=model_sha256).to_json().encode())
            state_sha256 = _write_tensors(tmp / STATE_FILE, state_tensors)
            state = TrainingState(meta.step, samples_seen, best_val, opt_meta, scheduler_state, best,
                                  best_crps, best_crps_folder, model_sha256, state_sha256)
            _write_bytes(tmp / STATE_META, state.to_json().encode())
    except Exception as err:
        previous = read_pointer(root, "latest")
        kept = f"; the previous checkpoint {previous} is intact" if previous else ""
        raise CheckpointError(f"could not write checkpoint {final}: {err}{kept}") from err
    atomic_write_text(root / "latest", name)
    if is_best:
        atomic_write_text(root / "best", name)
    if is_best_crps:
        atomic_write_text(root / "best-crps", name)
    prune(root, keep_last)
    return final
