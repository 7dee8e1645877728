"""Figures of the case studies (`corrdiff.evaluation.case_study`): profiles with units, and a map of where.

Truth in black, the regression mean in green, the members as their mean (blue) and min–max band, as in the
report's figures (`corrdiff.evaluation.plots`).
"""

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from corrdiff.evaluation import coastlines
from corrdiff.evaluation.plots import _finish, _panels, _save, _tidy_numbers, colour_of, colour_scale, degrees_label, \
    geographic_axes, plt


def _members(ds: xr.Dataset) -> list[str]:
    return [str(s) for s in ds["source"].values if str(s).startswith("member")]


def _draw_sources(ax, x: np.ndarray, values: xr.DataArray) -> None:
    """Truth, regression and the members' mean and range of a (source, x) DataArray on one axis."""
    members = _members(values.to_dataset(name="v"))
    if members:
        band = values.sel(source=members).values
        with warnings.catch_warnings():  # points off the grid or beyond the data are NaN for every member
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high, mean = np.nanmin(band, axis=0), np.nanmax(band, axis=0), np.nanmean(band, axis=0)
        if len(members) > 1:
            ax.fill_between(x, low, high, color=colour_of("corrdiff", 0),
                            alpha=0.25, lw=0, label="CorrDiff members (range)")
        ax.plot(x, mean, color=colour_of("corrdiff", 0), lw=1.5,
                label="CorrDiff member mean" if len(members) > 1 else "CorrDiff")
    for k, name in enumerate(("regression", "truth")):
        if name in values["source"].values:
            ax.plot(x, values.sel(source=name).values, color=colour_of(name, k), lw=1.5 if name == "truth" else 1.2,
                    label=name)


def _label(da: xr.DataArray) -> str:
    name = str(da.attrs.get("long_name", da.name)).replace("gradient magnitude of ", "|∇| ")
    return f"{name} [{da.attrs.get('units', '1')}]"


def vortex_profiles_figure(path: Path, ds: xr.Dataset, time_index: int = 0) -> Path:
    """Azimuthal-mean profiles vs radius at one time: wind speed and tangential wind first, then every channel."""
    profile_vars = [n for n, v in ds.data_vars.items() if v.dims == ("time", "source", "radius") and n != "radial_wind"]
    profile_vars.sort(key=lambda n: {"wind_speed": 0, "tangential_wind": 1}.get(n, 2))
    fig, axes = _panels(len(profile_vars))
    radius = ds["radius"].values
    for ax, name in zip(axes.ravel(), profile_vars):
        values = ds[name].isel(time=time_index)
        _draw_sources(ax, radius, values)
        ax.set_xlabel("radius [km]")
        ax.set_ylabel(_label(ds[name]).replace("azimuthal mean of ", ""), fontsize=8)
        _tidy_numbers(ax, "y")
        if name in ("wind_speed", "tangential_wind"):
            truth = ds.sel(source="truth").isel(time=time_index)
            ax.axvline(float(truth["rmw"]), color="black", ls=":", lw=1)
    axes.ravel()[0].legend(fontsize=7)
    when = str(ds["time"].values[time_index])[:16].replace("T", " ")
    truth = ds.sel(source="truth").isel(time=time_index)
    centre = f"{degrees_label(truth['centre_lat'], 'lat', 2)} {degrees_label(truth['centre_lon'], 'lon', 2)}"
    title = (f"vortex at {when} UTC, centre {centre} "
             f"(by {ds.attrs['centre_method']}); truth max wind {float(truth['max_wind']):.3g} "
             f"{ds['max_wind'].attrs.get('units', '')} at {float(truth['rmw']):.3g} km")
    return _finish(fig, axes, len(profile_vars), title, path)


