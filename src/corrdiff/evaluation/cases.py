"""Case studies of coherent structures on one field: vortex centres and azimuthal profiles, cross-sections.

Pure numpy on one time of one forecast: fields are (y, x) arrays in physical units on a grid with 2-D
`lat(y, x)`, `lon(y, x)` in degrees. Distances are km in a local east/north plane about the point of interest
(equirectangular, Earth radius 6371 km): exact enough for the few hundred km of a vortex or a front. Winds
are earth-relative (u eastward, v northward), as the readers give them.

    find_centre(fields, roles, lat, lon, method) -> Centre          vortex centre, to a fraction of a cell
    relative_vorticity(u, v, lat, lon) -> (y, x)                     ζ in s-1, counter-clockwise +
    azimuthal_profiles(fields, roles, lat, lon, centre) -> dict      means over rings vs radius (km)
    max_wind(radius, wind) -> (max wind, radius of max wind)         of an azimuthal-mean profile
    section_line(lat1, lon1, lat2, lon2, step_km) -> Section         points along a straight line
    max_gradient_line(field, lat, lon, length_km) -> Section         across the strongest gradient
    grid_index(lat, lon, plat, plon), along_section(field, jj, ii)   bilinear samples along a section
    east_north_derivatives(field, lat, lon), gradient_magnitude      ∂/∂east, ∂/∂north, |∇f| in units per km

`corrdiff.evaluation.case_study` runs these on truth, the regression mean and every member.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from corrdiff.data.cf_names import cf_name
from corrdiff.data.units import conversion
from corrdiff.ensemble_file import grid_spacing_km
from corrdiff.errors import EvaluationError

EARTH_RADIUS_KM = 6371.0
METHODS = ("pressure", "vorticity", "wind")  # centre by minimum pressure, vorticity channel, vorticity of u, v
PRESSURE_STANDARD = {"air_pressure_at_mean_sea_level", "air_pressure_at_sea_level", "surface_air_pressure",
                     "air_pressure"}
WIND_PAIRS = [("u", "v"), ("u10", "v10"), ("u10m", "v10m"), ("ugrd10m", "vgrd10m"), ("u100", "v100")]


@dataclass
class Roles:
    """Which channel plays which part: wind components, pressure, vorticity, temperature (None if absent)."""

    u: str | None = None
    v: str | None = None
    pressure: str | None = None
    vorticity: str | None = None
    temperature: str | None = None


def find_roles(attrs: dict[str, dict], wind: tuple[str, str] | None = None) -> Roles:
    """Roles of the channels from their names and CF attributes ({name: attrs}); `wind` = (u, v) names.

    Pressure and temperature by standard_name: the channel's own, else the one `corrdiff.data.cf_names` gives its
    name. Winds by the channels' own standard_names, else by the name pairs WIND_PAIRS (a name alone says no
    more than that a channel is eastward, not which northward one goes with it).
    """
    std = {n: str(a.get("standard_name", "")) for n, a in attrs.items()}
    # by name alone, whatever the units: a pressure in units a file spells oddly is still the pressure
    named = {n: std[n] or getattr(cf_name(n), "standard_name", "") for n in attrs}
    roles = Roles()
    if wind is not None:
        check_wind_pair(attrs, wind)
        roles.u, roles.v = wind
    else:
        east = [n for n, s in std.items() if s == "eastward_wind"]
        north = [n for n, s in std.items() if s == "northward_wind"]
        pairs = [(e, n) for e, n in zip(east, north)] + [p for p in WIND_PAIRS if p[0] in attrs and p[1] in attrs]
        if pairs:
            roles.u, roles.v = pairs[0]
    for name in attrs:
        if roles.pressure is None and named[name] in PRESSURE_STANDARD:
            roles.pressure = name
        if roles.vorticity is None and (std[name] == "atmosphere_relative_vorticity" or "vort" in name.lower()):
            roles.vorticity = name
        if roles.temperature is None and named[name] == "air_temperature":
            roles.temperature = name
    return roles


def check_wind_pair(attrs: dict[str, dict], wind: tuple[str, str]) -> None:
    """Refuse a `--wind U,V` that is not the eastward then the northward wind component: each channel's
    standard_name (its own, else `cf_names`' for its name and units) must say so, or, for a quantity the table
    does not know, its units must be a speed."""
    option = f"--wind {','.join(wind)}"
    missing = [w for w in wind if w not in attrs]
    if missing:
        raise EvaluationError(f"{option}: no channel {missing}; channels are {sorted(attrs)}")
    for name, role, other in ((wind[0], "eastward", "northward"), (wind[1], "northward", "eastward")):
        units = str(attrs[name].get("units", "")).strip()
        standard = str(attrs[name].get("standard_name", "")) or getattr(cf_name(name, units or None),
                                                                         "standard_name", "")
        if standard == f"{role}_wind":
            continue
        if standard == f"{other}_wind":
            raise EvaluationError(f"{option}: {name!r} is the {other} wind; give the eastward (u) component first, "
                                  "then the northward (v) one")
        if standard:
            raise EvaluationError(f"{option}: {name!r} is {standard.replace('_', ' ')}{f' ({units})' if units else ''}, "
                                  f"not a wind component; give the eastward and northward wind channels")
        if not units or conversion(units, "m s-1") is None:
            raise EvaluationError(f"{option}: {name!r} is not a wind component: its units are "
                                  f"{repr(units) if units else 'not given'}, not a speed (m s-1), and it has no "
                                  "standard_name eastward_wind/northward_wind; give the wind channels")


def local_km(lat, lon, lat0: float, lon0: float) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) km of points from (lat0, lon0) in the local equirectangular plane."""
    dlon = (np.asarray(lon) - lon0 + 180.0) % 360.0 - 180.0
    east = EARTH_RADIUS_KM * np.deg2rad(dlon) * np.cos(np.deg2rad(lat0))
    north = EARTH_RADIUS_KM * np.deg2rad(np.asarray(lat) - lat0)
    return east, north


def from_local_km(east, north, lat0: float, lon0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `local_km`: (lat, lon) in degrees."""
    lat = lat0 + np.rad2deg(np.asarray(north) / EARTH_RADIUS_KM)
    lon = lon0 + np.rad2deg(np.asarray(east) / (EARTH_RADIUS_KM * np.cos(np.deg2rad(lat0))))
    return lat, lon


def smooth(field: np.ndarray, sigma_cells: float) -> np.ndarray:
    """Gaussian smoothing (σ in cells) that ignores NaN pixels (normalised convolution); NaN stays NaN."""
    if sigma_cells <= 0:
        return np.asarray(field, dtype=np.float64)
    valid = np.isfinite(field)
    filled = np.where(valid, field, 0.0).astype(np.float64)
    weight = ndimage.gaussian_filter(valid.astype(np.float64), sigma_cells, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ndimage.gaussian_filter(filled, sigma_cells, mode="nearest") / weight
    return np.where(valid, out, np.nan)


def position(lat: np.ndarray, lon: np.ndarray, j: float, i: float) -> tuple[float, float]:
    """(lat, lon) at fractional grid index (j, i), bilinear in the 2-D coordinates."""
    at = np.array([[j], [i]])
    east_of = ndimage.map_coordinates(np.cos(np.deg2rad(lon)), at, order=1, mode="nearest")[0]
    north_of = ndimage.map_coordinates(np.sin(np.deg2rad(lon)), at, order=1, mode="nearest")[0]
    return (float(ndimage.map_coordinates(lat, at, order=1, mode="nearest")[0]),
            float(np.rad2deg(np.arctan2(north_of, east_of))))  # through sin/cos: safe across ±180°


def _parabolic(f_minus: float, f0: float, f_plus: float) -> float:
    """Offset (−½..½) of the extremum of the parabola through three equally spaced values."""
    curvature = f_minus - 2 * f0 + f_plus
    if not np.isfinite(curvature) or curvature == 0:
        return 0.0
    return float(np.clip(0.5 * (f_minus - f_plus) / curvature, -0.5, 0.5))


def refine_extremum(field: np.ndarray, j: int, i: int) -> tuple[float, float]:
    """Fractional (j, i) of the extremum at integer (j, i): a parabola through the neighbours on each axis."""
    ny, nx = field.shape
    dj = _parabolic(field[j - 1, i], field[j, i], field[j + 1, i]) if 0 < j < ny - 1 else 0.0
    di = _parabolic(field[j, i - 1], field[j, i], field[j, i + 1]) if 0 < i < nx - 1 else 0.0
    return j + dj, i + di


@dataclass
class Centre:
    """A vortex centre: position (degrees and fractional grid index) and the value that located it."""

    lat: float
    lon: float
    j: float
    i: float
    method: str
    value: float  # minimum pressure, or the extreme vorticity (of the channel, or of u, v in s-1)
    sign: float = 1.0  # of the vorticity (1: counter-clockwise); 1 for pressure (rotation from the winds)


def _window(lat, lon, near, search_km, margin: int = 3):
    """Mask of the pixels within search_km of `near` (lat, lon), or everywhere when `near` is None, less
    `margin` cells along the border: a centre there is an artefact of the smoothing's edge, or cut off."""
    inside = np.zeros(lat.shape, dtype=bool)
    m = margin if min(lat.shape) > 4 * margin else 0
    inside[m:lat.shape[0] - m, m:lat.shape[1] - m] = True
    if near is not None:
        east, north = local_km(lat, lon, *near)
        inside &= np.hypot(east, north) <= search_km
    return inside


def find_centre(fields: dict[str, np.ndarray], roles: Roles, lat, lon, method: str = "auto",
                smooth_km: float | None = None, near: tuple[float, float] | None = None,
                search_km: float = 300.0, sign: float | None = None) -> Centre:
    """The vortex centre in `fields` ({name: (y, x)}), to a fraction of a grid cell.

    method: "pressure" (minimum of the smoothed pressure, refined by a parabola), "vorticity" (the vortex
    core of the smoothed vorticity channel, see `vorticity_centre`), "wind" (the same on the relative
    vorticity of u and v, `relative_vorticity`), or "auto" (the first of these the fields allow). The
    vorticity is of sign `sign`, or of the larger |ζ| of either sign when None. `near` (lat, lon) and
    `search_km` restrict the search; smoothing σ = `smooth_km` (default: two grid spacings).
    """
    spacing = grid_spacing_km(lat, lon)
    # σ in cells by default: what must go is grid-scale noise (centred differences amplify it; km-scale
    # models resolve a few Δx), whatever Δx is. Two cells damp 4Δx waves to <1% and keep 80% of a 20Δx one.
    sigma = (2 * spacing if smooth_km is None else smooth_km) / spacing
    method = _choose_method(method, roles)
    inside = _window(lat, lon, near, search_km)
    if not inside.any():
        raise EvaluationError(f"no grid point within {search_km:g} km of {near}; the vortex search is off the grid")
    if method != "pressure":
        zeta = (fields[roles.vorticity] if method == "vorticity"
                else relative_vorticity(fields[roles.u], fields[roles.v], lat, lon))
        return vorticity_centre(zeta, lat, lon, sigma, inside, sign, method)
    pressure = fields[roles.pressure]
    smoothed = smooth(pressure, sigma)
    j, i = _argmax_inside(-smoothed, inside)
    fj, fi = refine_extremum(smoothed, j, i)
    return Centre(*position(lat, lon, fj, fi), fj, fi, method, float(pressure[j, i]), 1.0)


def _argmax_inside(field: np.ndarray, inside: np.ndarray) -> tuple[int, int]:
    masked = np.where(inside & np.isfinite(field), field, -np.inf)
    j, i = np.unravel_index(int(np.argmax(masked)), masked.shape)
    return int(j), int(i)


def _choose_method(method: str, roles: Roles) -> str:
    have = {"pressure": roles.pressure is not None, "vorticity": roles.vorticity is not None,
            "wind": roles.u is not None and roles.v is not None}
    if method == "auto":
        for candidate in METHODS:
            if have[candidate]:
                return candidate
        raise EvaluationError("no pressure, vorticity or wind (u, v) channel to find a vortex centre by; "
                              "name the wind channels with --wind U,V")
    if method not in have:
        raise EvaluationError(f"--centre-by {method!r}: choose auto, {', '.join(METHODS)}")
    if not have[method]:
        raise EvaluationError(f"--centre-by {method}: no {method} channel (found by name or CF standard_name)")
    return method


def vorticity_centre(zeta: np.ndarray, lat, lon, sigma_cells: float, inside: np.ndarray,
                     sign: float | None = None, method: str = "vorticity") -> Centre:
    """The vortex centre from vorticity `zeta` (y, x): the peak of the smoothed ζ of sign `sign` (or of the
    larger |ζ| when None) within `inside`, refined to the centroid of its core (`core_centroid`)."""
    smoothed = smooth(zeta, sigma_cells)
    if sign is None:
        lows = np.nanmin(np.where(inside, smoothed, np.nan))
        highs = np.nanmax(np.where(inside, smoothed, np.nan))
        sign = 1.0 if abs(highs) >= abs(lows) else -1.0
    oriented = sign * smoothed
    j, i = _argmax_inside(oriented, inside)
    fj, fi = core_centroid(oriented, j, i)
    return Centre(*position(lat, lon, fj, fi), fj, fi, method, float(zeta[j, i]), float(sign))


def core_centroid(oriented: np.ndarray, j: int, i: int) -> tuple[float, float]:
    """Fractional (j, i) of the vortex core about the peak (j, i) of `oriented` (ζ times the vortex's sign):
    the centroid, weighted by the excess, of the connected region above half the peak. A vortex with a calm
    core has its largest ζ on a ring (the eyewall), so the peak alone can be up to a radius of maximum wind
    off; the ring is centred on the vortex. Other eddies above the threshold are other regions: left out."""
    peak = float(oriented[j, i])
    if not peak > 0:
        return refine_extremum(oriented, j, i)
    above = np.isfinite(oriented) & (oriented > 0.5 * peak)
    labels, _ = ndimage.label(above)
    weights = np.where(labels == labels[j, i], oriented - 0.5 * peak, 0.0)
    jj, ii = np.indices(oriented.shape, dtype=np.float64)
    total = weights.sum()
    return float((weights * jj).sum() / total), float((weights * ii).sum() / total)


def east_north_derivatives(field: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(∂f/∂east, ∂f/∂north), each (y, x) in the field's units per km: centred index differences turned into
    east/north ones through the local cell vectors (km per cell along j and i) in the plane about the domain's
    centre (`local_km`), so that curvilinear grids (Lambert, rotated, north-down) are handled."""
    lat0, lon0 = float(np.mean(lat)), float(lon[lat.shape[0] // 2, lat.shape[1] // 2])
    east, north = local_km(lat, lon, lat0, lon0)
    e_j, e_i = np.gradient(east)
    n_j, n_i = np.gradient(north)
    f_j, f_i = np.gradient(np.asarray(field, dtype=np.float64))
    det = e_j * n_i - e_i * n_j  # [f_j, f_i] = [[e_j, n_j], [e_i, n_i]] · [f_e, f_n]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n_i * f_j - n_j * f_i) / det, (e_j * f_i - e_i * f_j) / det


def relative_vorticity(u: np.ndarray, v: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """ζ = ∂v/∂east − ∂u/∂north (y, x), counter-clockwise positive, in s-1 for earth-relative u, v in m s-1.
    The sphere's u·tan(lat)/R term (~1e-6 s-1 for 10 m s-1) is left out: it is smooth, and a vortex's ζ is
    ~1e-3 s-1."""
    dv_east, _ = east_north_derivatives(v, lat, lon)
    _, du_north = east_north_derivatives(u, lat, lon)
    return (dv_east - du_north) / 1000.0  # per km → per m


def azimuthal_profiles(fields: dict[str, np.ndarray], roles: Roles, lat, lon, centre: Centre,
                       max_radius_km: float, dr_km: float) -> dict[str, np.ndarray]:
    """Means over rings [k·dr, (k+1)·dr) about the centre of every field, and of the wind speed, tangential
    (counter-clockwise positive) and radial (outward positive) wind when u, v are known: {name: (ring,)},
    with "radius" (ring midpoints, km) and "pixels" (pixels per ring). Rings with no pixel are NaN."""
    east, north = local_km(lat, lon, centre.lat, centre.lon)
    radius = np.hypot(east, north)
    edges = np.arange(0.0, max_radius_km + dr_km / 2, dr_km)
    ring = np.digitize(radius, edges) - 1  # -1 never (radius ≥ 0); len(edges)-1 beyond the last edge
    rings = len(edges) - 1
    inside = ring < rings
    derived = dict(fields)
    if roles.u is not None and roles.v is not None:
        u, v = fields[roles.u], fields[roles.v]
        with np.errstate(invalid="ignore", divide="ignore"):
            cos, sin = np.where(radius > 0, east / radius, 0.0), np.where(radius > 0, north / radius, 0.0)
        derived["wind_speed"] = np.hypot(u, v)
        derived["tangential_wind"] = -u * sin + v * cos
        derived["radial_wind"] = u * cos + v * sin
    profiles = {"radius": 0.5 * (edges[:-1] + edges[1:])}
    profiles["pixels"] = np.bincount(ring[inside], minlength=rings).astype(np.float64)
    for name, field in derived.items():
        valid = inside & np.isfinite(field)
        sums = np.bincount(ring[valid], weights=field[valid], minlength=rings)
        counts = np.bincount(ring[valid], minlength=rings)
        with np.errstate(invalid="ignore", divide="ignore"):
            profiles[name] = np.where(counts > 0, sums / counts, np.nan)
    return profiles


def max_wind(radius: np.ndarray, speed: np.ndarray) -> tuple[float, float]:
    """(maximum, radius of the maximum) of an azimuthal-mean wind profile; the radius refined by a
    parabola through the neighbouring rings (the ring width is the resolution otherwise)."""
    if not np.isfinite(speed).any():
        return float("nan"), float("nan")
    k = int(np.nanargmax(speed))
    if 0 < k < len(speed) - 1:
        offset = _parabolic(-speed[k - 1], -speed[k], -speed[k + 1])
        return float(speed[k]), float(radius[k] + offset * (radius[1] - radius[0]))
    return float(speed[k]), float(radius[k])


@dataclass
class Section:
    """Points along a straight line: (point,) latitudes, longitudes and distance from the start (km)."""

    lat: np.ndarray
    lon: np.ndarray
    distance: np.ndarray

    @property
    def endpoints(self) -> str:
        return (f"{self.lat[0]:.3f},{self.lon[0]:.3f}:{self.lat[-1]:.3f},{self.lon[-1]:.3f}")


def section_line(lat1: float, lon1: float, lat2: float, lon2: float, step_km: float) -> Section:
    """Points every ~step_km from (lat1, lon1) to (lat2, lon2), straight in the plane about the midpoint."""
    mid_lat, mid_lon = (lat1 + lat2) / 2, lon1 + ((lon2 - lon1 + 180) % 360 - 180) / 2
    (e1, e2), (n1, n2) = local_km(np.array([lat1, lat2]), np.array([lon1, lon2]), mid_lat, mid_lon)
    length = float(np.hypot(e2 - e1, n2 - n1))
    if length == 0:
        raise EvaluationError(f"--section {lat1},{lon1}:{lat2},{lon2}: the two ends are the same point")
    count = max(2, int(np.ceil(length / step_km)) + 1)
    t = np.linspace(0.0, 1.0, count)
    lat, lon = from_local_km(e1 + t * (e2 - e1), n1 + t * (n2 - n1), mid_lat, mid_lon)
    return Section(lat, lon, t * length)


def grid_index(lat: np.ndarray, lon: np.ndarray, plat: np.ndarray, plon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional grid indices (j, i) of points (plat, plon) on a curvilinear grid; NaN off the grid.
    The nearest pixel, then one Newton step with the local cell vectors (km per cell along j and i)."""
    jj, ii = np.full(len(plat), np.nan), np.full(len(plat), np.nan)
    ny, nx = lat.shape
    for k, (p, q) in enumerate(zip(plat, plon)):
        east, north = local_km(lat, lon, p, q)
        j, i = np.unravel_index(int(np.argmin(np.hypot(east, north))), lat.shape)
        j0, i0 = min(max(j, 1), ny - 2) if ny > 2 else j, min(max(i, 1), nx - 2) if nx > 2 else i
        dj = np.array([east[j0 + 1, i] - east[j0 - 1, i], north[j0 + 1, i] - north[j0 - 1, i]]) / 2
        di = np.array([east[j, i0 + 1] - east[j, i0 - 1], north[j, i0 + 1] - north[j, i0 - 1]]) / 2
        step = np.linalg.solve(np.column_stack([dj, di]), -np.array([east[j, i], north[j, i]]))
        fj, fi = j + step[0], i + step[1]
        if -0.5 <= fj <= ny - 0.5 and -0.5 <= fi <= nx - 0.5:
            jj[k], ii[k] = fj, fi
    return jj, ii


def along_section(field: np.ndarray, jj: np.ndarray, ii: np.ndarray) -> np.ndarray:
    """Bilinear samples (point,) of a (y, x) field at fractional indices; NaN off the grid."""
    off = ~np.isfinite(jj)
    at = np.vstack([np.where(off, 0, jj), np.where(off, 0, ii)])
    values = ndimage.map_coordinates(np.asarray(field, dtype=np.float64), at, order=1, mode="nearest")
    return np.where(off, np.nan, values)


def gradient_magnitude(field: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """|∇f| (y, x) in the field's units per km, from `east_north_derivatives`."""
    return np.hypot(*east_north_derivatives(field, lat, lon))


def max_gradient_line(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, length_km: float,
                      step_km: float, smooth_km: float | None = None) -> Section:
    """A section of `length_km` centred on the strongest gradient of the smoothed field (not within three
    cells of the border), along the gradient: across the front. Its ends may lie off the grid."""
    spacing = grid_spacing_km(lat, lon)
    smoothed = smooth(field, (2 * spacing if smooth_km is None else smooth_km) / spacing)
    magnitude = gradient_magnitude(smoothed, lat, lon)
    masked = np.where(_window(lat, lon, None, 0.0) & np.isfinite(magnitude), magnitude, -np.inf)
    j, i = np.unravel_index(int(np.argmax(masked)), masked.shape)
    if not np.isfinite(masked[j, i]):
        raise EvaluationError("no finite gradient to place an automatic section on")
    c_lat, c_lon = float(lat[j, i]), float(lon[j, i])
    east, north = local_km(lat, lon, c_lat, c_lon)
    f = smoothed
    jm, jp, im, ip = max(j - 1, 0), min(j + 1, f.shape[0] - 1), max(i - 1, 0), min(i + 1, f.shape[1] - 1)
    cells = np.array([[east[jp, i] - east[jm, i], east[j, ip] - east[j, im]],
                      [north[jp, i] - north[jm, i], north[j, ip] - north[j, im]]])  # km per (Δj, Δi)
    df = np.array([f[jp, i] - f[jm, i], f[j, ip] - f[j, im]])
    grad = np.linalg.solve(cells.T, df)  # (∂f/∂east, ∂f/∂north)
    direction = grad / np.hypot(*grad)
    half = length_km / 2
    (lat1, lat2), (lon1, lon2) = from_local_km(np.array([-half, half]) * direction[0],
                                               np.array([-half, half]) * direction[1], c_lat, c_lon)
    return section_line(float(lat1), float(lon1), float(lat2), float(lon2), step_km)
