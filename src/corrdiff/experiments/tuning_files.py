"""What `corrdiff tune` writes: the row log a killed tune resumes from, and tune.csv, tune.nc, tune.png.

The row log, `<out>/tune.rows.jsonl`, is a header line (format, the fingerprint's digest and ingredients)
followed by one JSON line per measured setting: the whole `sampler:` section, its per-time sums and spectra
(`corrdiff.experiments.tuning_scores.Scores`) and its seconds per member. Each line is flushed to disk as soon as the
setting is measured, so a tune killed at any point loses at most the setting it was measuring. A rerun reuses
the rows whose setting it measures again, but only when its fingerprint (`corrdiff.experiments.tuning.run_fingerprint`:
checkpoints, scored data, seeds, members, patches, precision, version) is the same; otherwise it starts over.
The log is removed once the outputs are written.
"""

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from corrdiff import sampler_file  # noqa: E402
from corrdiff.diffusion.sampler import SamplerConfig  # noqa: E402
from corrdiff.file_integrity import append_synced, atomic_write_text  # noqa: E402
from corrdiff.inference.fingerprint import Fingerprint  # noqa: E402
from corrdiff.experiments.tuning_scores import Scores  # noqa: E402

log = logging.getLogger(__name__)

OUTPUTS = ("tune.csv", "tune.nc", "tune.png")
ROWS = "tune.rows.jsonl"
ROWS_FORMAT = "corrdiff-tune-rows-2"  # 1 held scores over all times only: no bootstrap from those


class RowLog:
    """The settings measured so far in `path` under `fingerprint`: `get` a measured one, `add` a new one."""

    def __init__(self, path, fingerprint: Fingerprint):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.rows: dict[SamplerConfig, tuple[Scores, float]] = self._read()
        self._rewrite()  # the header, and only the whole rows: a line cut short by a kill is dropped

    def get(self, setting: SamplerConfig) -> tuple[Scores, float] | None:
        """(per-time scores, seconds per member) of `setting` if it was measured, else None."""
        return self.rows.get(setting)

    def add(self, setting: SamplerConfig, scores: Scores, seconds: float) -> None:
        """Record a measured setting, on disk before returning."""
        self.rows[setting] = (scores, seconds)
        append_synced(self.path, _row_line(setting, scores, seconds))  # grows in place: the rows are never rewritten

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _read(self) -> dict:
        if not self.path.exists():
            return {}
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            header = {}
        if not isinstance(header, dict) or not str(header.get("format", "")).startswith("corrdiff-tune-rows-"):
            log.warning(f"{self.path}: not a tune row log; measuring every setting")
            return {}
        if header["format"] != ROWS_FORMAT:
            log.warning(f"{self.path}: rows of another corrdiff version ({header['format']}, not {ROWS_FORMAT}); "
                        "measuring every setting")
            return {}
        earlier = Fingerprint(header.get("ingredients") or {})
        if earlier.digest != self.fingerprint.digest:
            log.warning(f"{self.path}: measured for other models or data ({earlier.differences(self.fingerprint)});"
                        " measuring every setting again")
            return {}
        rows = {}
        for line in lines[1:]:
            try:
                row = json.loads(line)
                setting = SamplerConfig(**row["sampler"])
                scores = Scores.from_arrays(int(row["members"]), **{k: np.asarray(v, dtype=np.float64)
                                                                    for k, v in row["scores"].items()})
                rows[setting] = (scores, float(row["seconds_per_member"]))
            except (ValueError, KeyError, TypeError):
                break  # the line being written when the tune was killed
        return rows

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": ROWS_FORMAT, "fingerprint": self.fingerprint.digest,
                  "ingredients": self.fingerprint.ingredients}
        rows = "".join(_row_line(s, *r) for s, r in self.rows.items())
        atomic_write_text(self.path, json.dumps(header) + "\n" + rows)


def _row_line(setting: SamplerConfig, scores: Scores, seconds: float) -> str:
    """One setting as a JSON line (NaN and infinities as Python's json writes and reads them)."""
    sampler = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(setting).items()}
    return json.dumps({"sampler": sampler, "members": scores.members,
                       "scores": {k: v.tolist() for k, v in scores.arrays().items()},
                       "seconds_per_member": seconds}) + "\n"


