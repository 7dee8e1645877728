"""Markdown rows of the calibration study: one per case, variant and variable, from OUT/VARIANT/scores.nc.

usage: python scripts/calibration_table.py OUT [OUT ...]   (folders written by scripts/calibration_study.sh)
"""

import sys
from pathlib import Path

import xarray as xr


def rows(out: Path) -> list[str]:
    lines = []
    for path in sorted(out.glob("*/scores.nc")):
        scores = xr.open_dataset(path)
        for variable in scores["variable"].values:
            pick = lambda name, model="corrdiff": float(scores[name].sel(model=model, variable=variable))
            lines.append(
                f"| {out.name} | {path.parent.name} | {variable} | {pick('crps'):.4g} | {pick('crps_fair'):.4g} | "
                f"{pick('mae', 'regression'):.4g} | {pick('spread_skill'):.2f} | "
                f"{pick('power_ratio_smallest_octave'):.2f} | {pick('log_spectral_distance'):.2f} |")
    return lines


if __name__ == "__main__":
    print("| case | variant | variable | CRPS | fair CRPS | regression MAE | spread/skill | power 2–4 Δx | LSD |")
    print("|---|---|---|---|---|---|---|---|---|")
    for folder in sys.argv[1:]:
        print("\n".join(rows(Path(folder))))
