"""Results you can trust (issue 10): training never keeps a NaN checkpoint, --resume never mixes settings,
a damaged checkpoint is one line naming the file, interrupted writes are cleaned up, one training per run
folder, impossible settings are refused at start, and a run killed while checkpointing resumes bit-identically.
"""

import csv
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from corrdiff import checkpoint as ckpt
from corrdiff.cli.main import app
from corrdiff.config import load_config
from corrdiff.distributed import init_distributed
from corrdiff.errors import ConfigError, TrainingError
from corrdiff.file_integrity import sha256_file
from corrdiff.networks import load_network
from corrdiff.state_tensors import nonfinite_tensors
from corrdiff.training import run_training
from corrdiff.training.ema import EMA
from corrdiff.training.run import exclusive, LOCK_FILE
from corrdiff.training.schedule import lr_factor
from corrdiff.training.trainer import Trainer
from tests.training.run_synthetic import losses, main as run_main, MODULE, REPO_ROOT, synthetic_config
from tests.training.synthetic import SyntheticDataset

INFO = init_distributed("cpu")
STEP5 = Path("checkpoints") / "step-000005"


def datasets():
    return SyntheticDataset(), SyntheticDataset(8, seed=1)


def train(run_dir, steps, resume=False, kind="regression", **overrides):
    """Train the synthetic problem in this process; overrides are keys of the step's section."""
    config = synthetic_config(str(run_dir), steps, [f"{kind}.{k}={v}" for k, v in overrides.items()])
    return run_training(kind, config, *datasets(), INFO, resume=resume, progress=False)


def checkpoints(run_dir, kind="regression") -> Path:
    return Path(run_dir) / kind / "checkpoints"


@pytest.fixture(autouse=True)
def corrdiff_logger():
    """The CLI points the `corrdiff` logger at its own stderr, not on to the root: undo that, for caplog."""
    logger = logging.getLogger("corrdiff")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:], logger.propagate = [], True
    yield logger
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


# ------------------------------------------------------------------------------------ 1. divergence
def assert_no_nonfinite_checkpoint(run_dir):
    for meta_file in checkpoints(run_dir).rglob(ckpt.MODEL_META):
        meta = json.loads(meta_file.read_text())
        assert meta["val_loss"] is None or abs(meta["val_loss"]) < float("inf"), meta_file
        for name in (ckpt.MODEL_FILE, ckpt.STATE_FILE):
            assert not nonfinite_tensors(load_file(str(meta_file.parent / name))), meta_file.parent / name


def test_diverging_learning_rate_stops_before_writing_a_nan_checkpoint(tmp_path):
    # The issue's `--set regression.lr=...`: without clipping or warm-up the weights blow up by step 5,
    # where the validation loss (of the EMA) is already NaN while the training loss still looks finite.
    with pytest.raises(TrainingError, match=r"regression training stopped: .* at step \d+; (no checkpoint had been "
                                            r"written yet|the last good checkpoint \(step-\d+\) is kept)"):
        train(tmp_path, 10, lr=10, grad_clip="null", warmup_steps=0)
    assert_no_nonfinite_checkpoint(tmp_path)


def test_nonfinite_ema_weights_stop_training_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_update = EMA.update

    def update_turning_nan(self, module, batch_size, samples_seen):
        real_update(self, module, batch_size, samples_seen)
        if samples_seen > 3 * batch_size:  # the raw weights stay finite: only the EMA diverges
            next(self.module.parameters()).data.fill_(float("nan"))

    monkeypatch.setattr(EMA, "update", update_turning_nan)
    with pytest.raises(TrainingError, match=r"non-finite EMA weights .* at step 4; the last good checkpoint "
                                            r"\(step-000002\) is kept"):
        train(tmp_path, 8, checkpoint_every=2)
    root = checkpoints(tmp_path)
    assert ckpt.read_pointer(root, "latest") == ckpt.read_pointer(root, "best") == "step-000002"
    assert sorted(p.name for p in root.glob("*step-*")) == ["step-000002"]
    assert_no_nonfinite_checkpoint(tmp_path)


