"""The training log of a run: metrics.csv, and TensorBoard events when tensorboard is installed."""

import csv
from pathlib import Path

from corrdiff.file_integrity import atomic_file


class MetricsLog:
    """metrics.csv (and TensorBoard events when tensorboard is installed) in the run folder.

    `extra`: columns after FIELDS (the sample check's, for a diffusion run); a row leaves empty what it lacks.
    """

    FIELDS = ["step", "loss", "val_loss", "lr", "samples_per_s", "elapsed_s"]

    def __init__(self, run_dir: Path, resume_step: int | None, extra: list[str] = ()):
        self.path = run_dir / "metrics.csv"
        self.fields = self.FIELDS + [f for f in extra if f not in self.FIELDS]
        rows = []
        if resume_step is not None and self.path.exists():
            # Drop rows logged after the checkpoint we resume from: they are about to be recomputed.
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                rows = [r for r in reader if _step(r, reader.fieldnames) is not None
                        and _step(r, reader.fieldnames) <= resume_step]
        # Rewritten under a temporary name and renamed: a kill here never loses the log of the steps kept.
        with atomic_file(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            pass

    def write(self, **row) -> None:
        # Appended in place and not synced: what a killed process wrote stays, and a resume recomputes the rows
        # after its checkpoint anyway.
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, restval="").writerow(row)
        if self.tb is not None:
            for key in self.fields:
                if key not in ("step", "elapsed_s") and row.get(key) not in (None, ""):
                    self.tb.add_scalar(key, row[key], row["step"])
            self.tb.flush()

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _step(row: dict, fieldnames) -> int | None:
    """A row's step, or None for a row that a kill cut short (a missing field, or a step that is not a number)."""
    if None in row or any(row.get(key) is None for key in fieldnames or ()):
        return None
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return None
