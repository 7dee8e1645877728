"""Case studies of an ensemble against truth: a vortex tracked over times, a cross-section through a front.

Runs `corrdiff.evaluation.cases` on truth, the regression mean and every member of an `Evaluation`
(`stores.collect`), and keeps the results as small tidy Datasets with a `source` dimension ("truth",
"regression", "member 0", ...):

    vortex_case(evaluation, times, ...) -> Dataset   (time, source, radius) profiles; (time, source) centres,
                                                      maximum wind, radius of maximum wind; (source,) the
                                                      track's smoothness over consecutive times (`time_scores`)
    section_case(evaluation, time, ...) -> Dataset   (source, distance) values and |∇| of every channel
    write_case(dataset, figures, out_dir) -> case.nc  (`corrdiff case`; figures in `case_plots`)
"""

import logging
from pathlib import Path

import numpy as np
import xarray as xr

from corrdiff import arguments
from corrdiff.errors import EvaluationError
from corrdiff.evaluation import case_plots, cases
from corrdiff.evaluation.stores import Evaluation
from corrdiff.evaluation.time_scores import series_of, step_text, track_smoothness
from corrdiff.file_integrity import atomic_file
from corrdiff.output_paths import check_earlier_output, check_folder, check_not_an_input, empty_or_written_by

TITLE = "corrdiff case study"  # the title attribute of case.nc: how `corrdiff case --overwrite` knows its folder
SEARCH_KM = 300.0  # forecasts' centres are looked for this close to truth's
DERIVED = {"wind_speed": "wind speed", "tangential_wind": "tangential wind (ccw +)",
           "radial_wind": "radial wind (outward +)"}  # ccw: counter-clockwise


def fields_at(evaluation: Evaluation, when) -> dict[str, dict[str, np.ndarray]]:
    """{source: {channel: (y, x)}} at time `when`: truth, the regression mean when present, every member."""
    truth = evaluation.truth.sel(time=when).compute()
    sources = {"truth": {v: np.asarray(truth[v].values, np.float64) for v in evaluation.variables}}
    if "regression" in evaluation.models:
        mean = evaluation.models["regression"].sel(time=when).isel(member=0).compute()
        sources["regression"] = {v: np.asarray(mean[v].values, np.float64) for v in evaluation.variables if v in mean}
    ensemble = evaluation.models["corrdiff"].sel(time=when).compute()
    for m in range(ensemble.sizes["member"]):
        member = ensemble.isel(member=m)
        sources[f"member {m}"] = {v: np.asarray(member[v].transpose("y", "x").values, np.float64)
                                  for v in evaluation.variables}
    return sources


