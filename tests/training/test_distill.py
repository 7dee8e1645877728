"""Consistency distillation (`corrdiff train distill`, Song et al. 2023): the method against the analytic Gaussian
case, a one-parameter student that learns the closed form, training through the Trainer (the student starts as
the teacher, resume bit for bit, divergence and changed settings refused), and the student through the command
line: trained, generated with 1 and 2 network evaluations, refused with the wrong solver, packaged, tuned."""

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from safetensors.torch import load_file
from torch import nn

from corrdiff import checkpoint as ckpt
from corrdiff.diffusion import ConsistencyPrecond, EDMPrecond, consistency_scalings, diffusion_network, SamplerConfig
from corrdiff.diffusion.sampler import solver_levels
from corrdiff.diffusion.consistency import ConsistencyDistillation, consistency_levels, teacher_step
from corrdiff.distributed import init_distributed
from corrdiff.errors import ConfigError, TrainingError
from corrdiff.experiments.tuning import grid_solvers, sampler_grid, STUDENT_NFE, STUDENT_SIGMA_MIN, TuneGrid
from corrdiff.file_integrity import sha256_file
from corrdiff.networks import load_network
from corrdiff.training import run_training
from corrdiff.training.sample_check import SampleCheck
from corrdiff.training.trainer import Trainer
from tests.cli_runner import invoke, refused, succeeded, TINY_RUN
from tests.data import fixtures
from tests.training.run_synthetic import losses, MODULE, REPO_ROOT, synthetic_config
from tests.training.synthetic import SyntheticDataset

INFO = init_distributed("cpu")
S = 0.7  # data N(0, S²) per pixel
EPS = 0.002


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread for these tiny networks: on a shared 2-core machine two threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the analytic Gaussian case ----------------------------------------------------------------------------------
# The exact denoiser of N(0, S²) is D(x, σ) = x·S²/(S² + σ²); the ODE dx/dσ = (x − D)/σ = x·σ/(S² + σ²) gives
# x ∝ sqrt(S² + σ²) along a trajectory, so the flow from σ to σ' multiplies by sqrt(S² + σ'²)/sqrt(S² + σ²) and the
# consistency function (the flow to ε) is f(x, σ) = x·sqrt(S² + ε²)/sqrt(S² + σ²).

def gaussian_denoiser(x, sigma, condition=None, positions=None):
    return x * S**2 / (S**2 + sigma.reshape(-1, 1, 1, 1) ** 2)


def flow(x, sigma: float, sigma_next: float):
    return x * math.sqrt(S**2 + sigma_next**2) / math.sqrt(S**2 + sigma**2)


class GaussianStudent(nn.Module):
    """f_θ(x, σ) = x·sqrt(θ² + ε²)/sqrt(θ² + σ²): the exact consistency function of N(0, θ²); f_θ(x, ε) = x."""

    def __init__(self, std: float):
        super().__init__()
        self.std = nn.Parameter(torch.tensor(float(std)))

    def forward(self, x, sigma, condition=None, positions=None):
        sigma = sigma.reshape(-1, 1, 1, 1)
        return x * (self.std**2 + EPS**2).sqrt() / (self.std**2 + sigma**2).sqrt()


def test_the_teachers_step_follows_the_exact_flow_to_its_order():
    levels = consistency_levels(18, EPS, 80.0, 7.0)
    assert levels[0].item() == pytest.approx(EPS) and levels[-1].item() == pytest.approx(80.0)
    assert bool((levels[1:] > levels[:-1]).all())
    x = torch.linspace(-3, 3, 16, dtype=torch.float64).reshape(4, 1, 2, 2)
    errors = {"euler": [], "heun": []}
    for h in (0.4, 0.2, 0.1):  # one step from σ = 1 to 1 − h: local error O(h²) for Euler, O(h³) for Heun
        high, low = torch.full((4,), 1.0, dtype=torch.float64), torch.full((4,), 1.0 - h, dtype=torch.float64)
        exact = flow(x, 1.0, 1.0 - h)
        for solver in errors:
            errors[solver].append((teacher_step(gaussian_denoiser, x, high, low, solver=solver) - exact).abs().max())
    for solver, order in (("euler", 2), ("heun", 3)):
        for coarse, fine in zip(errors[solver], errors[solver][1:]):
            assert coarse / fine == pytest.approx(2**order, rel=0.25), solver
    assert errors["heun"][-1] < 0.1 * errors["euler"][-1]