def write_outputs(table: xr.Dataset, recommendation, out_dir: Path, recommendation_path: Path) -> list[Path]:
    """tune.csv (one row per setting), tune.nc (everything), tune.png (CRPS and spread/skill vs NFE), sampler.yaml."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, nc_path, png_path = (out_dir / name for name in OUTPUTS)
    frame = table[[k for k in table.data_vars if table[k].dims == ("setting",)]].to_dataframe()
    for k in [k for k in table.data_vars if table[k].dims == ("setting", "channel")]:
        for channel in table["channel"].values:
            frame[f"{k}_{channel}"] = table[k].sel(channel=channel).values
    frame.to_csv(csv_path, float_format="%.6g")
    table.to_netcdf(nc_path)
    plot(table, png_path)
    sampler_file.write(recommendation_path, recommendation)
    return [csv_path, nc_path, png_path, recommendation_path]


def plot(table: xr.Dataset, path: Path) -> Path:
    """Fair CRPS (combined, with its bootstrap interval) and mean spread/skill against network evaluations, a line
    per solver, schedule and churn."""
    fig, (ax_crps, ax_ss) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    keys = sorted({(str(s), str(k), float(c)) for s, k, c in
                   zip(table["solver"].values, table["schedule"].values, table["S_churn"].values)})
    for solver, schedule, churn in keys:
        pick = (table["solver"] == solver) & (table["schedule"] == schedule) & (table["S_churn"] == churn)
        line = table.isel(setting=np.flatnonzero(pick.values)).sortby("network_evaluations")
        label = f"{solver} {schedule}" + (f" churn {churn:g}" if churn else "")
        fair = line["crps_fair_norm"].values
        bars = np.stack([fair - line["crps_fair_norm_low"].values, line["crps_fair_norm_high"].values - fair])
        ax_crps.errorbar(line["network_evaluations"], fair, yerr=np.clip(bars, 0, None), marker="o", ms=3,
                         capsize=2, label=label)
        ax_ss.plot(line["network_evaluations"], line["spread_skill_mean"], marker="o", ms=3, label=label)
    chosen = int(table.attrs["recommended"])
    best = float(table["crps_fair_norm"].min())
    ax_crps.axhline(best * (1 + float(table.attrs["tolerance"])), color="grey", ls="--", lw=0.8,
                    label=f"best + {100 * float(table.attrs['tolerance']):g}%")
    ax_crps.plot(table["network_evaluations"][chosen], table["crps_fair_norm"][chosen], "k*", ms=12,
                 label="recommended")
    ax_ss.axhline(1.0, color="grey", ls="--", lw=0.8)
    level = float(table.attrs.get("bootstrap_level", 0.9))
    crps_title = f"fair CRPS / truth std, mean over channels ({level:.0%} bootstrap)"
    if float(table["crps_fair_norm"].max()) > 1.3 * best:  # a few-step setting far off would flatten the others
        ax_crps.set_ylim(0.97 * best, 1.2 * best)
        crps_title += " (clipped)"
    for ax, title in ((ax_crps, crps_title), (ax_ss, "spread/skill, mean over channels")):
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per member")
        ax.set_title(title, fontsize=10)
        ticks = sorted(set(table["network_evaluations"].values.tolist()))
        ax.set_xticks(ticks, [str(t) for t in ticks], minor=False)
        ax.minorticks_off()
    ax_crps.legend(fontsize=7)
    fig.suptitle(f"corrdiff tune: {table.attrs['split']}, {table.attrs['times']} times, "
                 f"{table.attrs['members']} members", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def difference_to_best(table: xr.Dataset, i: int) -> str:
    """Setting i's fair CRPS/std minus the best's, in % of the best's, and its paired bootstrap interval."""
    best = float(table["crps_fair_norm"][int(table.attrs["best"])])
    low, high = (100 * float(table[f"crps_fair_norm_diff_{end}"][i]) / best for end in ("low", "high"))
    return f"{100 * (float(table['crps_fair_norm'][i]) / best - 1):+.2f}% [{low:+.2f}, {high:+.2f}]"
