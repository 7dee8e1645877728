"""The trust rules on synthetic scores: each rule flags just outside its range and not just inside, one-member
models are never judged as ensembles, and a calibrated case raises no flag; through the score table's text
and the report's HTML, and through `corrdiff score` and `corrdiff report` on tiny files (exit code 0)."""

import numpy as np
import pytest
import xarray as xr

from corrdiff.evaluation import trust
from corrdiff.evaluation.report import trust_section
from corrdiff.evaluation.tables import html_table, text_table
from tests.evaluation import evaluation_fixtures as fx
from tests.evaluation.test_cli import invoke

GOOD = {"spread_skill": 1.0, "power_ratio_smallest_octave": 1.0, "log_spectral_distance": 0.1, "crps": 0.8,
        "crps_fair": 0.7, "mae": 1.0}


def scores(**corrdiff) -> xr.Dataset:
    """Scores (model, variable) of corrdiff (8 members), the regression mean and interpolation (1 member each):
    every score good, corrdiff's `corrdiff` values given for variable u; the one-member models' spread/skill 0
    and power 0.1, as a deterministic forecast's are."""
    models, variables = ["corrdiff", "regression", "interp"], ["u", "v"]
    data = {}
    for name, good in GOOD.items():
        values = np.full((3, 2), good)
        values[0, 0] = corrdiff.get(name, good)
        values[1:, :] = {"spread_skill": 0.0, "power_ratio_smallest_octave": 0.1, "log_spectral_distance": 0.9,
                         "crps_fair": np.nan}.get(name, 1.0)
        data[name] = (("model", "variable"), values)
    data["members"] = (("model",), np.array([8, 1, 1]))
    return xr.Dataset(data, {"model": models, "variable": variables, "units": ("variable", ["m s-1", "m s-1"])})


def kinds(found):
    return [(f.variable, f.model, f.kind) for f in found]


def test_good_scores_and_deterministic_models_raise_no_flag():
    assert trust.flags(scores()) == []


@pytest.mark.parametrize("value, kind", [(0.69, "under-dispersed"), (1.31, "over-dispersed")])
def test_spread_skill_outside_0_7_to_1_3_is_flagged(value, kind):
    found = trust.flags(scores(spread_skill=value))
    assert kinds(found) == [("u", "corrdiff", kind)]
    assert found[0].score == "spread_skill" and found[0].value == value
    assert f"{value:.2f}×" in found[0].message and "corrdiff tune" in found[0].message


@pytest.mark.parametrize("value", [0.7, 0.71, 1.29, 1.3])
def test_spread_skill_inside_the_range_is_not_flagged(value):
    assert trust.flags(scores(spread_skill=value)) == []


@pytest.mark.parametrize("value, kind", [(0.49, "too smooth"), (2.01, "noisy small scales"),
                                         (2.6, "noisy small scales")])
def test_small_scale_power_off_by_more_than_2x_is_flagged(value, kind):
    found = trust.flags(scores(power_ratio_smallest_octave=value))
    assert kinds(found) == [("u", "corrdiff", kind)]
    assert f"members carry {value:.2g}× the truth's power at 2–4 Δx" in found[0].message


@pytest.mark.parametrize("value", [0.5, 0.51, 1.99, 2.0])
def test_small_scale_power_within_2x_is_not_flagged(value):
    assert trust.flags(scores(power_ratio_smallest_octave=value)) == []


def test_log_spectral_distance_above_0_5_is_flagged():
    assert trust.flags(scores(log_spectral_distance=0.5)) == []
    found = trust.flags(scores(log_spectral_distance=0.51))
    assert kinds(found) == [("u", "corrdiff", "spectrum off")]
    assert "log-spectral distance 0.51" in found[0].message and "3.2×" in found[0].message


def test_fair_crps_worse_than_the_regression_means_mae_is_flagged():
    assert trust.flags(scores(crps_fair=1.0)) == []  # equal: not worse
    found = trust.flags(scores(crps_fair=1.2, crps=1.3))
    assert kinds(found) == [("u", "corrdiff", "worse than regression")]
    assert found[0].message.startswith("worse than regression: the ensemble's fair CRPS 1.2 m s-1 is above the "
                                       "regression mean's MAE 1 m s-1")
    assert "check the checkpoint pair" in found[0].message


