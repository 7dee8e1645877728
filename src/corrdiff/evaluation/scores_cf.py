"""The CF-1.11 form of a scores Dataset as `write_scores` writes it (checked by tests/test_cf_compliance.py).

Scores of several variables share one array along `variable`, so an array "in the units of the variable"
cannot carry one CF `units`: it gets the variables' common unit when they share one, else no `units` and a
`comment` pointing at the `units` coordinate (variable,) that holds each variable's. The string labels (`model`,
`variable`, `units`) are written as character arrays: CF coordinate variables must be numeric, and xarray reads
the arrays back as the same string coordinates, so `scores.sel(model="corrdiff")` still works on the file.
"""

import datetime as dt

import xarray as xr

from corrdiff.evaluation.scores import PER_VARIABLE  # how the scores file marks a score in its variable's units

CONVENTIONS = "CF-1.11"
COORD_ATTRS = {
    "time": {"standard_name": "time", "long_name": "valid time", "units_metadata": "leap_seconds: none"},
    "rank": {"long_name": "rank of the truth among the sorted members"},
    "model": {"long_name": "forecast model"},
    "variable": {"long_name": "scored variable"},
    "units": {"long_name": "units of each scored variable"},
}


def cf_scores(scores: xr.Dataset, command: str = "corrdiff score") -> xr.Dataset:
    """A copy of `scores` with CF-valid units, named coordinates, Conventions and history."""
    scores = scores.copy()
    common = _common_units(scores)
    for name, var in scores.data_vars.items():
        if var.attrs.get("units") != PER_VARIABLE:
            continue
        attrs = {k: v for k, v in var.attrs.items() if k != "units"}
        if common is not None:
            attrs["units"] = common
        else:
            attrs["comment"] = "in the units of each variable: see the coordinate `units`"
        scores[name].attrs = attrs
    for name, attrs in COORD_ATTRS.items():
        if name in scores.coords:
            scores[name].attrs = {**attrs, **scores[name].attrs}
    for name, coord in scores.coords.items():
        if coord.dtype.kind in "OUS":
            scores[name].encoding["dtype"] = "S1"  # a character array (a CF label), not a string coordinate variable
    if "time" in scores.coords:
        scores["time"].encoding["_FillValue"] = None  # CF 2.5.1: no fill value on a coordinate variable
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    scores.attrs["Conventions"] = CONVENTIONS
    scores.attrs.setdefault("history", f"{stamp} {command}")
    return scores


def _common_units(scores: xr.Dataset) -> str | None:
    """The one unit every scored variable has (its `units` coordinate), or None."""
    if "units" not in scores.coords:
        return None
    found = {str(u) for u in scores["units"].values}
    return found.pop() if len(found) == 1 and "" not in found else None
