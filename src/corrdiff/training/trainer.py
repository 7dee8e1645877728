"""Trainer: runs one CorrDiff training step (regression, diffusion or distill) to the end, resumably."""

import contextlib
import math
import signal
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from corrdiff import checkpoint as ckpt
from corrdiff.checkpoint import CheckpointMeta
from corrdiff.checkpoint_writer import save_checkpoint
from corrdiff.config import TrainSection
from corrdiff.data import PairedDataset
from corrdiff.distributed import all_reduce_mean, barrier, broadcast_flag, DistInfo
from corrdiff.errors import CheckpointError, TrainingError
from corrdiff.fast_path import autocast, compile_module, set_fused_norm, to_channels_last
from corrdiff.networks import load_weights
from corrdiff.progress import bar as progress_bar
from corrdiff.seeding import derive_seed, Draws
from corrdiff.state_tensors import nonfinite_tensors
from corrdiff.training.batches import collate, micro_batching, MicroBatches
from corrdiff.training.ema import EMA
from corrdiff.training.metrics_log import MetricsLog
from corrdiff.training.sample_check import check_fields, HEADLINE, SampleCheck
from corrdiff.training.schedule import lr_factor
from corrdiff.training.tasks import Task
from corrdiff.training_state import load_training_state

VALIDATION_STREAM = 2**31 - 1  # seed component reserved for validation draws


