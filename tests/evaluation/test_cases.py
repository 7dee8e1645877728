"""Case studies on synthetic fields with known answers: a Holland and a Rankine vortex at a known centre and
radius of maximum wind (alone, or carried by a uniform flow, in either hemisphere), a tanh front at a known
position and gradient; and `corrdiff case` on a tiny file."""

from functools import partial

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from corrdiff.ensemble_file import grid_spacing_km
from corrdiff.evaluation import cases
from tests.evaluation import evaluation_fixtures as fx

SHAPE = (48, 48)
CENTRE = (24.13, 122.07)  # between grid points
RMW_KM, VMAX, B = 60.0, 40.0, 1.5


def holland(radius_km, rmw_km=RMW_KM):
    """Holland (1980) gradient-free wind profile: maximum VMAX at rmw_km."""
    x = (rmw_km / np.maximum(radius_km, 1e-6)) ** B
    return VMAX * np.sqrt(x * np.exp(1.0 - x))


def rankine(radius_km, rmw_km=RMW_KM):
    return np.where(radius_km < rmw_km, VMAX * radius_km / rmw_km, VMAX * rmw_km / np.maximum(radius_km, 1e-6))


def vortex_fields(profile=holland, centre=CENTRE, shape=SHAPE, sign=1.0, background=(0.0, 0.0), south=False):
    """u, v (counter-clockwise for sign 1, plus a uniform `background` (u, v)), pressure and vorticity of an
    axisymmetric vortex on fx.grid, or with `south` on its mirror image south of the equator (rows running
    southward: a north-down grid)."""
    lat, lon = fx.grid(shape)
    lat = -lat if south else lat
    east, north = cases.local_km(lat, lon, *centre)
    radius = np.hypot(east, north)
    speed = sign * profile(radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos, sin = np.where(radius > 0, east / radius, 0), np.where(radius > 0, north / radius, 0)
    fine_r = np.linspace(0.0, 1000.0, 20001)
    zeta_r = np.gradient(fine_r * profile(fine_r), fine_r) / np.maximum(fine_r, 1e-6) / 1000.0  # s-1 for r in km
    fields = {"u": background[0] - speed * sin, "v": background[1] + speed * cos,
              "msl": 96000.0 + 5000.0 * np.exp(-(RMW_KM / np.maximum(radius, 1e-6)) ** B),
              "vorticity": sign * np.interp(radius, fine_r, zeta_r)}
    return fields, lat, lon


def offset_km(centre, expected=CENTRE):
    return float(np.hypot(*cases.local_km(centre.lat, centre.lon, *expected)))


@pytest.mark.parametrize("method, profile", [("pressure", holland), ("wind", holland), ("wind", rankine),
                                             ("vorticity", rankine), ("vorticity", holland)])
def test_vortex_centre_is_found_within_a_grid_cell(method, profile):
    fields, lat, lon = vortex_fields(profile)
    roles = cases.find_roles({n: {} for n in fields})
    assert (roles.u, roles.v, roles.pressure, roles.vorticity) == ("u", "v", "msl", "vorticity")
    centre = cases.find_centre(fields, roles, lat, lon, method)
    assert centre.method == method
    assert offset_km(centre) < grid_spacing_km(lat, lon)


def test_auto_method_prefers_pressure_then_vorticity_then_wind():
    fields, lat, lon = vortex_fields()
    roles = cases.find_roles({n: {} for n in fields})
    assert cases.find_centre(fields, roles, lat, lon).method == "pressure"
    roles.pressure = None
    assert cases.find_centre(fields, roles, lat, lon).method == "vorticity"
    roles.vorticity = None
    assert cases.find_centre(fields, roles, lat, lon).method == "wind"


def test_anticyclonic_vortex_found_by_vorticity_of_either_sign():
    fields, lat, lon = vortex_fields(rankine, sign=-1.0)
    roles = cases.find_roles({n: {} for n in fields})
    centre = cases.find_centre(fields, roles, lat, lon, "vorticity")
    assert centre.sign == -1.0 and offset_km(centre) < grid_spacing_km(lat, lon)


def test_relative_vorticity_of_a_rankine_core_in_a_uniform_flow_is_twice_its_angular_velocity():
    centre = (-CENTRE[0], CENTRE[1])  # on a north-down grid: rows run southward
    fields, lat, lon = vortex_fields(rankine, centre, background=(4.0, -3.0), south=True)
    zeta = cases.relative_vorticity(fields["u"], fields["v"], lat, lon)
    core = np.hypot(*cases.local_km(lat, lon, *centre)) < 0.7 * RMW_KM
    np.testing.assert_allclose(zeta[core], 2 * VMAX / (RMW_KM * 1000.0), rtol=0.02)  # s-1, counter-clockwise +


# RMW ≈ 9 cells, the centre off the grid's middle between grid points, carried by 6 m s-1 towards 30° (ENE)
WIND_RMW_KM, BACKGROUND = 85.0, (6.0 * np.cos(np.pi / 6), 6.0 * np.sin(np.pi / 6))
WIND_SHAPE, WIND_CENTRE = (64, 64), (22.0 + 0.09 * 27.41, 120.0 + 0.09 * 35.58)


def _strong_wind_centroid(fields, lat, lon, centre, window_km):
    """The former wind-only centre, started at the true one: the centroid of the speed above half its
    maximum in a disk of window_km, recentred until it stays put. A background flow adds to the speed on one
    side of the vortex, and the centroid drifts that way."""
    speed = np.hypot(fields["u"], fields["v"])
    jj, ii = np.indices(speed.shape)
    for _ in range(50):
        disk = np.hypot(*cases.local_km(lat, lon, *centre)) <= window_km
        weights = np.where(disk, np.maximum(speed - 0.5 * speed[disk].max(), 0.0), 0.0)
        centre = cases.position(lat, lon, (weights * jj).sum() / weights.sum(), (weights * ii).sum() / weights.sum())
    return centre


@pytest.mark.parametrize("south", [False, True], ids=["north", "south"])
@pytest.mark.parametrize("profile", [holland, rankine])
def test_centre_from_the_winds_alone_holds_in_a_background_flow(profile, south):
    """The centre from the vorticity of u, v within a grid cell of the truth, and the maximum of the
    azimuthal-mean tangential wind about it (what `vortex_case` reports: the uniform flow averages out of it,
    while the largest speed is VMAX + 6 on one side) and its radius within 10% of VMAX and the RMW."""
    centre = (-WIND_CENTRE[0], WIND_CENTRE[1]) if south else WIND_CENTRE
    cyclonic = -1.0 if south else 1.0  # clockwise in the south
    fields, lat, lon = vortex_fields(partial(profile, rmw_km=WIND_RMW_KM), centre, WIND_SHAPE, cyclonic,
                                     BACKGROUND, south)
    noise = np.random.default_rng(20)  # 2 m s-1 grid-scale noise: what the smoothing of ζ is for
    winds = {n: fields[n] + 2.0 * noise.standard_normal(fields[n].shape) for n in ("u", "v")}
    spacing = grid_spacing_km(lat, lon)
    roles = cases.find_roles({n: {} for n in winds})
    found = cases.find_centre(winds, roles, lat, lon)
    assert found.method == "wind" and found.sign == cyclonic
    assert offset_km(found, centre) < spacing
    rings = cases.azimuthal_profiles(winds, roles, lat, lon, found, max_radius_km=2 * WIND_RMW_KM, dr_km=spacing)
    vmax, rmw = cases.max_wind(rings["radius"], found.sign * rings["tangential_wind"])
    assert vmax == pytest.approx(VMAX, rel=0.1) and rmw == pytest.approx(WIND_RMW_KM, rel=0.1)
    assert np.hypot(fields["u"], fields["v"]).max() > VMAX + 5  # the speed would count the background
    old = _strong_wind_centroid(winds, lat, lon, centre, 2 * WIND_RMW_KM)
    assert np.hypot(*cases.local_km(*old, *centre)) > 0.5 * WIND_RMW_KM  # the former method fails this test


@pytest.mark.parametrize("profile", [holland, rankine])
def test_profile_and_radius_of_maximum_wind_match_the_analytic_vortex(profile):
    fields, lat, lon = vortex_fields(profile)
    spacing = grid_spacing_km(lat, lon)
    roles = cases.find_roles({n: {} for n in fields})
    centre = cases.find_centre(fields, roles, lat, lon, "pressure")
    rings = cases.azimuthal_profiles(fields, roles, lat, lon, centre, max_radius_km=180.0, dr_km=spacing)
    vmax, rmw = cases.max_wind(rings["radius"], rings["wind_speed"])
    assert abs(rmw - RMW_KM) < spacing
    assert abs(vmax - VMAX) < 0.1 * VMAX
    beyond = rings["radius"] > 1.5 * spacing  # the innermost rings average a steep slope over few pixels
    expected = profile(rings["radius"][beyond])
    np.testing.assert_allclose(rings["wind_speed"][beyond], expected, rtol=0.08, atol=1.0)
    np.testing.assert_allclose(rings["tangential_wind"][beyond], expected, rtol=0.08, atol=1.0)
    assert np.all(np.abs(rings["radial_wind"][beyond]) < 1.0)  # purely swirling


def tanh_front(shape=(40, 40), angle_deg=30.0, width_km=25.0, jump=8.0):
    """Temperature T = 290 + jump/2·tanh(s/width), s the distance (km) across a straight front through the
    domain centre whose normal points `angle_deg` anticlockwise from east; max gradient jump/(2·width)."""
    lat, lon = fx.grid(shape)
    centre = (float(lat[shape[0] // 2, 0] + 0.004), float(lon[0, shape[1] // 2] + 0.003))
    east, north = cases.local_km(lat, lon, *centre)
    normal = np.array([np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))])
    s = east * normal[0] + north * normal[1]
    return 290.0 + jump / 2 * np.tanh(s / width_km), lat, lon, centre, normal


def test_automatic_section_crosses_the_tanh_front_at_its_position_and_gradient():
    t2m, lat, lon, centre, normal = tanh_front()
    spacing = grid_spacing_km(lat, lon)
    section = cases.max_gradient_line(t2m, lat, lon, length_km=200.0, step_km=spacing / 2, smooth_km=0.0)
    jj, ii = cases.grid_index(lat, lon, section.lat, section.lon)
    east, north = cases.local_km(section.lat, section.lon, *centre)
    across = east * normal[0] + north * normal[1]
    direction = np.array([east[-1] - east[0], north[-1] - north[0]]) / section.distance[-1]
    assert abs(abs(direction @ normal) - 1) < 0.02  # along the gradient, i.e. across the front
    values = cases.along_section(t2m, jj, ii)
    np.testing.assert_allclose(values, 290.0 + 4.0 * np.tanh(across / 25.0), atol=0.15)
    gradient = cases.along_section(cases.gradient_magnitude(t2m, lat, lon), jj, ii)
    k = int(np.nanargmax(gradient))
    assert abs(across[k]) < spacing  # the front's position
    assert gradient[k] == pytest.approx(8.0 / (2 * 25.0), rel=0.05)  # its gradient, K km-1


def test_user_section_samples_a_linear_field_exactly():
    lat, lon = fx.grid((20, 20))
    field = 3.0 * lat - 2.0 * lon
    section = cases.section_line(22.3, 120.2, 23.5, 121.4, step_km=5.0)
    assert section.distance[-1] == pytest.approx(np.hypot(*cases.local_km(23.5, 121.4, 22.3, 120.2)), rel=5e-3)
    jj, ii = cases.grid_index(lat, lon, section.lat, section.lon)
    np.testing.assert_allclose(cases.along_section(field, jj, ii), 3.0 * section.lat - 2.0 * section.lon, atol=1e-3)
    off = cases.section_line(22.3, 120.2, 30.0, 121.4, step_km=20.0)
    assert np.isnan(cases.grid_index(lat, lon, off.lat, off.lon)[0][-1])  # beyond the grid


def _vortex_case_files(folder, members=3, channels=("u", "v", "vorticity"), background=(0.0, 0.0)):
    """Truth and an ensemble (regression = truth's vortex weakened, members with other strengths) of a
    Rankine vortex moving 0.2° east between two times, on a 32 × 32 grid of fx.grid; (ens, truth, centres)."""
    shape, centres = (32, 32), [(23.41, 121.33), (23.41, 121.53)]
    truth = {n: [] for n in channels}
    ensemble = {n: [] for n in truth}
    regression = {n: [] for n in truth}
    for centre in centres:
        fields, _, _ = vortex_fields(rankine, centre, shape, background=background)
        for n in truth:
            truth[n].append(fields[n])
            regression[n].append(0.8 * fields[n])
            ensemble[n].append([(0.9 + 0.1 * m) * fields[n] for m in range(members)])
    arrays = [{n: np.asarray(a[n], np.float32) for n in a} for a in (truth, ensemble, regression)]
    return (fx.write_ensemble(folder / "ens.nc", arrays[1], arrays[2]), fx.write_truth(folder / "truth.nc", arrays[0]),
            centres)


def invoke(*args):
    import typer

    from corrdiff.cli.case import case_command

    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("case")(case_command)
    app.command("other")(lambda: None)  # two commands: typer keeps the "case" word
    return CliRunner().invoke(app, ["case", *[str(a) for a in args]])


def test_case_command_tracks_the_vortex_and_cuts_a_section(tmp_path):
    ens, truth, centres = _vortex_case_files(tmp_path)
    times = fx.time_axis(2)
    out = tmp_path / "case"
    result = invoke(ens, "--truth", truth, "--time", str(times[0])[:16], "--time", str(times[1])[:16], "--vortex",
                    "--section", "auto", "--out", out)
    assert result.exit_code == 0, result.output
    assert "max wind" in result.output and "front" in result.output
    with xr.open_dataset(out / "case.nc") as ds:
        spacing = float(ds.attrs["grid_spacing_km"])
        assert list(ds["source"].values) == ["truth", "regression", "member 0", "member 1", "member 2"]
        assert ds["vortex_wind_speed"].dims == ("time", "source", "radius")
        for t, centre in enumerate(centres):  # the track: truth's centre at each time
            found = ds.isel(time=t).sel(source="truth")
            east, north = cases.local_km(float(found["vortex_centre_lat"]), float(found["vortex_centre_lon"]), *centre)
            assert np.hypot(east, north) < spacing
        rmw = ds["vortex_rmw"].values
        assert np.all(np.abs(rmw - RMW_KM) < spacing)  # every source has the same radius of maximum wind
        max_wind = ds["vortex_max_wind"].isel(time=0)
        ratio = max_wind.sel(source=["regression", "member 0", "member 2"]).values / float(max_wind.sel(source="truth"))
        np.testing.assert_allclose(ratio, [0.8, 0.9, 1.1], rtol=1e-3)  # scaled copies of truth's vortex
        assert ds["section_u"].dims == ("source", "distance")
        assert ds["section_u_gradient"].attrs["units"] == "m s-1 km-1"
    assert {p.name for p in out.glob("*.png")} == {"vortex_profiles.png", "vortex_map.png", "section_profiles.png",
                                                     "section_map.png"}
    again = invoke(ens, "--truth", truth, "--vortex", "--out", out)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_case_command_centres_by_the_winds_alone(tmp_path):
    ens, truth, centres = _vortex_case_files(tmp_path, members=1, channels=("u", "v"), background=BACKGROUND)
    out = tmp_path / "case"
    result = invoke(ens, "--truth", truth, "--time", str(fx.time_axis(2)[0])[:16], "--vortex", "--out", out)
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out / "case.nc") as ds:
        assert ds.attrs["centre_method"] == "wind"
        spacing, found = float(ds.attrs["grid_spacing_km"]), ds.isel(time=0)
        offsets = np.hypot(*cases.local_km(found["centre_lat"].values, found["centre_lon"].values, *centres[0]))
        assert np.all(offsets < spacing)  # truth, the regression and the member
        assert np.all(np.abs(found["rmw"].values - RMW_KM) < spacing)
        ratio = found["max_wind"].sel(source=["regression", "member 0"]).values / float(found["max_wind"][0])
        np.testing.assert_allclose(ratio, [0.8, 0.9], rtol=1e-3)


def test_case_command_errors_are_one_line(tmp_path):
    ens, truth, _ = _vortex_case_files(tmp_path, members=2)
    result = invoke(ens, "--truth", truth, "--section", "10,10:11,11", "--out", tmp_path / "c")
    assert result.exit_code == 2
    assert "outside the grid" in result.output and len(result.output.strip().splitlines()) == 1
    result = invoke(ens, "--truth", truth, "--section", "10:11", "--out", tmp_path / "c")
    assert result.exit_code == 2 and "LAT1,LON1:LAT2,LON2" in result.output
    assert invoke(ens, "--truth", truth, "--out", tmp_path / "c").exit_code != 0  # neither --vortex nor --section
