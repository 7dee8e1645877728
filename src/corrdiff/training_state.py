"""Where training stood at a checkpoint, for `--resume`: the schema of state.json (`TrainingState`) and the
reading of a checkpoint folder's training half (state.json and state.safetensors: the raw weights, the optimizer
and the task's own tensors), checked against the model half (`corrdiff.checkpoint`)."""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from corrdiff.checkpoint import CheckpointMeta, MODEL_FILE, MODEL_META, read_tensors, read_text, STATE_FILE, STATE_META
from corrdiff.documents import json_object
from corrdiff.errors import CheckpointError, one_line
from corrdiff.state_tensors import optimizer_from_tensors


@dataclass(frozen=True)
class TrainingState:
    """Where training stood at a checkpoint (the schema of state.json); the tensors are in state.safetensors."""

    step: int
    samples_seen: int
    best_val: float | None
    """The lowest value `best` follows so far: the validation loss, or a student's sample-check fair CRPS."""
    optimizer: dict
    """Optimizer hyper-parameters (`param_groups`) and its non-tensor state."""
    scheduler: dict
    """The learning-rate scheduler's state_dict, without its (unpicklable) lambdas."""
    best: str | None = None
    """The folder `best` named when this checkpoint was written (None: no validation yet)."""
    best_crps: float | None = None
    """The lowest fair CRPS of the sample check so far (None: no check yet, or a state written before it)."""
    best_crps_folder: str | None = None
    """The folder `best-crps` named when this checkpoint was written."""
    model_sha256: str | None = None
    """Hex SHA-256 of the model.safetensors written beside this state: ties the two halves together."""
    state_sha256: str | None = None
    """Hex SHA-256 of state.safetensors, verified on loading."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "state.json") -> "TrainingState":
        try:
            data = json_object(text)
            # Keys a later version added are left out, so that it can still be resumed from here.
            state = cls(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}})
            if not isinstance(state.step, int) or not isinstance(state.samples_seen, int) \
                    or not isinstance(state.optimizer, dict) or not isinstance(state.scheduler, dict):
                raise ValueError("step and samples_seen must be integers, optimizer and scheduler objects")
            return state
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{where}: not a corrdiff training state ({one_line(err)})") from None


def load_training_state(folder: str | Path, meta: CheckpointMeta | None = None
                        ) -> tuple[dict[str, torch.Tensor], dict, TrainingState, dict[str, torch.Tensor]]:
    """Raw weights, optimizer state_dict, TrainingState and the task's own tensors (`task.*`, without the prefix;
    {} for the regression and diffusion tasks) of a checkpoint folder, for --resume.

    With the folder's `meta` (from `load_model`), the two halves are checked to belong together.
    """
    folder = Path(folder)
    where = folder / STATE_META
    state = TrainingState.from_json(read_text(where), str(where))
    if meta is not None:
        if state.step != meta.step:
            raise CheckpointError(f"{folder}: {STATE_META} is of step {state.step} but {MODEL_META} of step "
                                  f"{meta.step}: the folder mixes two checkpoints")
        if state.model_sha256 and meta.model_sha256 and state.model_sha256 != meta.model_sha256:
            raise CheckpointError(f"{folder}: {STATE_META} and {MODEL_META} record different {MODEL_FILE} hashes: "
                                  "the folder mixes two checkpoints")
    tensors, _ = read_tensors(folder / STATE_FILE, state.state_sha256, where)
    raw = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    task = {k[len("task.") :]: v for k, v in tensors.items() if k.startswith("task.")}
    if not raw:
        raise CheckpointError(f"{folder / STATE_FILE}: holds no network weights (model.*)")
    try:
        optimizer_state = optimizer_from_tensors(tensors, state.optimizer)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{where}: its optimizer state cannot be read ({one_line(err)})") from None
    return raw, optimizer_state, state, task