def test_without_fair_crps_the_usual_crps_is_compared_and_without_regression_nothing():
    found = trust.flags(scores(crps=1.2).drop_vars("crps_fair"))
    assert kinds(found) == [("u", "corrdiff", "worse than regression")] and "the ensemble's CRPS 1.2" in \
        found[0].message
    assert trust.flags(scores(crps_fair=1.2).sel(model=["corrdiff", "interp"])) == []


def test_nan_and_missing_scores_are_not_judged():
    assert trust.flags(scores(spread_skill=np.nan, power_ratio_smallest_octave=np.nan)) == []
    only_skill = scores(log_spectral_distance=0.9).drop_vars(["log_spectral_distance", "power_ratio_smallest_octave"])
    assert trust.flags(only_skill) == []


def test_every_broken_rule_of_every_variable_is_a_flag():
    bad = scores(spread_skill=0.4, power_ratio_smallest_octave=3.0, log_spectral_distance=0.8, crps_fair=1.5)
    bad["spread_skill"].loc[{"model": "corrdiff", "variable": "v"}] = 2.0
    assert kinds(trust.flags(bad)) == [("u", "corrdiff", "under-dispersed"), ("u", "corrdiff", "noisy small scales"),
                                       ("u", "corrdiff", "spectrum off"), ("u", "corrdiff", "worse than regression"),
                                       ("v", "corrdiff", "over-dispersed")]


def test_the_text_table_and_the_html_show_the_flags():
    bad = scores(spread_skill=0.5)
    text = text_table(bad, width=120)
    assert "warning: u, corrdiff: under-dispersed: the spread is 0.50× the error" in text.replace("\n", " ")
    assert "0.5!" in text  # the flagged cell is marked
    assert "warning" not in text_table(scores(), width=120)
    found = trust.flags(bad)
    cell = html_table(bad)
    assert "class='flag'" in cell and "under-dispersed" in cell
    section = trust_section(found)
    assert "under-dispersed" in section and "corrdiff tune" in section
    assert "No warning" in trust_section([])


def test_tune_settings_are_judged_per_channel():
    table = xr.Dataset({"spread_skill": (("setting", "channel"), [[1.0, 0.6], [1.0, 1.0]]),
                        "power_ratio": (("setting", "channel"), [[1.0, 1.0], [4.0, 1.0]]),
                        "lsd": (("setting", "channel"), [[0.1, 0.1], [0.1, 0.1]])},
                       {"channel": ["t2m", "u10"]})
    assert kinds(trust.setting_flags(table, 0)) == [("u10", "setting 0", "under-dispersed")]
    assert kinds(trust.setting_flags(table, 1)) == [("t2m", "setting 1", "noisy small scales")]


def scaled_spread_case(folder, factor: float):
    """Files of a calibrated case (members = mu + sigma·noise, regression = mu) whose members' deviations from
    mu are scaled by `factor`: spread/skill ≈ `factor` (0.2: under-dispersed; 4: over-dispersed, noisy small
    scales, worse than the regression mean)."""
    truth, ensemble, regression = fx.case(times=3, members=4, shape=(16, 16), variables=("u",))
    scaled = {n: regression[n][:, None] + factor * (a - regression[n][:, None]) for n, a in ensemble.items()}
    return fx.write_ensemble(folder / "ens.nc", scaled, regression), fx.write_truth(folder / "truth.nc", truth)


def one_line(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


def test_score_prints_the_warning_and_still_succeeds(tmp_path):
    ens, truth = scaled_spread_case(tmp_path, 0.2)
    result = invoke("score", ens, "--truth", truth, "--out", tmp_path / "scores.nc", "-q")
    assert result.exit_code == 0, result.output
    output = one_line(result.output)
    assert "warning: u, corrdiff: under-dispersed: the spread is 0.2" in output and "corrdiff tune" in output
    assert output.count("warning:") == 1 and (tmp_path / "scores.nc").exists()
    (tmp_path / "calibrated").mkdir()
    calibrated, truth, _ = fx.write_case(tmp_path / "calibrated", times=3, members=4, shape=(16, 16),
                                         variables=("u",))
    result = invoke("score", calibrated, "--truth", truth, "-q")
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_report_shows_the_warnings_above_the_table(tmp_path):
    ens, truth = scaled_spread_case(tmp_path, 4.0)
    result = invoke("report", ens, "--truth", truth, "--out", tmp_path / "report", "-q")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "index.html").read_text()
    for kind in ("over-dispersed", "noisy small scales", "worse than regression"):
        assert f"<b>u, corrdiff</b>: {kind}:" in page, kind
    assert page.index("<h2>Trust: ") < page.index("<table class='scores'>")
    assert page.count("class='flag'") >= 3  # spread/skill, power, fair CRPS cells