def test_nonfinite_validation_loss_is_never_a_checkpoint_nor_best(tmp_path, monkeypatch):
    real_validate = Trainer.validate
    monkeypatch.setattr(Trainer, "validate", lambda self: float("nan") if self.step >= 4 else real_validate(self))
    with pytest.raises(TrainingError, match=r"a validation loss of nan at step 4; the last good checkpoint"):
        train(tmp_path, 8, checkpoint_every=2)
    assert ckpt.read_pointer(checkpoints(tmp_path), "best") == "step-000002"
    assert_no_nonfinite_checkpoint(tmp_path)


# --------------------------------------------------------------------- a trained run, shared by tests
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run config file and a run folder with both steps trained for 5 steps (one checkpoint each)."""
    base = tmp_path_factory.mktemp("trained")
    config_path = write_config(base / "config.yaml", base / "run", base / "spec.yaml")
    config = load_config(config_path)
    for kind in ("regression", "diffusion"):
        run_training(kind, config, *datasets(), INFO, progress=False)
    return config_path


def write_config(path: Path, run_dir: Path, data: Path) -> Path:
    """The synthetic run config as a YAML file, for the command line."""
    raw = synthetic_config(str(run_dir), 5).model_dump(mode="json", exclude={"source"})
    raw["data"] = str(data)  # never read: the tests give the datasets
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def copy_run(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the trained run and its config: (config file, run folder)."""
    shutil.copytree(trained.parent / "run", tmp_path / "run")
    return write_config(tmp_path / "config.yaml", tmp_path / "run", trained.parent / "spec.yaml"), tmp_path / "run"


def resume(config_path: Path, kind="regression", *overrides):
    config = load_config(config_path, list(overrides))
    return run_training(kind, config, *datasets(), INFO, resume=True, progress=False)


# ------------------------------------------------------------------------------- 2. resume settings
def test_resume_applies_and_logs_changes_that_are_safe(trained, tmp_path, caplog):
    config_path, run = copy_run(trained, tmp_path)
    with open(run / "regression" / "metrics.csv", "a") as f:
        f.write("6,0.1\n")  # a row that a kill cut short
    changes = ["regression.steps=7", "regression.lr=0.001", "regression.ema_halflife_samples=100",
               "regression.keep_last=3", "regression.grad_clip=null", "regression.log_every=2"]
    with caplog.at_level(logging.INFO, logger="corrdiff"):
        resume(config_path, "regression", *changes)
    logged = caplog.text
    for expected in ("regression.steps: 5 -> 7", "regression.lr: 0.002 -> 0.001", "regression.keep_last: 2 -> 3",
                     "regression.ema_halflife_samples: 2000.0 -> 100.0", "regression.grad_clip: 1.0 -> None"):
        assert expected in logged
    section = load_config(config_path, changes).regression
    with open(run / "regression" / "metrics.csv") as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7]
    assert float(rows[6]["lr"]) == pytest.approx(0.001 * lr_factor(6, section), rel=1e-12)
    saved = yaml.safe_load((run / "regression" / "config.yaml").read_text())
    assert saved["regression"]["lr"] == 0.001
    state = json.loads((run / "regression" / "checkpoints" / "step-000007" / "state.json").read_text())
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.001


