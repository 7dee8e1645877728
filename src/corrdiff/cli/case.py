"""`corrdiff case`: a vortex or a cross-section of an ensemble against truth, as figures and case.nc.

The main CLI registers `case_command` as `case`. Inputs are opened as `corrdiff score` opens them
(`corrdiff.evaluation.stores.collect`); the work is `corrdiff.evaluation.case_study`'s.
"""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.errors import user_errors
from corrdiff.cli.evaluation import OverwriteOpt, PredictionsArg, SameGridOpt, SplitOpt, VariableOpt

TruthOpt = Annotated[Path, typer.Option("--truth", "-t", help="Truth: the dataset spec (YAML) or a NetCDF/Zarr store "
                                        "with (time, y, x) variables named as the predicted ones.")]


class CentreBy(str, Enum):
    auto = "auto"
    pressure = "pressure"
    vorticity = "vorticity"
    wind = "wind"


def _pair(text: str | None, option: str) -> tuple[float, float] | tuple[str, str] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise typer.BadParameter(f"expected two values separated by a comma, not {text!r}", param_hint=option)
    if option == "--wind":
        return parts[0], parts[1]
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise typer.BadParameter(f"expected LAT,LON in degrees, not {text!r}", param_hint=option) from None


@user_errors
def case_command(
    predictions: PredictionsArg,
    truth: TruthOpt,
    time: Annotated[list[str] | None, typer.Option("--time", help="ISO time (nearest scored time); repeat it to "
                    "track a vortex over several times. Default: the middle scored time.")] = None,
    vortex: Annotated[bool, typer.Option("--vortex", help="Vortex analysis: centre, azimuthal-mean profiles, "
                      "maximum wind and its radius, track over the --time values.")] = False,
    section: Annotated[str | None, typer.Option("--section", help="Cross-section along LAT1,LON1:LAT2,LON2, or "
                       "'auto': across truth's strongest gradient of --field.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for case.nc and the figures: new, empty, or an "
                   "earlier case folder (with --overwrite).")] = Path("case"),
    centre_by: Annotated[CentreBy, typer.Option("--centre-by", help="Vortex centre: minimum pressure, core of the "
                         "vorticity channel, core of the vorticity of the winds; auto = the first the channels "
                         "allow.")]
    = CentreBy.auto,
    near: Annotated[str | None, typer.Option("--near", help="LAT,LON: look for the vortex within --search-km of "
                    "here (default: the strongest anywhere).")] = None,
    search_km: Annotated[float, typer.Option("--search-km", min=1, help="Search radius around --near, around the "
                         "previous centre (track), and around truth's centre (forecasts).")] = 300.0,
    smooth_km: Annotated[float | None, typer.Option("--smooth-km", min=0, help="Gaussian smoothing (σ, km) before "
                         "locating the centre or the front; default: two grid spacings.")] = None,
    radius_km: Annotated[float | None, typer.Option("--radius-km", min=1, help="Outer radius of the profiles; "
                         "default: 15 grid spacings.")] = None,
    wind: Annotated[str | None, typer.Option("--wind", help="U,V: the wind channels (default: found by "
                    "standard_name, or u/v, u10/v10, ...).")] = None,
    field: Annotated[str | None, typer.Option("--field", help="Channel whose gradient marks the front (default: "
                     "the temperature channel, else the first).")] = None,
    colocate: Annotated[str | None, typer.Option("--colocate", help="Channel whose peak is compared with the "
                        "front's position (e.g. reflectivity).")] = None,
    length_km: Annotated[float | None, typer.Option("--length-km", min=1, help="Length of an automatic section; "
                         "default: 40 grid spacings.")] = None,
    split: SplitOpt = None,
    variable: VariableOpt = None,
    same_grid: SameGridOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Case study of coherent structures at given times: truth, the regression mean and every member.

    --vortex: centre (min pressure, else the core of the vorticity: a channel's or the winds'), azimuthal-mean
    wind speed, tangential wind and every channel vs radius, maximum wind and radius of maximum wind. --section: values
    and gradient magnitudes of every channel along a line, the front's position and, with --colocate, where
    another channel peaks. Writes DIR/case.nc and PNG figures.
    """
    import numpy as np

    from corrdiff.evaluation import case_study
    from corrdiff.evaluation.evaluate import evaluation_inputs
    from corrdiff.evaluation.report import choose_time
    from corrdiff.evaluation.stores import collect

    if not vortex and section is None:
        raise typer.BadParameter("say what to study: --vortex and/or --section LAT1,LON1:LAT2,LON2 (or auto)")
    near_at, wind_names = _pair(near, "--near"), _pair(wind, "--wind")
    if near_at is not None:
        case_study.check_point(*near_at, "--near")
    if section not in (None, "auto"):
        case_study.parse_line(section)  # before any file is opened
    case_study.check_case_folder(out, evaluation_inputs(predictions, truth), overwrite)
    evaluation = collect(predictions, truth, split=split, interp=False, variables=variable, same_grid=same_grid)
    try:
        times = sorted({choose_time(evaluation.truth, t) for t in time} if time else
                       {choose_time(evaluation.truth, None)})
        # Every case is computed before the folder is made: a refused one leaves nothing behind.
        vortex_ds = case_study.vortex_case(evaluation, times, centre_by.value, near_at, search_km, smooth_km,
                                           radius_km, wind_names) if vortex else None
        section_ds = case_study.section_case(evaluation, times[0], section, field, colocate, length_km,
                                             wind_names) if section is not None else None
        out.mkdir(parents=True, exist_ok=True)
        figures = []
        if vortex_ds is not None:
            figures += case_study.vortex_figures(evaluation, vortex_ds, out)
            _echo_vortex(vortex_ds, np)
        if section_ds is not None:
            figures += case_study.section_figures(evaluation, section_ds, out)
            _echo_section(section_ds, np)
        path = case_study.write_case([ds for ds in (vortex_ds, section_ds) if ds is not None], out)
    finally:
        evaluation.close()
    typer.echo(f"case written: {path} and {len(figures)} figures in {out}")


def _spread(values, np) -> str:
    return f"{np.nanmean(values):.3g} ± {np.nanstd(values):.2g}" if len(values) > 1 else f"{np.nanmean(values):.3g}"


def _echo_vortex(ds, np) -> None:
    members = [s for s in ds["source"].values if str(s).startswith("member")]
    units = ds["max_wind"].attrs.get("units", "")
    for t in range(ds.sizes["time"]):
        step = ds.isel(time=t)
        typer.echo(f"vortex at {str(step['time'].values)[:16]} (centre by {ds.attrs['centre_method']}):")
        for name in [s for s in ("truth", "regression") if s in ds["source"].values]:
            row = step.sel(source=name)
            typer.echo(f"  {name:10s} centre {float(row['centre_lat']):.2f}N {float(row['centre_lon']):.2f}E, max wind "
                       f"{float(row['max_wind']):.3g} {units} at {float(row['rmw']):.3g} km")
        if members:
            row = step.sel(source=members)
            typer.echo(f"  members    max wind {_spread(row['max_wind'].values, np)} {units}, radius "
                       f"{_spread(row['rmw'].values, np)} km")
    if "track_step_km" in ds:
        typer.echo(f"track over consecutive times {ds.attrs['track_step']} apart (mean step; mean |second "
                   "difference|, 0 for a straight track at constant speed):")
        groups = [(n, [n]) for n in ("truth", "regression") if n in ds["source"].values] + \
            ([("members", members)] if members else [])
        for label, names in groups:
            line = f"  {label:10s} step {_spread(ds['track_step_km'].sel(source=names).values, np)} km"
            if "track_second_difference_km" in ds:
                second = ds["track_second_difference_km"].sel(source=names).values
                line += f", second difference {_spread(second, np)} km"
            typer.echo(line)


def _echo_section(ds, np) -> None:
    typer.echo(f"section {ds.attrs['line']} at {ds.attrs['time']} (from {ds.attrs['line_from']}):")
    members = [s for s in ds["source"].values if str(s).startswith("member")]
    groups = [(n, [n]) for n in ("truth", "regression") if n in ds["source"].values] + \
        ([("members", members)] if members else [])
    for label, names in groups:
        front = _spread(ds["front_position"].sel(source=names).values, np)
        line = f"  {label:10s} front ({ds.attrs['front_field']}) at {front} km"
        if "colocation_offset" in ds:
            offset = _spread(ds["colocation_offset"].sel(source=names).values, np)
            line += f"; largest {ds.attrs['colocate']} {offset} km from it"
        typer.echo(line)