class Trainer:
    """Owns the network, its EMA, the optimizer and schedule; `fit()` trains to `section.steps`."""

    def __init__(self, task: Task, section: TrainSection, train_set: PairedDataset, val_set: PairedDataset | None,
                 info: DistInfo, run_dir: Path, meta: CheckpointMeta, progress: bool = True):
        self.task, self.section = task, section
        self.train_set, self.val_set, self.info = train_set, val_set, info
        self.run_dir, self.meta, self.progress = run_dir, meta, progress
        self.device = info.device
        self.fast = section.fast_path(self.device)
        self.net = task.net.to(self.device)
        if getattr(task, "regression", None) is not None:
            task.regression.to(self.device)
            if self.fast.channels_last:
                to_channels_last(task.regression)
        if self.fast.channels_last:  # before the EMA copy and the optimizer, which follow the weights' layout
            to_channels_last(self.net)
        self.ema = EMA(self.net, section.ema_halflife_samples, section.ema_rampup)
        self.module = self.net
        self.ddp: DistributedDataParallel | None = None  # kept apart: compiling wraps it, and no_sync is its own
        if info.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.module = self.ddp = DistributedDataParallel(self.net, device_ids=device_ids)
        if self.fast.fused_norm:  # the trained network only: the EMA copy and the regression run eagerly
            set_fused_norm(self.net)
        if self.fast.compile:
            self.module = compile_module(self.module)
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=section.lr, betas=section.betas, weight_decay=section.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, section))
        self.micro, self.accum = micro_batching(section, info.world_size, task.kind)
        self.channel_weights = (
            torch.tensor(section.channel_weights, device=self.device) if section.channel_weights else None
        )
        self.step, self.samples_seen, self.best_val, self.best_crps = 0, 0, math.inf, math.inf
        self.stop_requested = False
        # The sample check (diffusion, distill) runs on the main process: only it logs and writes pointers.
        self.sample_every = getattr(section, "sample_every", None) or 0
        self.sample_check = None
        samples = hasattr(task, "check_sampler")  # a network that samples ensembles (diffusion, distill)
        if samples and self.sample_every and val_set is not None and len(val_set) and info.is_main:
            self.sample_check = SampleCheck(task, section, val_set, self.device, self.fast)
        self.log_fields = check_fields(train_set.target_channels) if samples else []
        # `best` follows the sample check's fair CRPS for a task whose validation loss cannot rank checkpoints
        self.best_by_crps = getattr(task, "selects_by_samples", False) and self.sample_check is not None

    # ----------------------------------------------------------------- state
    def resume(self, checkpoint: ckpt.ModelCheckpoint | None = None) -> bool:
        """Load the run's latest checkpoint (or `checkpoint`, already loaded from it); True if resumed.

        The settings of `self.section` that may change on resume (learning rate, betas, weight decay) replace
        the ones saved with the optimizer; `corrdiff.training.run` has checked that the others are unchanged.
        """
        root = self.run_dir / "checkpoints"
        if checkpoint is None:
            if ckpt.read_pointer(root, "latest") is None:
                return False
            checkpoint = ckpt.load_model(ckpt.resolve(root, "latest"), kind=self.meta.kind)
        raw_weights, optimizer_state, state, task_state = load_training_state(checkpoint.path, checkpoint.meta)
        state_file = checkpoint.path / ckpt.STATE_FILE
        load_weights(self.net, raw_weights, state_file)
        if hasattr(self.task, "load_extra_state"):
            self.task.load_extra_state(task_state, state_file)
        load_weights(self.ema.module, checkpoint.weights, checkpoint.path / ckpt.MODEL_FILE)
        self._load_optimizer(optimizer_state, state_file)
        if not isinstance(state.scheduler.get("last_epoch"), int):
            raise CheckpointError(f"{checkpoint.path / ckpt.STATE_META}: its scheduler state has no step (last_epoch)")
        self.scheduler.load_state_dict(state.scheduler | {"lr_lambdas": [None]})
        self._apply_optimizer_settings()
        self.step, self.samples_seen = state.step, state.samples_seen
        self.best_val = state.best_val if state.best_val is not None else math.inf
        self.best_crps = state.best_crps if state.best_crps is not None else math.inf
        if self.best_by_crps:  # `best` is `best-crps`, also when the run began with its check off (by loss)
            self.best_val = self.best_crps
        if self.info.is_main:
            # A kill between updating `latest` and `best` (or `best-crps`), or while pruning, leaves a pointer
            # behind and folders to delete: the state knows which checkpoints were best.
            for pointer, folder in (("best", state.best), ("best-crps", state.best_crps_folder)):
                if folder and (root / folder).is_dir() and ckpt.read_pointer(root, pointer) != folder:
                    ckpt.set_pointer(root, pointer, folder)
            ckpt.prune(root, self.section.keep_last)
        return True

    def _load_optimizer(self, optimizer_state: dict, where: Path) -> None:
        """Load the optimizer state after checking its tensors against the parameters (torch does not)."""
        params = list(self.net.parameters())
        for param_id, entries in optimizer_state["state"].items():
            for key, value in entries.items():
                if not torch.is_tensor(value):
                    continue
                name = f"optim.{param_id}.{key}"
                if param_id >= len(params) or (value.ndim and value.shape != params[param_id].shape):
                    expected = tuple(params[param_id].shape) if param_id < len(params) else "no such parameter"
                    raise CheckpointError(f"{where}: optimizer tensor {name} has shape {tuple(value.shape)}, "
                                          f"the network's parameter {expected}")
                if nonfinite_tensors({name: value}):
                    raise CheckpointError(f"{where}: optimizer tensor {name} is not finite")
        try:
            self.optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{where}: the optimizer state does not fit the network ({err})") from None

    def _apply_optimizer_settings(self) -> None:
        """Set lr, betas and weight decay from the section (a resumed optimizer keeps the saved ones)."""
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group.update(initial_lr=self.section.lr, lr=self.section.lr * factor, betas=tuple(self.section.betas),
                         weight_decay=self.section.weight_decay)
        self.scheduler.base_lrs = [self.section.lr for _ in self.optimizer.param_groups]

    def save(self, val_loss: float | None, val_crps: float | None = None) -> Path | None:
        """Checkpoint (rank 0 writes; all ranks wait); never of non-finite weights or validation loss.

        `val_crps`: the sample check's fair CRPS of this step (main process), if it ran: `best-crps` follows it."""
        self.check_finite(val_loss)  # every rank decides alike: same weights, all-reduced loss
        folder = None
        if self.info.is_main:
            ranked = val_crps if self.best_by_crps else val_loss
            is_best = ranked is not None and ranked <= self.best_val  # False for NaN
            if is_best:
                self.best_val = ranked
            is_best_crps = val_crps is not None and val_crps <= self.best_crps  # False for NaN
            if is_best_crps:
                self.best_crps = val_crps
            scheduler_state = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
            folder = save_checkpoint(
                self.run_dir / "checkpoints", self.meta.replace(step=self.step, val_loss=val_loss,
                                                                val_crps_fair=val_crps),
                self.ema.module.state_dict(), self.train_set.lat, self.train_set.lon, self.net.state_dict(),
                self.optimizer.state_dict(), scheduler_state, self.samples_seen,
                None if math.isinf(self.best_val) else self.best_val, self.section.keep_last, is_best,
                None if math.isinf(self.best_crps) else self.best_crps, is_best_crps, self._task_state(),
            )
        barrier(self.info)
        return folder

    def _task_state(self) -> dict[str, torch.Tensor] | None:
        """What the task keeps besides the network (`Task`: `extra_state`), or None."""
        return self.task.extra_state() if hasattr(self.task, "extra_state") else None

    def check_finite(self, val_loss: float | None) -> None:
        """Stop with a TrainingError if the weights, their EMA, the task's own state or the validation loss are not
        finite."""
        problems = []
        for what, tensors in (("weights", self.net.state_dict()), ("EMA weights", self.ema.module.state_dict()),
                              ("training state", self._task_state() or {})):
            bad = nonfinite_tensors(tensors)
            if bad:
                problems.append(f"non-finite {what} ({', '.join(bad[:2])}{', …' if len(bad) > 2 else ''})")
        if val_loss is not None and not math.isfinite(val_loss):
            problems.append(f"a validation loss of {val_loss}")
        if problems:
            raise TrainingError(self._diverged(f"{' and '.join(problems)} at step {self.step}"))

    def _diverged(self, what: str) -> str:
        latest = ckpt.read_pointer(self.run_dir / "checkpoints", "latest")
        kept = f"the last good checkpoint ({latest}) is kept" if latest else "no checkpoint had been written yet"
        return (f"{self.task.kind} training stopped: {what}; {kept}. Try a lower learning rate (now "
                f"{self.section.lr}), gradient clipping, or check the data for NaNs.")

    # ------------------------------------------------------------- the loop
    def loader(self):
        sampler = MicroBatches(
            self.step, self.section.steps, self.section.batch_size, self.micro, self.accum, self.info,
            len(self.train_set), self.section.seed,
        )
        return torch.utils.data.DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=self.section.num_workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda",
        )

    def train_step(self, batches) -> float:
        """One optimizer step over this rank's micro-batches; returns the loss averaged over all ranks."""
        self.module.train()
        total = torch.zeros((), device=self.device)
        for a in range(self.accum):
            condition, target = (t.to(self.device, non_blocking=True) for t in next(batches))
            seed = derive_seed(self.section.seed, self.step, self.info.rank * self.accum + a)
            torch.manual_seed(seed)  # for dropout, which draws from the global generator (F.dropout takes none)
            last = a == self.accum - 1
            # Gradients are all-reduced once per step, after the last micro-batch (also when compiled).
            no_sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with no_sync:
                with autocast(self.fast.bf16, self.device):
                    loss = self.task.loss(self.module, condition, target, self.channel_weights, Draws(seed, self.device))
                (loss / self.accum).backward()
            total += loss.detach()
        loss = all_reduce_mean(total / self.accum, self.info).item()
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(self._diverged(f"the loss is {loss} at step {self.step + 1}"))
        if self.section.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.section.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.samples_seen += self.section.batch_size
        self.ema.update(self.net, self.section.batch_size, self.samples_seen)
        if hasattr(self.task, "after_step"):
            self.task.after_step(self.net)
        self.step += 1
        return loss

    @torch.no_grad()
    def validate(self) -> float | None:
        """Loss of the EMA network on a fixed validation subset with fixed noise (split over ranks)."""
        if self.val_set is None or len(self.val_set) == 0:
            return None
        count = min(self.section.validation_samples, len(self.val_set))
        indices = torch.linspace(0, len(self.val_set) - 1, count).round().long().tolist()
        chunks = [indices[i : i + self.micro] for i in range(0, count, self.micro)]
        total = torch.zeros(2, device=self.device)
        for c in range(self.info.rank, len(chunks), self.info.world_size):
            condition, target = (t.to(self.device) for t in collate([self.val_set[i] for i in chunks[c]]))
            seed = derive_seed(self.section.seed, VALIDATION_STREAM, c)
            with autocast(self.fast.bf16, self.device):
                loss = self.task.loss(self.ema.module, condition, target, self.channel_weights, Draws(seed, self.device))
            total += torch.stack([loss.float() * len(chunks[c]), torch.tensor(float(len(chunks[c])), device=self.device)])
        total = all_reduce_mean(total, self.info)
        return (total[0] / total[1]).item()

    def fit(self) -> str:
        """Train to the configured number of steps; returns "finished" or "interrupted" (SIGTERM)."""
        log = MetricsLog(self.run_dir, self.step, self.log_fields) if self.info.is_main else None
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        bar = progress_bar(total=self.section.steps, initial=self.step, desc=f"train {self.task.kind}",
                           disable=not (self.progress and self.info.is_main), dynamic_ncols=True)
        batches = iter(self.loader())
        status = "finished"
        try:
            tick, tick_step = time.perf_counter(), self.step
            start = tick
            while self.step < self.section.steps:
                try:
                    loss = self.train_step(batches)
                except torch.OutOfMemoryError as err:
                    raise TrainingError(self._oom_advice()) from err
                val_loss = None
                due_ckpt = self.step % self.section.checkpoint_every == 0 or self.step == self.section.steps
                if self.step % self.section.validate_every == 0 or due_ckpt:
                    val_loss = self.validate()
                checked = {}
                if self.sample_check is not None and (self.step % self.sample_every == 0
                                                      or self.step == self.section.steps):
                    checked = self.sample_check.run(self.ema.module)
                if self.step % self.section.log_every == 0 or val_loss is not None or checked:
                    now = time.perf_counter()
                    rate = (self.step - tick_step) * self.section.batch_size / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    if log:
                        log.write(step=self.step, loss=loss, val_loss="" if val_loss is None else val_loss,
                                  lr=self.scheduler.get_last_lr()[0], samples_per_s=rate, elapsed_s=now - start,
                                  **checked)
                    bar.set_postfix(loss=f"{loss:.4g}", samples_s=f"{rate:.1f}")
                if val_loss is not None and not math.isfinite(val_loss):
                    self.check_finite(val_loss)  # diverged: stop now (logged above), not at the next checkpoint
                bar.update(1)
                stop = broadcast_flag(self.stop_requested, self.info)
                if due_ckpt or stop:
                    self.save(val_loss if val_loss is not None else self.validate(), checked.get(HEADLINE))
                if stop:
                    status = "interrupted"
                    break
        finally:
            bar.close()
            if log:
                log.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return status

    def _on_sigterm(self, signum, frame):
        self.stop_requested = True

    def _oom_advice(self) -> str:
        height, width = self.section.patch_shape or self.task.unet.img_shape
        advice = [f"batch_per_device={self.micro // 2} (gradient accumulation keeps batch_size {self.section.batch_size})"] \
            if self.micro > 1 else []
        if min(height, width) >= 32:
            advice.append(f"patch_shape=[{height // 2}, {width // 2}]")
        return (f"out of GPU memory in {self.task.kind} training with micro-batches of {self.micro} at "
                f"{height}×{width}; try " + " or ".join(advice or ["a smaller model"]) + " (use --set "
                f"{self.task.kind}.KEY=VALUE)")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