@pytest.mark.parametrize("kind, override, message", [
    ("regression", "regression.batch_size=4", r"regression\.batch_size: 8 -> 4"),
    ("regression", "regression.batch_per_device=4", r"regression\.batch_per_device: None -> 4"),
    ("regression", "regression.patch_shape=[8,8]", r"regression\.patch_shape: None -> \[8, 8\]"),
    ("regression", "regression.seed=1", r"regression\.seed: 0 -> 1"),
    ("regression", "regression.channel_weights=[1.0,2.0]", r"regression\.channel_weights: None -> \[1\.0, 2\.0\]"),
    ("regression", "regression.validation_samples=8", r"regression\.validation_samples: 4 -> 8"),
    ("regression", "model.model_channels=8", r"model\.model_channels: 16 -> 8"),
    ("regression", "data=other.yaml", r"data: '.*spec\.yaml' -> '.*other\.yaml'"),
    ("diffusion", "diffusion.P_mean=-1.0", r"diffusion\.P_mean: 0\.0 -> -1\.0|diffusion\.P_mean: -1\.2 -> -1\.0"),
    ("diffusion", "diffusion.sigma_data=1.0", r"diffusion\.sigma_data: 0\.5 -> 1\.0"),
])
def test_resume_refuses_changes_that_would_mix_two_runs(trained, tmp_path, kind, override, message):
    config_path, run = copy_run(trained, tmp_path)
    before = (run / kind / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=rf"--resume: .* cannot change within a run: .*{message}"):
        resume(config_path, kind, f"{kind}.steps=6", override)
    assert (run / kind / "config.yaml").read_text() == before  # what the run was trained with, still


def test_resume_refuses_a_retrained_regression_model(trained, tmp_path):
    config_path, run = copy_run(trained, tmp_path)
    resume(config_path, "regression", "regression.steps=10")  # `best` of the regression run moves on
    with pytest.raises(ConfigError, match=r"diffusion\.regression_checkpoint: .*step-000005 "
                                          r"\(SHA-256 [0-9a-f]{12}…\) -> .*step-000010 \(SHA-256"):
        resume(config_path, "diffusion", "diffusion.steps=6")


# -------------------------------------------------------------------- 3, 4. damaged checkpoints
def rewrite_tensors(folder: Path, name: str, change) -> None:
    """Change the tensors of a checkpoint's .safetensors file and record its new hash: only `change` is wrong."""
    tensors = change(load_file(str(folder / name)))
    save_file(tensors, str(folder / name))
    records = [(ckpt.MODEL_META, "model_sha256"), (ckpt.STATE_META, "model_sha256")] if name == ckpt.MODEL_FILE \
        else [(ckpt.STATE_META, "state_sha256")]
    for meta_file, key in records:
        edit_json(meta_file, lambda d: d.update({key: sha256_file(folder / name)}))(folder)


def first_weight(prefix):
    def change(tensors):
        name = next(k for k in sorted(tensors) if k.startswith(prefix) and tensors[k].ndim == 4)
        return tensors | {name: tensors[name][:, :-1].contiguous()}
    return change


def with_nan(prefix):
    def change(tensors):
        name = next(k for k in sorted(tensors) if k.startswith(prefix) and tensors[k].ndim == 4)
        bad = tensors[name].clone()
        bad.view(-1)[0] = float("nan")
        return tensors | {name: bad}
    return change


def edit_json(name, edit):
    def damage(folder: Path):
        data = json.loads((folder / name).read_text())
        edit(data)
        (folder / name).write_text(json.dumps(data))
    return damage


def flip_byte(name, position=-100):
    def damage(folder: Path):
        data = bytearray((folder / name).read_bytes())
        data[position] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
    return damage


def truncate(name):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:300])


