"""Checkpoints: safetensors + JSON only, atomic under write failures, pruned, and failure behaviour of training."""

import errno
import json
import pickle
from pathlib import Path

import pytest
import torch

from corrdiff import checkpoint as ckpt, checkpoint_writer
from corrdiff.training import CheckpointError, run_training, TrainingError
from corrdiff.distributed import init_distributed
from corrdiff.training.tasks import RegressionTask
from tests.training.run_synthetic import synthetic_config
from tests.training.synthetic import SyntheticDataset

INFO = init_distributed("cpu")


def train(run_dir, steps, resume=False, **overrides):
    config = synthetic_config(str(run_dir), steps, [f"regression.{k}={v}" for k, v in overrides.items()])
    return run_training("regression", config, SyntheticDataset(), SyntheticDataset(8, seed=1), INFO,
                        resume=resume, progress=False)


def test_checkpoint_holds_only_safetensors_and_json_and_loads_without_pickle(tmp_path, monkeypatch):
    train(tmp_path, 10)
    root = tmp_path / "regression" / "checkpoints"
    files = {p.suffix for p in root.rglob("*") if p.is_file() and p.parent != root}
    assert files == {".safetensors", ".json"}

    def forbidden(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    loaded = ckpt.load_model(tmp_path / "regression")
    assert loaded.meta.kind == "regression" and loaded.meta.step == 10
    assert loaded.meta.target_channels == ("u", "v")
    assert loaded.lat.shape == (16, 16)
    # Resuming reads the training state the same way.
    train(tmp_path, 12, resume=True)
    assert json.loads((root / "step-000012" / "state.json").read_text())["step"] == 12


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    from corrdiff.config import ConfigError

    train(tmp_path, 5)
    with pytest.raises(ConfigError, match=r"already holds checkpoints \(latest: step-000005\).*--resume"):
        train(tmp_path, 10)


def test_keeps_last_k_and_best(tmp_path):
    train(tmp_path, 20, keep_last=2, checkpoint_every=5, validate_every=5)
    root = tmp_path / "regression" / "checkpoints"
    steps = sorted(p.name for p in root.glob("step-*"))
    best = ckpt.read_pointer(root, "best")
    assert steps[-2:] == ["step-000015", "step-000020"]
    assert set(steps) == {"step-000015", "step-000020", best}
    assert ckpt.read_pointer(root, "latest") == "step-000020"


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    train(tmp_path, 5)
    root = tmp_path / "regression" / "checkpoints"
    before = {p: p.read_bytes() for p in (root / "step-000005").iterdir()}
    real_write = checkpoint_writer._write_bytes
    calls = []

    def disk_full(path, data):
        calls.append(path)
        if len(calls) == 2:  # model.safetensors is written, then the disk fills up during model.json
            Path(path).write_bytes(data[:7])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(checkpoint_writer, "_write_bytes", disk_full)
    with pytest.raises(CheckpointError, match=r"step-000010.*No space left.*step-000005 is intact"):
        train(tmp_path, 10, resume=True)
    assert ckpt.read_pointer(root, "latest") == "step-000005"
    assert sorted(p.name for p in root.iterdir()) == ["best", "latest", "step-000005"]  # no temp debris
    assert {p: p.read_bytes() for p in (root / "step-000005").iterdir()} == before
    monkeypatch.setattr(checkpoint_writer, "_write_bytes", real_write)
    assert ckpt.load_model(root).meta.step == 5


def test_nonfinite_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = RegressionTask.loss
    state = {"calls": 0}

    def loss_turning_nan(self, *args, **kwargs):
        state["calls"] += 1
        value = real_loss(self, *args, **kwargs)
        return value * float("nan") if state["calls"] > 7 else value

    monkeypatch.setattr(RegressionTask, "loss", loss_turning_nan)
    with pytest.raises(TrainingError, match=r"loss is nan at step 7.*last good checkpoint \(step-000005\)"):
        train(tmp_path, 20)
    root = tmp_path / "regression" / "checkpoints"
    assert ckpt.read_pointer(root, "latest") == "step-000005"
    weights = ckpt.load_model(root, "latest").weights
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_out_of_memory_suggests_smaller_micro_batch(tmp_path, monkeypatch):
    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(RegressionTask, "loss", oom)
    with pytest.raises(TrainingError, match=r"out of GPU memory.*batch_per_device=4"):
        train(tmp_path, 3)


def test_resolve_reads_best_crps_then_best_then_latest_and_a_pointer_file(tmp_path):
    root = tmp_path / "diffusion" / "checkpoints"
    for step in (2, 4, 6):
        (root / f"step-00000{step}").mkdir(parents=True)
    ckpt.set_pointer(root, "latest", "step-000006")
    assert ckpt.resolve(tmp_path / "diffusion", "best-crps") == root / "step-000006"  # no best, no best-crps
    ckpt.set_pointer(root, "best", "step-000002")
    assert ckpt.resolve(tmp_path / "diffusion", "best-crps") == root / "step-000002"
    ckpt.set_pointer(root, "best-crps", "step-000004")
    assert ckpt.resolve(tmp_path / "diffusion", "best-crps") == root / "step-000004"
    assert ckpt.resolve(tmp_path / "diffusion") == root / "step-000002"  # "best" still means the validation loss
    assert ckpt.resolve(tmp_path / "diffusion", "latest") == root / "step-000006"
    # A pointer file is the folder it names, whatever `which` says.
    assert ckpt.resolve(root / "best-crps", "latest") == root / "step-000004"
    with pytest.raises(CheckpointError, match="unknown checkpoint 'worst': expected one of latest, best, best-crps"):
        ckpt.resolve(tmp_path / "diffusion", "worst")


def test_export_refuses_an_unknown_which_naming_the_choices(tmp_path):
    from typer.testing import CliRunner

    from corrdiff.cli.main import app

    result = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "out"), "--which", "worst"])
    assert result.exit_code != 0
    assert "--which must be one of latest, best, best-crps, got 'worst'" in result.output