def test_the_student_is_the_identity_at_epsilon_and_starts_out_as_the_teacher():
    torch.manual_seed(0)
    unet = synthetic_config("unused", 1).model.unet_config((16, 16), 3, 2)
    teacher = EDMPrecond(diffusion_network(unet), sigma_data=0.5)
    student = ConsistencyPrecond(diffusion_network(unet), 0.5, EPS)
    student.load_state_dict(teacher.state_dict())
    x, condition = torch.randn(2, 2, 16, 16), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(student(x, torch.full((2,), EPS), condition), x)
        for sigma in (1.0, 10.0, 80.0):
            d, f = (net(x, torch.full((2,), sigma), condition) for net in (teacher, student))
            assert (f - d).abs().max().item() < 10 * EPS * (1 + d.abs().max().item())  # O(ε/σ) apart
    c_skip, c_out, _, _ = consistency_scalings(torch.tensor([EPS]), 0.5, EPS)
    assert c_skip.item() == 1.0 and c_out.item() == 0.0


def test_the_loss_vanishes_at_the_closed_form_and_not_elsewhere():
    clean = S * torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    # Not 0: the teacher's Heun steps are not exact. Pseudo-Huber grows as ‖Δ‖ rather than ‖Δ‖² away from 0.
    for distance, ratio in (("l2", 0.02), ("pseudo_huber", 0.15)):
        cd = ConsistencyDistillation(18, EPS, 80.0, 7.0, "heun", distance)
        loss = {std: cd(GaussianStudent(std), GaussianStudent(std), gaussian_denoiser, clean,
                        generator=torch.Generator().manual_seed(1)).item() for std in (S, 0.3 * S, 3 * S)}
        assert loss[S] < ratio * min(loss[0.3 * S], loss[3 * S]), distance