def tune_result(calibrated_spread_skill=None):
    """A `corrdiff tune` result of two settings and two channels: setting 0 (recommended) has u10
    under-dispersed, setting 1 noisy t2m; with `calibrated_spread_skill`, the scores after calibration."""
    from types import SimpleNamespace

    per_channel = {"spread_skill": [[1.0, 0.6], [1.0, 1.0]], "power_ratio": [[1.0, 1.0], [4.0, 1.0]],
                   "lsd": [[0.1, 0.1], [0.1, 0.1]]}
    data = {k: (("setting", "channel"), v) for k, v in per_channel.items()}
    for k, v in {"crps_norm": [0.2, 0.21], "crps_fair_norm": [0.19, 0.2], "crps_fair_norm_diff_low": [0.0, 0.005],
                 "crps_fair_norm_diff_high": [0.0, 0.015], "crps_fair_norm_low": [0.18, 0.19],
                 "crps_fair_norm_high": [0.2, 0.21], "recommended": [True, False], "mae_norm": [0.3, 0.3], "spread_skill_mean": [0.8, 1.0],
                 "power_ratio_mean": [1.0, 2.5], "lsd_mean": [0.1, 0.1], "seconds_per_member": [1.0, 2.0]}.items():
        data[k] = (("setting",), v)
    if calibrated_spread_skill is not None:
        for k in per_channel:
            data[f"{k}_after"] = (("channel",), per_channel[k][0])
        data["spread_skill_after"] = (("channel",), calibrated_spread_skill)
    coords = {"channel": ["t2m", "u10"], "solver": ("setting", ["heun", "heun"]),
              "schedule": ("setting", ["karras"] * 2), "S_churn": ("setting", [0.0, 0.0]),
              "sigma_min": ("setting", [0.002] * 2), "num_steps": ("setting", [4, 8]),
              "network_evaluations": ("setting", [7, 15])}
    table = xr.Dataset(data, coords, attrs={"split": "validation", "times": 2, "members": 3,
                                                  "best": 0, "bootstrap_level": 0.9, "bootstrap_resamples": 1000})
    recommendation = SimpleNamespace(tuning={"setting": "heun NFE 7"})
    return SimpleNamespace(table=table, best=0, chosen=0, recommendation=recommendation)


def test_tune_table_has_a_trust_column_and_warns_of_the_recommended_setting():
    from rich.console import Console

    from corrdiff.cli.tune import print_warnings, rich_table

    console = Console(width=200, color_system=None, record=True)
    result = tune_result()
    console.print(rich_table(result))
    print_warnings(console, result)
    text = console.export_text()
    rows = [line for line in text.splitlines() if line.strip().startswith("heun")]
    assert rows[0].rstrip().endswith("under") and rows[1].rstrip().endswith("noisy")
    assert "warning: u10, recommended heun NFE 7: under-dispersed: the spread is 0.60×" in text
    assert text.count("warning:") == 1

    console = Console(width=200, color_system=None, record=True)
    print_warnings(console, tune_result(calibrated_spread_skill=[1.0, 0.95]))  # calibration fixed it
    assert "warning" not in console.export_text()


def test_tune_flags_a_setting_whose_fair_crps_is_worse_than_the_regression_means_mae():
    from corrdiff.evaluation.trust import setting_flags

    table = tune_result().table
    table["crps_fair"] = (("setting", "channel"), [[0.5, 0.9], [0.5, 0.5]])
    assert not [f for f in setting_flags(table, 0) if f.kind == "worse than regression"]  # no reference: not judged
    table = table.assign_coords(regression_mae=("channel", [0.8, 0.8]))
    worse = [f for f in setting_flags(table, 0) if f.kind == "worse than regression"]
    assert [f.variable for f in worse] == ["u10"] and "0.9" in worse[0].message
    assert not [f for f in setting_flags(table, 1) if f.kind == "worse than regression"]