def write(name, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def remove(name):
    return lambda folder: (folder / name).unlink()


def point_latest_at(text):
    return lambda folder: (folder.parent / "latest").write_text(text)


def mixed_state(folder: Path):
    state = json.loads((folder / "state.json").read_text())
    state["step"] = 10
    (folder / "state.json").write_text(json.dumps(state))


DAMAGE = {
    # name: (damage to the regression run's step-000005, file the message names, what it says)
    "model weights truncated": (truncate(ckpt.MODEL_FILE), ckpt.MODEL_FILE,
                                "content hash differs: the file is damaged"),
    "model weights empty": (write(ckpt.MODEL_FILE, b""), ckpt.MODEL_FILE, "content hash differs"),
    "model weights garbage": (write(ckpt.MODEL_FILE, os.urandom(4096)), ckpt.MODEL_FILE, "content hash differs"),
    "model weights flipped byte": (flip_byte(ckpt.MODEL_FILE), ckpt.MODEL_FILE, "content hash differs"),
    "model weights truncated, no recorded hash": (
        lambda f: [edit_json(ckpt.MODEL_META, lambda d: d.pop("model_sha256"))(f), truncate(ckpt.MODEL_FILE)(f)],
        ckpt.MODEL_FILE, "not a readable safetensors file"),
    "state tensors garbage, no recorded hash": (
        lambda f: [edit_json(ckpt.STATE_META, lambda d: d.pop("state_sha256"))(f),
                   write(ckpt.STATE_FILE, os.urandom(4096))(f)],
        ckpt.STATE_FILE, "not a readable safetensors file"),
    "model weights missing": (remove(ckpt.MODEL_FILE), ckpt.MODEL_FILE, "missing"),
    "state tensors truncated": (truncate(ckpt.STATE_FILE), ckpt.STATE_FILE, "content hash differs"),
    "state tensors empty": (write(ckpt.STATE_FILE, b""), ckpt.STATE_FILE, "content hash differs"),
    "state tensors flipped byte": (flip_byte(ckpt.STATE_FILE), ckpt.STATE_FILE, "content hash differs"),
    "model.json missing": (remove(ckpt.MODEL_META), ckpt.MODEL_META, "missing"),
    "model.json empty": (write(ckpt.MODEL_META, b""), ckpt.MODEL_META, "empty"),
    "model.json not JSON": (write(ckpt.MODEL_META, b"{'kind': regression"), ckpt.MODEL_META,
                            "not a corrdiff checkpoint description"),
    "model.json not an object": (write(ckpt.MODEL_META, b"[1, 2]"), ckpt.MODEL_META, "expected a JSON object"),
    "model.json without unet": (edit_json(ckpt.MODEL_META, lambda d: d.pop("unet")), ckpt.MODEL_META, "no 'unet'"),
    "model.json unknown kind": (edit_json(ckpt.MODEL_META, lambda d: d.update(kind="mean")), ckpt.MODEL_META,
                                "kind must be one of"),
    "model.json other kind": (edit_json(ckpt.MODEL_META, lambda d: d.update(kind="diffusion", sigma_data=0.5)),
                              "step-000005", "is a 'diffusion' checkpoint, not a regression one"),
    "model.json other format": (edit_json(ckpt.MODEL_META, lambda d: d.update(format="corrdiff-checkpoint-9")),
                                ckpt.MODEL_META, "format is 'corrdiff-checkpoint-9'"),
    "model.json bad unet": (edit_json(ckpt.MODEL_META, lambda d: d["unet"].update(depth=3)), ckpt.MODEL_META,
                            "not a corrdiff checkpoint description"),
    "state.json missing": (remove(ckpt.STATE_META), ckpt.STATE_META, "missing"),
    "state.json not JSON": (write(ckpt.STATE_META, b"\xff\xfe garbage"), ckpt.STATE_META, "cannot be read"),
    "state.json invalid JSON": (write(ckpt.STATE_META, b'{"step": 5,'), ckpt.STATE_META,
                                "not a corrdiff training state"),
    "state.json without samples_seen": (edit_json(ckpt.STATE_META, lambda d: d.pop("samples_seen")),
                                        ckpt.STATE_META, "not a corrdiff training state"),
    "state.json of another step": (mixed_state, "step-000005", "mixes two checkpoints"),
    "EMA weights of the wrong shape": (
        lambda f: rewrite_tensors(f, ckpt.MODEL_FILE, first_weight("net.")),
        ckpt.MODEL_FILE, "do not fit the network"),
    "raw weights of the wrong shape": (
        lambda f: rewrite_tensors(f, ckpt.STATE_FILE, first_weight("model.")),
        ckpt.STATE_FILE, "do not fit the network"),
    "optimizer tensors of the wrong shape": (
        lambda f: rewrite_tensors(f, ckpt.STATE_FILE, first_weight("optim.")),
        ckpt.STATE_FILE, r"optimizer tensor optim\.\d+\.exp_avg\w* has shape"),
    "NaN raw weights": (
        lambda f: rewrite_tensors(f, ckpt.STATE_FILE, with_nan("model.")),
        ckpt.STATE_FILE, "non-finite weights"),
    "latest names a missing folder": (point_latest_at("step-000010"), "checkpoints/latest",
                                      "names step-000010, which is not in"),
    "latest holds garbage": (point_latest_at("../../etc"), "checkpoints/latest", "expected the name of a checkpoint"),
}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, result.output


def assert_one_line_error(result, output, folder: Path, name: str, says: str):
    assert result.exit_code == 2, output
    assert "Traceback" not in output and not isinstance(result.exception, (AssertionError, TypeError, KeyError))
    error = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, output
    assert name in error[0] and str(folder.parent.parent) in error[0], error[0]
    assert re.search(says, error[0]), error[0]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_is_one_line_naming_the_file(trained, tmp_path, monkeypatch, damage):
    monkeypatch.setattr("corrdiff.training.run.open_datasets", lambda config, progress=False: datasets())
    config_path, run = copy_run(trained, tmp_path)
    folder = run / "regression" / STEP5
    apply, name, says = DAMAGE[damage]
    apply(folder)
    result, output = invoke("train", "regression", config_path, "--resume", "--quiet", "--set", "regression.steps=6")
    assert_one_line_error(result, output, folder, name, says)


@pytest.mark.parametrize("damage", ["model weights flipped byte", "model.json without unet",
                                    "EMA weights of the wrong shape", "NaN EMA weights", "best names a missing folder"])
def test_generate_refuses_a_damaged_checkpoint(trained, tmp_path, damage):
    config_path, run = copy_run(trained, tmp_path)
    folder = run / "diffusion" / STEP5  # generation loads (and checks) the regression checkpoint first
    if damage == "NaN EMA weights":
        rewrite_tensors(folder, ckpt.MODEL_FILE, with_nan("net."))
        name, says = ckpt.MODEL_FILE, "holds non-finite weights"
    elif damage == "best names a missing folder":
        (folder.parent / "best").write_text("step-000010")
        name, says = "checkpoints/best", "names step-000010, which is not in"
    else:
        apply, name, says = DAMAGE[damage]
        apply(folder)
    result, output = invoke("generate", config_path, "--out", tmp_path / "out.nc", "--quiet",
                            "--checkpoint-regression", run / "regression", "--checkpoint-diffusion", run / "diffusion")
    assert_one_line_error(result, output, folder, name, says)
    assert not (tmp_path / "out.nc").exists()


def test_checkpoints_without_recorded_hashes_still_load_and_resume(trained, tmp_path):
    config_path, run = copy_run(trained, tmp_path)
    folder = run / "regression" / STEP5
    edit_json(ckpt.MODEL_META, lambda d: d.pop("model_sha256"))(folder)
    edit_json(ckpt.STATE_META, lambda d: [d.pop(k) for k in ("model_sha256", "state_sha256", "best")])(folder)
    loaded = ckpt.load_model(run / "regression")
    assert loaded.meta.model_sha256 is None and loaded.sha256 == sha256_file(folder / ckpt.MODEL_FILE)
    load_network(loaded)
    resume(config_path, "regression", "regression.steps=6")
    assert json.loads((folder.parent / "step-000006" / ckpt.MODEL_META).read_text())["model_sha256"]


def test_recorded_hashes_are_those_of_the_files(trained):
    folder = trained.parent / "run" / "diffusion" / STEP5
    meta = json.loads((folder / ckpt.MODEL_META).read_text())
    state = json.loads((folder / ckpt.STATE_META).read_text())
    assert meta["model_sha256"] == state["model_sha256"] == sha256_file(folder / ckpt.MODEL_FILE)
    assert state["state_sha256"] == sha256_file(folder / ckpt.STATE_FILE)
    assert ckpt.load_model(folder).sha256 == meta["model_sha256"]


# ------------------------------------------------------------------ 5. temporary folders, one trainer
def test_next_start_removes_what_an_interrupted_write_left(trained, tmp_path, caplog):
    config_path, run = copy_run(trained, tmp_path)
    root = run / "regression" / "checkpoints"
    (root / ".step-000010.k3j2h1").mkdir()
    (root / ".step-000010.k3j2h1" / ckpt.MODEL_FILE).write_bytes(b"half")
    (root / ".latest.a8b7c6").write_text("step-0000")
    with caplog.at_level(logging.INFO, logger="corrdiff"):
        resume(config_path, "regression", "regression.steps=6")
    assert sorted(p.name for p in root.iterdir()) == ["best", "latest", "step-000005", "step-000006"]
    assert ".step-000010.k3j2h1" in caplog.text


def test_a_second_training_of_the_same_run_folder_is_refused(tmp_path):
    run_dir = tmp_path / "regression"
    with exclusive(run_dir, INFO):  # a second open file holds the lock, as another process would
        assert (run_dir / LOCK_FILE).read_text().startswith(f"PID {os.getpid()} on ")
        with pytest.raises(TrainingError, match=rf"is being trained by PID {os.getpid()} on .*wait for it to end"):
            train(tmp_path, 5)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.csv").exists()
    train(tmp_path, 5)  # released on exit
    with exclusive(run_dir, INFO):
        pass  # and released after a training


@pytest.mark.slow
def test_a_killed_training_holds_no_lock(tmp_path):
    proc = start_training(tmp_path, 2000)
    lock = tmp_path / "regression" / LOCK_FILE
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().startswith(f"PID {proc.pid} ")):
        assert proc.poll() is None and time.time() < deadline, "the training did not start"
        time.sleep(0.05)
    with pytest.raises(TrainingError, match=rf"is being trained by PID {proc.pid} on "):
        train(tmp_path, 5, resume=True)
    proc.kill()
    proc.wait(timeout=60)
    train(tmp_path, 5, resume=True)