def test_a_one_parameter_student_learns_the_closed_form():
    """Consistency distillation of the exact Gaussian teacher into f_θ from θ = 0.3: the loss falls and θ → S (up to
    the teacher's Heun error on 18 levels, ~1% here; on 10 levels θ settles near 0.87)."""
    student, generator = GaussianStudent(0.3), torch.Generator().manual_seed(0)
    target = GaussianStudent(0.3).requires_grad_(False)
    cd = ConsistencyDistillation(18, EPS, 80.0, 7.0, "heun", "l2")
    steps = 400
    optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    history = []
    for _ in range(steps):
        clean = S * torch.randn(64, 1, 4, 4, generator=generator)
        loss = cd(student, target, gaussian_denoiser, clean, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            target.std.lerp_(student.std, 1 - 0.9)  # θ⁻ ← μθ⁻ + (1 − μ)θ
        history.append(loss.item())
    assert np.mean(history[-40:]) < 0.05 * np.mean(history[:40])
    assert student.std.item() == pytest.approx(S, rel=0.02)


# ---- through the Trainer: a tiny teacher on the synthetic data ------------------------------------------------
DISTILL = ["distill.steps=6", "distill.batch_size=4", "distill.log_every=1", "distill.checkpoint_every=100",
           "distill.validate_every=100", "distill.validation_samples=4", "distill.num_scales=6", "distill.lr=1e-3"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, one_thread):
    """A run folder whose regression and diffusion steps are trained (2 steps each), on the synthetic data."""
    run_dir = tmp_path_factory.mktemp("teacher")
    for kind in ("regression", "diffusion"):
        train(run_dir, kind, 2)
    return run_dir


def train(run_dir, kind="distill", steps=2, resume=False, *overrides):
    config = synthetic_config(str(run_dir), steps, DISTILL + list(overrides))
    return run_training(kind, config, SyntheticDataset(), SyntheticDataset(8, seed=1), INFO, resume=resume,
                        progress=False)


def copy_of(teacher_run, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(teacher_run, run_dir)
    return run_dir


def test_distillation_writes_a_student_of_the_teacher(teacher_run, tmp_path):
    run_dir = copy_of(teacher_run, tmp_path)
    assert train(run_dir) == (run_dir / "distill", "finished")
    student = ckpt.load_model(run_dir / "distill", kind="diffusion")
    teacher = ckpt.load_model(run_dir / "diffusion", kind="diffusion")
    assert student.meta.step == 6 and student.meta.student.teacher_sha256 == teacher.sha256
    assert student.meta.student.sigma_min == EPS and student.meta.residual_std == teacher.meta.residual_std
    assert student.meta.regression_checkpoint == teacher.meta.regression_checkpoint
    sampler = student.meta.student.recommended_sampler()
    assert (sampler.solver, sampler.num_steps, sampler.schedule) == ("consistency", 2, "loglinear")
    assert isinstance(load_network(student), ConsistencyPrecond)
    assert set(losses(run_dir, "distill")) == set(range(1, 7))
    state = load_file(str(student.path / ckpt.STATE_FILE))
    target = {k[len("task.target."):]: v for k, v in state.items() if k.startswith("task.target.")}
    assert set(target) == set(student.weights)  # the target network is kept for --resume
    # the student started as the teacher: its optimizer moved it away from there, not from random weights
    assert not any(torch.equal(student.weights[k], teacher.weights[k]) for k in student.weights
                   if student.weights[k].is_floating_point() and student.weights[k].numel() > 1)


def test_the_sample_check_samples_the_student_as_it_recommends(teacher_run, tmp_path, monkeypatch):
    run_dir = copy_of(teacher_run, tmp_path)
    used = []
    real_run = SampleCheck.run

    def run(self, denoiser):
        used.append((self.sampler, type(denoiser)))
        return real_run(self, denoiser)

    monkeypatch.setattr(SampleCheck, "run", run)
    train(run_dir, "distill", 2, False, "distill.sample_every=3", "distill.sample_times=2",
          "distill.sample_members=2", "distill.recommended_steps=1")
    assert [(s.solver, s.num_steps, s.sigma_min, k) for s, k in used] == [("consistency", 1, EPS, ConsistencyPrecond)] * 2
    with open(run_dir / "distill" / "metrics.csv", newline="") as f:
        logged = {int(r["step"]): r for r in csv.DictReader(f)}
    assert [step for step, r in logged.items() if r["val_crps_fair"]] == [3, 6]  # every 3 and at the last
    assert all(float(logged[s]["val_crps_fair"]) > 0 and math.isfinite(float(logged[s]["val_spread_skill"]))
               for s in (3, 6))


def test_a_students_best_checkpoint_is_its_lowest_fair_crps_not_its_loss(teacher_run, tmp_path, scripted):
    run_dir = copy_of(teacher_run, tmp_path)
    scripted += [0.5, 0.2, 0.4]  # steps 2, 4, 6
    train(run_dir, "distill", 2, False, "distill.sample_every=2", "distill.checkpoint_every=2",
          "distill.validate_every=2")
    root = run_dir / "distill" / "checkpoints"
    assert ckpt.read_pointer(root, "best") == ckpt.read_pointer(root, "best-crps") == "step-000004"
    assert ckpt.load_model(run_dir / "distill", kind="diffusion").meta.step == 4  # what generate takes
    # Without the sample check the validation loss is all there is.
    off = copy_of(teacher_run, tmp_path / "off")
    train(off, "distill", 2, False, "distill.sample_every=0", "distill.checkpoint_every=2",
          "distill.validate_every=2")
    kept = [ckpt.load_model(p, kind="diffusion").meta for p in (off / "distill" / "checkpoints").glob("step-*")]
    best = ckpt.load_model(off / "distill", kind="diffusion").meta
    assert best.val_loss == min(m.val_loss for m in kept) and best.val_crps_fair is None


def test_a_distillation_begun_without_the_check_lets_it_pick_best_once_resumed_with_it(teacher_run, tmp_path,
                                                                                         scripted):
    run_dir = copy_of(teacher_run, tmp_path)
    every_two = ["distill.checkpoint_every=2", "distill.validate_every=2", "distill.keep_last=10"]
    train(run_dir, "distill", 2, False, "distill.steps=4", "distill.sample_every=0", *every_two)
    root = run_dir / "distill" / "checkpoints"
    assert ckpt.read_pointer(root, "best") in {"step-000002", "step-000004"}  # by validation loss
    scripted += [50.0, 30.0, 40.0]  # steps 6, 8, 10: fair CRPS made far above any loss of steps 2 and 4
    train(run_dir, "distill", 2, True, "distill.steps=10", "distill.sample_every=2", *every_two)
    assert ckpt.read_pointer(root, "best") == ckpt.read_pointer(root, "best-crps") == "step-000008"


def test_a_distillation_under_bf16_autocast_follows_the_float32_one(teacher_run, tmp_path, monkeypatch):
    """precision: bf16 runs the student, the target network and the teacher under bf16 autocast (here on the CPU,
    as on CUDA): its losses follow float32's to bf16's precision, and what it keeps is float32 and finite."""
    casts = []
    real_loss = ConsistencyDistillation.__call__

    def recording(self, *args, **kwargs):
        casts.append(torch.is_autocast_enabled("cpu"))
        return real_loss(self, *args, **kwargs)

    monkeypatch.setattr(ConsistencyDistillation, "__call__", recording)
    runs = {}
    for precision in ("fp32", "bf16"):
        runs[precision] = copy_of(teacher_run, tmp_path / precision)
        casts.clear()
        train(runs[precision], "distill", 2, False, f"distill.precision={precision}", "distill.sample_every=0")
        assert casts and all(casts) == (precision == "bf16") and any(casts) == (precision == "bf16")
    full, half = (losses(runs[p], "distill") for p in ("fp32", "bf16"))
    assert full.keys() == half.keys() and full != half  # autocast ran: not the float32 arithmetic
    assert all(half[step] == pytest.approx(full[step], rel=0.1, abs=1e-4) for step in full)
    student = ckpt.load_model(runs["bf16"] / "distill", kind="diffusion")
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in student.weights.values()
               if w.is_floating_point())


def test_an_interrupted_distillation_resumes_bit_for_bit(teacher_run, tmp_path, monkeypatch):
    whole = copy_of(teacher_run, tmp_path / "whole")
    train(whole)
    split = copy_of(teacher_run, tmp_path / "split")
    real_step = Trainer.train_step

    def stop_after_three(self, batches):
        loss = real_step(self, batches)
        self.stop_requested = self.step == 3  # as SIGTERM does: the step's checkpoint, then "interrupted"
        return loss

    monkeypatch.setattr(Trainer, "train_step", stop_after_three)
    assert train(split)[1] == "interrupted"
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert ckpt.read_pointer(split / "distill" / "checkpoints", "latest") == "step-000003"
    assert train(split, resume=True)[1] == "finished"
    assert losses(split, "distill") == losses(whole, "distill")
    for name in (ckpt.MODEL_FILE, ckpt.STATE_FILE):  # the weights, their EMA, optimizer and target network
        assert sha256_file(split / "distill" / "checkpoints" / "step-000006" / name) == \
            sha256_file(whole / "distill" / "checkpoints" / "step-000006" / name), name


@pytest.mark.slow  # a process of its own, SIGKILLed while it writes a checkpoint, then resumed
def test_a_distillation_killed_while_checkpointing_resumes_bit_for_bit(teacher_run, tmp_path):
    whole = copy_of(teacher_run, tmp_path / "whole")
    every_two = ["distill.checkpoint_every=2"]
    train(whole, "distill", 2, False, *every_two)
    killed = copy_of(teacher_run, tmp_path / "killed")
    env = dict(os.environ, OMP_NUM_THREADS="1", CORRDIFF_TEST_KILL=f"_write_bytes:step-000004+{ckpt.STATE_FILE}")
    process = subprocess.run([sys.executable, "-m", MODULE, "distill", str(killed), "2", *DISTILL, *every_two],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert ckpt.read_pointer(killed / "distill" / "checkpoints", "latest") == "step-000002"
    train(killed, "distill", 2, True, *every_two)
    assert losses(killed, "distill") == losses(whole, "distill")
    for name in (ckpt.MODEL_FILE, ckpt.STATE_FILE):
        assert sha256_file(killed / "distill" / "checkpoints" / "step-000006" / name) == \
            sha256_file(whole / "distill" / "checkpoints" / "step-000006" / name), name


def test_resume_refuses_a_change_of_what_the_student_learns(teacher_run, tmp_path, caplog):
    run_dir = copy_of(teacher_run, tmp_path)
    train(run_dir, "distill", 2, False, "distill.steps=2")
    with pytest.raises(ConfigError, match=r"distill.target_ema: 0.95 -> 0.5"):
        train(run_dir, "distill", 2, True, "distill.steps=4", "distill.target_ema=0.5")
    train(run_dir, "distill", 2, True, "distill.steps=3", "distill.recommended_steps=4")
    assert "distill.recommended_steps: 2 -> 4" in caplog.text
    train(run_dir, "diffusion", 3, True)  # the teacher moves on: its best is another checkpoint
    with pytest.raises(ConfigError, match=r"distill.teacher_checkpoint: .*step-000002.* -> .*step-000003"):
        train(run_dir, "distill", 2, True, "distill.steps=4")


def test_a_diverging_distillation_stops_before_writing_a_nan_checkpoint(teacher_run, tmp_path):
    run_dir = copy_of(teacher_run, tmp_path)
    with pytest.raises(TrainingError, match="distill training stopped: .*lower learning rate"):
        train(run_dir, "distill", 2, False, "distill.lr=1e30", "distill.grad_clip=null", "distill.steps=20",
              "distill.checkpoint_every=1")
    for folder in (run_dir / "distill" / "checkpoints").glob("step-*"):
        for name in (ckpt.MODEL_FILE, ckpt.STATE_FILE):
            assert all(torch.isfinite(t).all() for t in load_file(str(folder / name)).values())


def test_a_patch_trained_teacher_is_distilled_on_its_patches_and_a_student_is_no_teacher(teacher_run, tmp_path):
    run_dir = copy_of(teacher_run, tmp_path)
    shutil.rmtree(run_dir / "diffusion")
    train(run_dir, "diffusion", 2, False, "diffusion.patch_shape=[8, 8]")
    train(run_dir)
    assert ckpt.load_meta(run_dir / "distill").patch_shape == (8, 8)
    with pytest.raises(ConfigError, match="is a consistency student itself"):
        train(tmp_path / "again", "distill", 2, False, f"distill.teacher_checkpoint={run_dir / 'distill'}",
              f"diffusion.regression_checkpoint={run_dir / 'regression'}")


def test_tune_measures_the_consistency_solver_of_a_student_only():
    student = type("Meta", (), {"student": object()})()
    teacher = type("Meta", (), {"student": None})()
    assert grid_solvers(TuneGrid().solvers, student, "s") == ["consistency"]
    assert "consistency" not in grid_solvers(TuneGrid().solvers, teacher, "t")
    with pytest.raises(ConfigError, match="--solver heun cannot sample s, a consistency student"):
        grid_solvers(["heun"], student, "s")
    with pytest.raises(ConfigError, match="--solver consistency cannot sample t, a denoiser"):
        grid_solvers(["consistency"], teacher, "t")
    assert STUDENT_NFE == (1, 2, 4)


def test_one_consistency_evaluation_is_measured_at_one_sigma_min_only():
    base = SamplerConfig(solver="consistency", schedule="loglinear", num_steps=2)
    grid = sampler_grid(base, ["consistency"], (1, 2), sigma_mins=(0.03, 0.002))
    assert [(s.num_steps, s.sigma_min) for s in grid] == [(1, 0.03), (2, 0.03), (2, 0.002)]
    # the levels it samples at: NFE 1 σ_max alone; NFE 2 σ_max and sqrt(σ_max·σ_min) (log-linear)
    assert solver_levels(grid[0]) == pytest.approx([800.0, 0.03])
    assert solver_levels(grid[2]) == pytest.approx([800.0, math.sqrt(800 * 0.002), 0.002])


# ---- through the command line -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, one_thread):
    """(folder, config): the generic fixture data, both steps and the student trained through `corrdiff train`."""
    folder = tmp_path_factory.mktemp("distill-cli")
    fixtures.write_generic(folder / "data")
    config = folder / "config.yaml"
    distill = {"steps": 2, "batch_size": 4, "checkpoint_every": 2, "validate_every": 2, "log_every": 1,
               "num_scales": 4}
    config.write_text(yaml.safe_dump({"data": "data/spec.yaml", "run_dir": "run", **TINY_RUN, "distill": distill}))
    for kind in ("regression", "diffusion", "distill"):
        result = succeeded(invoke("train", kind, config, "--quiet"))
    # the last line says how to choose the student's sampler, in a folder tune may write (beside the student)
    assert result.output.splitlines()[-1] == (
        f"choose its sampler (NFE 1, 2, 4 and where its levels end) on the validation split: corrdiff tune {config} "
        f"--checkpoint-diffusion {folder / 'run' / 'distill'} --out {folder / 'run' / 'distill-tune'}")
    return folder, config


@pytest.mark.parametrize("nfe", [1, 2])
def test_generate_samples_the_student_with_one_and_two_evaluations(cli_run, nfe):
    folder, config = cli_run
    out = folder / f"student-{nfe}.nc"
    succeeded(invoke("generate", config, "--checkpoint-diffusion", folder / "run" / "distill", "--out", out,
                     "--quiet", "--set", "sampler.solver=consistency", "--set", f"sampler.num_steps={nfe}"))
    with xr.open_dataset(out) as ds:
        assert ds["t2m"].dims == ("time", "member", "y", "x") and ds["t2m"].shape == (3, 2, 16, 24)
        for name in ("t2m", "u10", "refl"):
            assert np.isfinite(ds[name].values).all()
        assert ds.attrs["sampler_solver"] == "consistency" and ds.attrs["sampler_num_steps"] == str(nfe)
        assert ds.attrs["diffusion_checkpoint_sha256"] == ckpt.load_model(folder / "run" / "distill").sha256


def test_generate_refuses_a_student_with_another_solver_and_a_teacher_with_consistency(cli_run):
    folder, config = cli_run
    line = refused(invoke("generate", config, "--checkpoint-diffusion", folder / "run" / "distill", "--out",
                          folder / "no.nc", "--quiet"))
    assert "is a consistency student" in line and "sampler.solver: consistency" in line
    line = refused(invoke("generate", config, "--out", folder / "no.nc", "--quiet", "--set",
                          "sampler.solver=consistency"))
    assert "samples a consistency student" in line and "is a denoiser" in line
    assert not (folder / "no.nc").exists()


def test_a_package_and_the_api_sample_the_student_with_its_recommended_sampler(cli_run):
    import corrdiff

    folder, config = cli_run
    package = folder / "package"
    succeeded(invoke("export", folder / "run", "--checkpoint-diffusion", folder / "run" / "distill", "--out", package))
    out = folder / "from-package.nc"
    succeeded(invoke("generate", "--model", package, "--input", folder / "data" / "coarse.nc", "--times",
                     "2021-01-02T03", "--out", out, "--quiet"))
    with xr.open_dataset(out) as ds:
        assert ds.attrs["sampler_solver"] == "consistency" and np.isfinite(ds["t2m"].values).all()
    model = corrdiff.load((folder / "run" / "regression", folder / "run" / "distill"))
    assert model.package.sampler.solver == "consistency" and model.package.sampler.num_steps == 2
    with xr.open_dataset(folder / "data" / "coarse.nc") as coarse:
        ds = model.downscale(coarse, members=2, times=["2021-01-02T03"])
    assert ds["u10"].shape == (1, 2, 16, 24) and np.isfinite(ds["u10"].values).all()


def test_tune_of_a_student_measures_consistency_at_one_two_and_four_evaluations(cli_run):
    folder, config = cli_run
    succeeded(invoke("tune", config, "--checkpoint-diffusion", folder / "run" / "distill", "--split", "train",
                     "--times", "2", "--members", "2", "--no-calibrate", "--out", folder / "tune", "-q"))
    with open(folder / "tune" / "tune.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["solver"] for r in rows} == {"consistency"}
    # NFE 2 and 4 at every σ_min of the student's grid; NFE 1, which σ_min cannot change, once
    measured = sorted((int(r["network_evaluations"]), float(r["sigma_min"])) for r in rows)
    assert measured == [(1, STUDENT_SIGMA_MIN[0])] + [(n, s) for n in (2, 4) for s in STUDENT_SIGMA_MIN]
    assert all(math.isfinite(float(r["crps_fair_norm"])) for r in rows)
    # σ_min places the level NFE 2 re-noises to, so it changes the members
    two = {float(r["sigma_min"]): float(r["crps_fair_norm"]) for r in rows if r["network_evaluations"] == "2"}
    assert len(set(two.values())) == len(STUDENT_SIGMA_MIN)