def lat_lon(evaluation: Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """2-D lat, lon (degrees) of the grid, from the predictions or truth."""
    for ds in (evaluation.predictions, evaluation.truth):
        if "lat" in ds.coords and "lon" in ds.coords and ds["lat"].ndim == 2:
            return np.asarray(ds["lat"].values, np.float64), np.asarray(ds["lon"].values, np.float64)
    raise EvaluationError(f"{evaluation.source('corrdiff')}: no 2-D lat/lon coordinates to measure distances by")


def channel_attrs(evaluation: Evaluation) -> dict[str, dict]:
    return {v: dict(evaluation.truth[v].attrs) or dict(evaluation.predictions[v].attrs) for v in evaluation.variables}


def vortex_case(evaluation: Evaluation, times, method: str = "auto", near: tuple[float, float] | None = None,
                search_km: float = SEARCH_KM, smooth_km: float | None = None, max_radius_km: float | None = None,
                wind: tuple[str, str] | None = None) -> xr.Dataset:
    """The vortex at each of `times`: found in truth (at the first time near `near`, or the strongest
    anywhere; later, within `search_km` of truth's previous centre: a track), then in the regression mean
    and each member within `search_km` of truth's centre. Azimuthal-mean profiles of every channel and of
    the wind speed, tangential and radial wind, in rings one grid spacing wide out to `max_radius_km`
    (default: 15 grid spacings); maximum wind and its radius from the mean tangential wind (in truth's
    sense of rotation; the mean wind speed would count a background flow), and the maximum mean speed."""
    if near is not None:
        near = check_point(*near, "--near")
    lat, lon = lat_lon(evaluation)
    attrs = channel_attrs(evaluation)
    roles = cases.find_roles(attrs, wind)
    spacing = evaluation.spacing_km
    max_radius_km = max_radius_km or 15 * spacing
    rows, previous, sign = [], near, None
    for when in times:
        sources = fields_at(evaluation, when)
        truth = cases.find_centre(sources["truth"], roles, lat, lon, method, smooth_km, previous, search_km, sign)
        previous, sign = (truth.lat, truth.lon), truth.sign  # the track follows the same vortex
        row, rotation = {}, truth.sign
        for name, fields in sources.items():
            centre = truth if name == "truth" else cases.find_centre(
                fields, roles, lat, lon, truth.method, smooth_km, previous, search_km, sign=truth.sign)
            rings = cases.azimuthal_profiles(fields, roles, lat, lon, centre, max_radius_km, spacing)
            if "tangential_wind" not in rings:
                row[name] = (centre, rings, np.nan, np.nan, np.nan)
                continue
            if name == "truth" and truth.method == "pressure":  # the sense of rotation from truth's winds
                rotation = 1.0 if np.nanmax(rings["tangential_wind"]) >= -np.nanmin(rings["tangential_wind"]) else -1.0
            # the tangential wind's extreme: a uniform background flow averages out of it, not out of the speed
            vmax, rmw = cases.max_wind(rings["radius"], rotation * rings["tangential_wind"])
            row[name] = (centre, rings, vmax, rmw, float(np.nanmax(rings["wind_speed"])))
        rows.append(row)
    return _vortex_dataset(rows, times, attrs, roles, evaluation)


def _vortex_dataset(rows, times, attrs, roles, evaluation) -> xr.Dataset:
    names = list(rows[0])
    radius = next(iter(rows[0].values()))[1]["radius"]
    profiles = [k for k in next(iter(rows[0].values()))[1] if k not in ("radius", "pixels")]
    data = {}
    for key in profiles:
        stacked = np.array([[row[n][1].get(key, np.full(radius.size, np.nan)) for n in names] for row in rows])
        data[key] = (("time", "source", "radius"), stacked, _attrs_of(key, attrs, roles, "azimuthal mean of "))
    speed_units = _attrs_of("wind_speed", attrs, roles).get("units", "m s-1")
    scalars = {
        "centre_lat": (lambda r: r[0].lat, {"long_name": "latitude of the vortex centre", "units": "degrees_north"}),
        "centre_lon": (lambda r: r[0].lon, {"long_name": "longitude of the vortex centre", "units": "degrees_east"}),
        "centre_value": (lambda r: r[0].value, {"long_name": "value at the centre of the field that located it"}),
        "max_wind": (lambda r: r[2], {"long_name": "maximum of the azimuthal-mean tangential wind (in the "
                                      "vortex's sense of rotation)", "units": speed_units}),
        "rmw": (lambda r: r[3], {"long_name": "radius of maximum (azimuthal-mean tangential) wind", "units": "km"}),
        "max_speed": (lambda r: r[4], {"long_name": "maximum of the azimuthal-mean wind speed", "units": speed_units}),
    }
    for key, (get, meta) in scalars.items():
        data[key] = (("time", "source"), np.array([[get(row[n]) for n in names] for row in rows]), meta)
    track = track_smoothness(data["centre_lat"][1], data["centre_lon"][1], times)
    data |= {key: (("source",), values, meta) for key, (values, meta) in track.items()}
    first = rows[0]["truth"][0]
    coords = {"time": np.asarray(times), "source": names,
              "radius": ("radius", radius, {"long_name": "distance from the centre (ring midpoint)", "units": "km"})}
    return xr.Dataset(data, coords, {
        "title": TITLE, "case": "vortex", "centre_method": first.method,
        "wind_channels": f"{roles.u},{roles.v}" if roles.u and roles.v else "",
        "grid_spacing_km": evaluation.spacing_km, "members": sum(n.startswith("member") for n in names),
        "predictions": evaluation.source("corrdiff"), "truth": evaluation.source("truth"),
        **({"track_step": step_text(series_of(times).step)} if track else {})})


def _attrs_of(key: str, attrs: dict, roles: cases.Roles, prefix: str = "") -> dict:
    """long_name and units of a channel or a derived wind (units of the u channel)."""
    if key in DERIVED:
        units = attrs.get(roles.u, {}).get("units", "m s-1") if roles.u else "m s-1"
        return {"long_name": prefix + DERIVED[key], "units": units}
    meta = attrs.get(key, {})
    return {"long_name": prefix + str(meta.get("long_name", key)), "units": str(meta.get("units", "1"))}


def parse_line(text: str) -> tuple[float, float, float, float]:
    """(lat1, lon1, lat2, lon2) from "LAT1,LON1:LAT2,LON2"; errors quote the text."""
    try:
        start, end = text.split(":")
        (lat1, lon1), (lat2, lon2) = (tuple(float(x) for x in part.split(",")) for part in (start, end))
    except ValueError:
        raise EvaluationError(f"--section {text!r}: expected LAT1,LON1:LAT2,LON2 in degrees, e.g. "
                              "23.5,120.0:25.0,122.0, or auto") from None
    return (*check_point(lat1, lon1, f"--section {text}"), *check_point(lat2, lon2, f"--section {text}"))


def check_point(lat: float, lon: float, option: str) -> tuple[float, float]:
    """(lat, lon) when they are a latitude (-90..90) and a longitude (-180..360); an error naming `option`."""
    return arguments.latitude(option, lat), arguments.longitude(option, lon)


def section_case(evaluation: Evaluation, when, line: str = "auto", field: str | None = None,
                 colocate: str | None = None, length_km: float | None = None,
                 wind: tuple[str, str] | None = None) -> xr.Dataset:
    """A cross-section at `when`: along `line` ("LAT1,LON1:LAT2,LON2") or, for "auto", across truth's
    strongest gradient of `field` (default: the temperature channel, else the first), `length_km` long
    (default 40 grid spacings). Values and gradient magnitudes (units per km) of every channel and of the
    wind speed, every half grid spacing, for every source; the front's position (largest |∇field|) and,
    with `colocate`, where that channel peaks, and how far apart they are."""
    lat, lon = lat_lon(evaluation)
    attrs = channel_attrs(evaluation)
    roles = cases.find_roles(attrs, wind)
    field = field or roles.temperature or evaluation.variables[0]
    for option, name in (("--field", field), ("--colocate", colocate)):
        if name is not None and name not in evaluation.variables:
            raise EvaluationError(f"{option} {name}: no such channel; channels are {evaluation.variables}")
    step = evaluation.spacing_km / 2
    sources = fields_at(evaluation, when)
    if line == "auto":
        section = cases.max_gradient_line(sources["truth"][field], lat, lon, length_km or 40 * evaluation.spacing_km,
                                          step)
    else:
        section = cases.section_line(*parse_line(line), step)
    jj, ii = cases.grid_index(lat, lon, section.lat, section.lon)
    if not np.isfinite(jj).any():
        raise EvaluationError(f"--section {section.endpoints}: the line lies wholly outside the grid "
                              f"({lat.min():.2f}..{lat.max():.2f} N, {lon.min():.2f}..{lon.max():.2f} E)")
    if line == "auto":  # a front near the border: keep the part of the line on the grid
        on = np.flatnonzero(np.isfinite(jj))
        keep = slice(on[0], on[-1] + 1)
        section = cases.Section(section.lat[keep], section.lon[keep], section.distance[keep] - section.distance[on[0]])
        jj, ii = jj[keep], ii[keep]
    names = list(sources)
    along = {}
    for name, fields in sources.items():
        if roles.u and roles.v:
            fields = fields | {"wind_speed": np.hypot(fields[roles.u], fields[roles.v])}
        for key, values in fields.items():
            along.setdefault(key, []).append(cases.along_section(values, jj, ii))
            grad = cases.gradient_magnitude(values, lat, lon)
            along.setdefault(f"{key}_gradient", []).append(cases.along_section(grad, jj, ii))
    data = {}
    for key, rows in along.items():
        base = key.removesuffix("_gradient")
        meta = _attrs_of(base, attrs, roles)
        if key != base:
            meta = {"long_name": f"gradient magnitude of {meta['long_name']}", "units": f"{meta['units']} km-1"}
        data[key] = (("source", "distance"), np.array(rows), meta)
    data |= _positions(data, section.distance, field, colocate)
    coords = {"source": names,
              "distance": ("distance", section.distance, {"long_name": "distance along the section", "units": "km"}),
              "lat": ("distance", section.lat, {"units": "degrees_north"}),
              "lon": ("distance", section.lon, {"units": "degrees_east"})}
    return xr.Dataset(data, coords, {
        "title": TITLE, "case": "section", "time": str(np.datetime64(when, "m")), "line": section.endpoints,
        "line_from": "truth's strongest gradient of " + field if line == "auto" else "the user",
        "front_field": field, "colocate": colocate or "", "grid_spacing_km": evaluation.spacing_km,
        "members": sum(n.startswith("member") for n in names),
        "predictions": evaluation.source("corrdiff"), "truth": evaluation.source("truth")})


def _positions(data, distance, field, colocate) -> dict:
    """front_position (distance of the largest |∇field|), colocated_peak and their offset, per source (km)."""
    def peak(values):
        return np.array([distance[np.nanargmax(row)] if np.isfinite(row).any() else np.nan for row in values])

    front = peak(data[f"{field}_gradient"][1])
    out = {"front_position": (("source",), front, {"long_name": f"distance of the largest gradient of {field}",
                                                   "units": "km"})}
    if colocate:
        peaks = peak(data[colocate][1])
        out["colocated_peak"] = (("source",), peaks, {"long_name": f"distance of the largest {colocate}",
                                                      "units": "km"})
        out["colocation_offset"] = (("source",), peaks - front, {"long_name": f"largest {colocate} minus front "
                                                                 "position along the section", "units": "km"})
    return out


def is_case_folder(path: Path) -> bool:
    """An empty folder, or one holding a case.nc written by `write_case`."""
    return empty_or_written_by(path, _holds_a_case)


def _holds_a_case(folder: Path) -> bool:
    try:
        with xr.open_dataset(folder / "case.nc") as ds:
            return ds.attrs.get("title") == TITLE
    except (OSError, ValueError):
        return False


def check_case_folder(out_dir, inputs: dict[str, list[Path]], overwrite: bool) -> Path:
    """Refuse an output folder that is an input or holds one, or an existing non-empty folder unless it is
    an earlier case folder and `overwrite`."""
    out_dir = Path(out_dir)
    check_not_an_input(out_dir / "case.nc", inputs)
    check_folder(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        check_earlier_output(out_dir, "a corrdiff case folder", is_case_folder, overwrite)
    return out_dir


def write_case(datasets: list[xr.Dataset], out_dir) -> Path:
    """The case Datasets as groups-free NetCDF `out_dir/case.nc` (vortex and section variables prefixed
    when both are given); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = datasets[0] if len(datasets) == 1 else xr.merge(
        [ds.rename({n: f"{ds.attrs['case']}_{n}" for n in ds.data_vars}) for ds in datasets],
        combine_attrs="drop_conflicts")
    path = out_dir / "case.nc"
    try:
        with atomic_file(path) as tmp:
            merged.to_netcdf(tmp)
    except OSError as err:
        raise EvaluationError(f"{path}: cannot write the case study ({err})") from None
    return path


def vortex_figures(evaluation: Evaluation, ds: xr.Dataset, out_dir: Path, prefix: str = "vortex") -> list[Path]:
    """Profiles at the first time and a map of truth (wind speed, else the centre's field) with the centres."""
    lat, lon = lat_lon(evaluation)
    attrs = channel_attrs(evaluation)
    wind = ds.attrs.get("wind_channels", "")
    roles = cases.find_roles(attrs, tuple(wind.split(",")) if wind else None)
    truth = evaluation.truth.sel(time=ds["time"].values[0]).compute()
    if roles.u and roles.v and roles.u in truth and roles.v in truth:
        name, field = "wind_speed", np.hypot(truth[roles.u].values, truth[roles.v].values)
        field_attrs = _attrs_of("wind_speed", attrs, roles)
    else:
        name = {"pressure": roles.pressure, "vorticity": roles.vorticity}.get(ds.attrs["centre_method"]) \
            or evaluation.variables[0]
        field, field_attrs = truth[name].values, attrs[name]
    return [case_plots.vortex_profiles_figure(out_dir / f"{prefix}_profiles.png", ds),
            case_plots.vortex_map_figure(out_dir / f"{prefix}_map.png", ds, field, field_attrs, name, lat, lon)]


def section_figures(evaluation: Evaluation, ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Profiles along the section and a map of truth's front field with the line."""
    lat, lon = lat_lon(evaluation)
    name = ds.attrs["front_field"]
    truth = evaluation.truth[name].sel(time=np.datetime64(ds.attrs["time"], "ns"), method="nearest").values
    return [case_plots.section_profiles_figure(out_dir / "section_profiles.png", ds),
            case_plots.section_map_figure(out_dir / "section_map.png", ds, truth, channel_attrs(evaluation)[name],
                                          name, lat, lon)]


def report_section(evaluation: Evaluation, out_dir: Path, when) -> list[tuple[str, list[tuple[Path, str]]]]:
    """The report's vortex case: the strongest vortex of truth at `when` (by pressure or vorticity; none
    for data with neither) in truth, the regression mean and the members, as [(heading, [(figure, caption)])]."""
    roles = cases.find_roles(channel_attrs(evaluation))
    if roles.pressure is None and roles.vorticity is None:
        return []
    try:
        search = 10 * evaluation.spacing_km  # forecasts' centres near truth's: not another eddy of the field
        ds = vortex_case(evaluation, [when], search_km=search)
    except EvaluationError as err:
        return _skipped(err)
    truth = ds.isel(time=0).sel(source="truth")
    members = [s for s in ds["source"].values if str(s).startswith("member")]
    units = ds["max_wind"].attrs.get("units", "")
    summary = (f"Strongest vortex of the truth at {str(np.datetime64(when, 'm')).replace('T', ' ')} UTC, centred by "
               f"{ds.attrs['centre_method']} at {float(truth['centre_lat']):.2f}N {float(truth['centre_lon']):.2f}E "
               f"(each forecast's own centre within {search:.3g} km of it). Maximum azimuthal-mean tangential "
               "wind: truth "
               f"{float(truth['max_wind']):.3g} {units} at {float(truth['rmw']):.3g} km")
    if "regression" in ds["source"].values:
        summary += f", regression {float(ds['max_wind'].isel(time=0).sel(source='regression')):.3g}"
    if members:
        values = ds["max_wind"].isel(time=0).sel(source=members).values
        summary += f", members {np.nanmean(values):.3g} ± {np.nanstd(values):.2g}"
    paths = vortex_figures(evaluation, ds, Path(out_dir))
    captions = [summary + ". Profiles: truth, regression, members' mean and range; dotted: truth's radius of "
                "maximum wind.", "Truth's wind speed with the centre found in each forecast."]
    return [("Vortex case", list(zip(paths, captions)))]


def _skipped(err: EvaluationError) -> list:
    logging.getLogger("corrdiff").info(f"report: no vortex case ({err})")
    return []