# ------------------------------------------------------------------------- 6. impossible settings
@pytest.mark.parametrize("override, message", [
    ("regression.channel_weights=[1.0,1.0,1.0]", r"regression\.channel_weights has 3 values, but the data has 2 "
                                                 r"target channels \['u', 'v'\]"),
    ("model.channel_mult=[1,2,2,2,2,2]", r"model\.channel_mult: 6 levels need grid sides that are multiples of 32, "
                                         r"but the data's fine grid is 16×16"),
    ("model.num_heads=3", r"model: these settings give no regression network: attention: .* 3 heads"),
    ("model.grid_channels=3", r"model: these settings give no regression network: .*multiple of 4 channels"),
    ("regression.patch_shape=[32,32]", r"regression\.patch_shape: 32×32 must fit the fine grid 16×16"),
    ("regression.batch_per_device=3", r"batch_per_device 3 does not divide the per-process batch 8"),
])
def test_settings_the_data_rules_out_are_refused_at_start(tmp_path, override, message):
    config = synthetic_config(str(tmp_path), 5, [override, "model.attn_resolutions=[8]"])
    with pytest.raises(ConfigError, match=message):
        run_training("regression", config, *datasets(), INFO, progress=False)
    assert not (tmp_path / "regression" / "checkpoints").exists()