def _map(field: np.ndarray, field_attrs: dict, name: str, lat: np.ndarray, lon: np.ndarray):
    """(figure, axis) with a (y, x) field on longitude/latitude axes, its colour bar and the coastlines."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4), layout="constrained")
    cmap, norm = colour_scale(name, xr.DataArray(field, attrs=field_attrs), field)
    mesh = ax.pcolormesh(lon, lat, field, cmap=cmap, norm=norm, shading="auto")
    fig.colorbar(mesh, ax=ax, label=f"{field_attrs.get('long_name', name)} [{field_attrs.get('units', '1')}]")
    coastlines.draw(ax, lon, lat)
    geographic_axes(ax)
    ax.set_aspect(1.0 / max(np.cos(np.radians(np.nanmean(lat))), 0.1))
    return fig, ax


def vortex_map_figure(path: Path, ds: xr.Dataset, field: np.ndarray, field_attrs: dict, name: str,
                      lat: np.ndarray, lon: np.ndarray) -> Path:
    """Truth's `field` at the first time with every source's centre, and truth's track over the times."""
    fig, ax = _map(field, field_attrs, name, lat, lon)
    members = _members(ds)
    if members:
        first = ds.isel(time=0).sel(source=members)
        ax.scatter(first["centre_lon"], first["centre_lat"], s=14, color=colour_of("corrdiff", 0), label="members")
    for k, source in enumerate(("regression", "truth")):
        if source in ds["source"].values:
            track = ds.sel(source=source)
            ax.plot(track["centre_lon"], track["centre_lat"], marker="x" if source == "truth" else "+", ms=8,
                    color=colour_of(source, k), lw=1, label=f"{source} centre" + (" (track)" if ds.sizes["time"] > 1
                                                                                 else ""))
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"truth {name} at {str(ds['time'].values[0])[:16].replace('T', ' ')} UTC", fontsize=9)
    return _save(fig, path)


def section_profiles_figure(path: Path, ds: xr.Dataset) -> Path:
    """Every channel along the section, then the gradient magnitude of the front field and the wind speed."""
    values = [n for n, v in ds.data_vars.items() if v.dims == ("source", "distance") and not n.endswith("_gradient")]
    gradients = [f"{n}_gradient" for n in (ds.attrs["front_field"], "wind_speed") if f"{n}_gradient" in ds]
    names = values + gradients
    fig, axes = _panels(len(names))
    distance = ds["distance"].values
    front = float(ds["front_position"].sel(source="truth"))
    for ax, name in zip(axes.ravel(), names):
        _draw_sources(ax, distance, ds[name])
        ax.axvline(front, color="black", ls=":", lw=1)
        ax.set_xlabel("distance along the section [km]")
        ax.set_ylabel(_label(ds[name]), fontsize=8)
        _tidy_numbers(ax, "y")
    axes.ravel()[0].legend(fontsize=7)
    title = f"section {ds.attrs['line']} at {ds.attrs['time'].replace('T', ' ')} UTC; dotted: truth's front"
    if ds.attrs.get("colocate"):
        offset = float(ds["colocation_offset"].sel(source="truth"))
        title += f"; truth's largest {ds.attrs['colocate']} {offset:+.3g} km from it"
    return _finish(fig, axes, len(names), title, path)


def section_map_figure(path: Path, ds: xr.Dataset, field: np.ndarray, field_attrs: dict, name: str,
                       lat: np.ndarray, lon: np.ndarray) -> Path:
    """Truth's front field with the section drawn on it."""
    fig, ax = _map(field, field_attrs, name, lat, lon)
    ax.plot(ds["lon"], ds["lat"], color="black", lw=1.5)
    ax.plot(ds["lon"][0], ds["lat"][0], "o", color="black", ms=4)
    front = ds["front_position"].sel(source="truth")
    if np.isfinite(front):
        k = int(np.argmin(np.abs(ds["distance"].values - float(front))))
        ax.plot(ds["lon"][k], ds["lat"][k], "*", color="white", mec="black", ms=11, label="truth's front")
        ax.legend(fontsize=7)
    ax.set_title(f"truth {name} at {ds.attrs['time'].replace('T', ' ')} UTC; ● start", fontsize=9)
    return _save(fig, path)