def test_model_json_keeps_a_consistency_student_under_its_own_format():
    """`CheckpointMeta.student` (corrdiff train distill): written and read back, format 4 (a reader of 1–3 would
    sample the student as a denoiser, so it must refuse it); absent, the JSON is what it always was."""
    config = synthetic_config("unused", 1)
    data = SyntheticDataset(n=2)
    teacher = ckpt.CheckpointMeta(kind="diffusion", unet=config.model.unet_config((16, 16), 3, 2),
                                  input_channels=data.input_channels, target_channels=data.target_channels,
                                  stats=data.stats, config="{}", sigma_data=0.5, residual_std=(0.2, 0.4))
    sampler = {"solver": "consistency", "schedule": "loglinear", "num_steps": 2, "sigma_min": 0.002, "sigma_max": 80.0}
    student = teacher.replace(student=ckpt.StudentRef("/runs/a/diffusion/checkpoints/step-000100", "ab" * 32, 0.002,
                                                      sampler))
    text = student.to_json()
    assert json.loads(text)["format"] == ckpt.FORMAT_STUDENT
    again = ckpt.CheckpointMeta.from_json(text)
    assert again.student == student.student and again.to_json() == text
    assert again.student.recommended_sampler().num_steps == 2
    assert "student" not in json.loads(teacher.to_json()) and ckpt.CheckpointMeta.from_json(teacher.to_json()).student \
        is None
    stripped = json.loads(text) | {"format": ckpt.FORMAT_RESIDUAL}
    with pytest.raises(CheckpointError, match="does not go with .*student set"):
        ckpt.CheckpointMeta.from_json(json.dumps(stripped))
    for bad, message in (({"solver": "heun"}, "consistency solver, not 'heun'"), ({"num_steps": 0}, "num_steps"),
                         ({"sigma_minimum": 1.0}, "sigma_minimum")):
        spoilt = json.loads(text)
        spoilt["student"]["sampler"] = sampler | bad
        with pytest.raises(CheckpointError, match=message):
            ckpt.CheckpointMeta.from_json(json.dumps(spoilt))
    with pytest.raises(ValueError, match="diffusion checkpoint only"):
        ckpt.CheckpointMeta(kind="regression", unet=teacher.unet, input_channels=teacher.input_channels,
                            target_channels=teacher.target_channels, stats=teacher.stats, config="{}",
                            student=student.student)