@pytest.mark.parametrize("key, value, message", [
    ("channel_mult", "[]", "needs at least one level"),
    ("channel_mult", "[1,0]", "needs at least one level"),
    ("model_channels", "0", "must be at least 1"),
    ("num_blocks", "0", "must be at least 1"),
    ("num_heads", "0", "must be at least 1"),
    ("dropout", "1.0", r"must be in \[0, 1\)"),
    ("attn_resolutions", "[0]", "at least 1"),
])
def test_impossible_model_settings_are_refused_when_the_config_loads(tmp_path, key, value, message):
    path = write_config(tmp_path / "config.yaml", tmp_path / "run", tmp_path / "spec.yaml")
    with pytest.raises(ConfigError, match=rf"config\.yaml: model\.{key}: .*{message}"):
        load_config(path, [f"model.{key}={value}"])


# ----------------------------------------------------------- SIGKILL while checkpointing, then resume
KILL_STEPS = 15
KILL_RUN = ["regression.keep_last=1"]  # so that the checkpoint at step 10 also prunes step 5


def start_training(run_dir: Path, steps: int, kill: str | None = None, resume=False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if kill:
        env["CORRDIFF_TEST_KILL"] = kill
    return subprocess.Popen([sys.executable, "-m", MODULE, "regression", str(run_dir), str(steps), *KILL_RUN]
                            + (["--resume"] if resume else []), cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE,
                            text=True)


def last_logged_step(metrics: Path) -> int:
    """The last step in a metrics.csv being written (0 before the first)."""
    try:
        rows = metrics.read_text().splitlines()[1:]
        return int(rows[-1].split(",")[0]) if rows else 0
    except (OSError, ValueError):
        return 0


def final_state(run_dir: Path) -> dict:
    """What a finished run leaves: its log, the pointers, the step folders and the last checkpoint's tensors."""
    root = checkpoints(run_dir)
    last = root / ckpt.read_pointer(root, "latest")
    return {"losses": losses(run_dir), "latest": ckpt.read_pointer(root, "latest"),
            "best": ckpt.read_pointer(root, "best"), "folders": sorted(p.name for p in root.iterdir()),
            "tensors": load_file(str(last / ckpt.MODEL_FILE)) | load_file(str(last / ckpt.STATE_FILE))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    assert run_main(["regression", str(run_dir), str(KILL_STEPS), *KILL_RUN]) == 0
    return final_state(run_dir)


def assert_resumes_bit_identically(run_dir: Path, uninterrupted: dict):
    assert run_main(["regression", str(run_dir), str(KILL_STEPS), *KILL_RUN, "--resume"]) == 0
    resumed = final_state(run_dir)
    tensors, expected = resumed.pop("tensors"), dict(uninterrupted)
    expected_tensors = expected.pop("tensors")
    assert resumed == expected  # same losses at every step (none lost or twice), pointers and folders
    assert tensors.keys() == expected_tensors.keys()
    for name, value in expected_tensors.items():
        assert torch.equal(tensors[name], value), name


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    "_write_bytes:.step-000010.+model.safetensors:half",  # half of the EMA weights on disk
    "_write_bytes:.step-000010.+state.safetensors:half",
    "_write_bytes:.step-000010.+state.json:after",  # the whole folder written, not yet renamed
    "atomic_write_text:checkpoints/latest+step-000010",  # renamed into place; `latest` still names step 5
    "atomic_write_text:checkpoints/best+step-000015",  # the last step: `latest` names it, `best` an older one
    "rmtree:step-000005:partial",  # pruning step 5, half deleted
])
def test_killed_while_checkpointing_resumes_bit_identically(tmp_path, uninterrupted, kill):
    proc = start_training(tmp_path, KILL_STEPS, kill)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the kill point was not reached: {stderr[-2000:]}"
    assert_resumes_bit_identically(tmp_path, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_at_a_random_moment_resumes_bit_identically(tmp_path, uninterrupted, seed):
    rng = random.Random(seed)
    target = rng.randint(2, KILL_STEPS - 3)
    proc = start_training(tmp_path, KILL_STEPS)
    metrics = tmp_path / "regression" / "metrics.csv"
    deadline = time.time() + 120
    while last_logged_step(metrics) < target:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the next steps, checkpoint writes included
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before the kill"
    assert_resumes_bit_identically(tmp_path, uninterrupted)
