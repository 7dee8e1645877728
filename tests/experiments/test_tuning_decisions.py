"""tune decides with the fair CRPS and its bootstrap over times; it refuses the test split unless asked, and
generate warns when it generates the split its sampler was tuned on."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from corrdiff import sampler_file
from corrdiff.config import RunConfig
from corrdiff.diffusion.sampler import SamplerConfig
from corrdiff.evaluation.metrics import SUMS
from corrdiff.inference.generate import with_tuned_sampler
from corrdiff.experiments.tuning import build_table, Scores, Truth
from corrdiff.experiments.tuning_rule import choose
from tests.cli_runner import invoke, refused

MEMBERS = 4


def settings(*nfe: int) -> list[SamplerConfig]:
    """One Euler setting per NFE: only the cost tells them apart in `choose`."""
    return [SamplerConfig(solver="euler", num_steps=n) for n in nfe]


def gaussian_scores(truth: np.ndarray, mean: np.ndarray, spread: float, seed: int) -> Scores:
    """Members μ + spread·N(0, 1) against truth (time, 1, H, W)."""
    rng = np.random.default_rng(seed)
    scores = Scores(1, MEMBERS, truth.shape[2:])
    for t in range(truth.shape[0]):
        scores.add(mean[t][None] + spread * rng.normal(size=(MEMBERS,) + truth.shape[1:]), truth[t], t)
    return scores


def truth_of(values: np.ndarray) -> Truth:
    times = np.arange(len(values)).astype("datetime64[h]").astype("datetime64[ns]")
    return Truth(times, [], values, [0] * len(values), np.nanstd(values, axis=(0, 2, 3)))


def test_the_fair_crps_recommends_the_calibrated_setting_where_the_usual_one_prefers_the_narrow_one():
    """Truth μ + N(0, 1); a cheap setting's members μ + N(0, ½²) (spread half the error), a dear one's
    μ + N(0, 1). With 4 members the usual CRPS is lower for the narrow one (expected 0.681 against 0.705),
    the fair CRPS for the calibrated one (0.564 against 0.610): tune recommends the calibrated one."""
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(6, 1, 32, 32))
    truth = mean + rng.normal(size=mean.shape)
    results = [gaussian_scores(truth, mean, 0.5, 1), gaussian_scores(truth, mean, 1.0, 2)]
    table = build_table(settings(5, 35), results, [0.1, 0.7], truth_of(truth), ["u"], resamples=200)
    assert table["crps_norm"][0] < table["crps_norm"][1]  # the usual CRPS would take the narrow, cheaper one
    assert table["crps_fair_norm"][1] < 0.95 * table["crps_fair_norm"][0]
    assert float(table["crps_fair_norm_diff_low"][0]) > 0  # distinguishable over the 6 times
    assert table["spread_skill_mean"][0] < 0.6 and abs(float(table["spread_skill_mean"][1]) - 1) < 0.05
    assert choose(table, 0.01) == 1
    # A tolerance wider than the gap takes the cheap one again, unless its too-weak residual fails the texture rule
    assert choose(table, 0.10, lsd_tolerance=None) == 0 and choose(table, 0.10) == 1


def per_time_scores(fair_crps: np.ndarray) -> Scores:
    """Scores whose per-time fair CRPS is `fair_crps` (time,) on one pixel; the other sums consistent and flat."""
    sums = np.zeros((len(fair_crps), 1, 13 + MEMBERS + 1))
    sums[:, 0, [SUMS.index(k) for k in ("count", "squared_error", "variance", "abs_error")]] = 1.0
    sums[:, 0, SUMS.index("crps")] = fair_crps
    sums[:, 0, SUMS.index("crps_fair")] = fair_crps
    flat = np.ones((len(fair_crps), 1, 5))
    return Scores.from_arrays(MEMBERS, np.linspace(0, 0.5, 5), sums, flat, flat)


def table_of(fair_crps: list[np.ndarray], nfe: list[int], resamples: int = 500):
    times = len(fair_crps[0])
    truth = Truth(np.arange(times).astype("datetime64[ns]"), [], np.zeros((times, 1, 2, 2)), [0] * times, np.ones(1))
    return build_table(settings(*nfe), [per_time_scores(c) for c in fair_crps], [0.0] * len(nfe), truth, ["u"],
                       resamples=resamples)


def test_the_bootstrap_is_paired_over_the_same_resampled_times():
    """Times differ far more than settings do. A setting worse by 0.02 at every time has overlapping intervals
    but a paired difference of exactly 0.02; one better on half the times has an interval around 0."""
    base = np.linspace(0.5, 1.5, 8)
    worse = base + 0.02
    mixed = base + np.tile([0.05, -0.04], 4)
    table = table_of([base, worse, mixed], [35, 5, 7])
    assert int(table.attrs["best"]) == 0
    assert table["crps_fair_norm_low"][1] < table["crps_fair_norm_high"][0]  # the intervals overlap
    np.testing.assert_allclose(table["crps_fair_norm_diff_low"][1], 0.02, atol=1e-12)
    np.testing.assert_allclose(table["crps_fair_norm_diff_high"][1], 0.02, atol=1e-12)
    assert table["crps_fair_norm_diff_low"][2] < 0 < table["crps_fair_norm_diff_high"][2]
    assert table["crps_fair_norm_diff_low"][0] == table["crps_fair_norm_diff_high"][0] == 0
    low, high = table["crps_fair_norm_low"][0], table["crps_fair_norm_high"][0]
    assert low < base.mean() < high and high - low > 0.2  # 90% of the resampled means of 8 spread-out times
    again = table_of([base, worse, mixed], [35, 5, 7])
    assert float(again["crps_fair_norm_low"][0]) == float(low)  # seeded


def test_settings_the_times_cannot_tell_apart_are_not_called_different():
    """Setting 2 is 0.5% worse on average, beyond a tolerance of 0.1%, but better at half the times: the times
    cannot tell it from the best, so the cheapest of the two is recommended. Setting 1, 2% worse at every
    time, is told apart and not taken however cheap."""
    base = np.linspace(0.5, 1.5, 8)
    table = table_of([base, base + 0.02, base + np.tile([0.05, -0.04], 4)], [35, 5, 7])
    assert choose(table, 0.001) == 2
    del table["crps_fair_norm_diff_low"], table["crps_fair_norm_diff_high"]
    assert choose(table, 0.001) == 0  # the tolerance alone


def test_the_table_labels_the_usual_and_the_fair_crps():
    from rich.console import Console

    from corrdiff.cli.tune import rich_table

    base = np.linspace(0.5, 1.5, 8)
    table = table_of([base, base + 0.02], [35, 5])
    table.attrs.update(split="validation", times=8, members=MEMBERS)
    console = Console(width=250, color_system=None, record=True)
    console.print(rich_table(SimpleNamespace(table=table, best=0, chosen=0)))
    text = console.export_text()
    assert "CRPS (usual), fair CRPS" in text and "fair vs best" in text and "% [90%]" in text
    dear, cheap = (next(line for line in text.splitlines() if line.split()[:3] == ["euler", steps, steps])
                   for steps in ("35", "5"))
    assert f" {base.mean():.4f}* " in dear and "+0.00 [+0.00, +0.00]" in dear
    assert f"+{2 / base.mean():.2f} [+{2 / base.mean():.2f}, +{2 / base.mean():.2f}]" in cheap


# ---- which split ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["test", "all"])
def test_tune_refuses_the_test_split_unless_asked(tmp_path, split):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": "spec.yaml", "run_dir": "run"}))
    line = refused(invoke("tune", config, "--split", split, "--quiet"))
    assert f"--split {split} holds the test times" in line and "--allow-test-split" in line
    assert not (tmp_path / "run").exists()


def write_recommendation(run_dir, tuning: dict):
    tuned = SamplerConfig(solver="dpmpp_2m", num_steps=7)
    sampler_file.write(sampler_file.path_in(run_dir), sampler_file.Recommendation(tuned, "abc", ("u",), tuning))
    return tuned


def test_a_sampler_file_records_its_split_and_an_older_one_without_it_loads(tmp_path):
    write_recommendation(tmp_path, {"split": "test"})
    recommendation = sampler_file.read(sampler_file.path_in(tmp_path))
    assert recommendation.split == "test" and recommendation.tuned_on("test") and recommendation.tuned_on("all")
    assert not recommendation.tuned_on("validation")
    path = sampler_file.path_in(tmp_path)
    body = yaml.safe_load(path.read_text())
    del body["tuning"]  # as written before tune recorded how it chose
    path.write_text(yaml.safe_dump(body))
    old = sampler_file.read(path)
    assert old.split is None and not old.tuned_on("test") and old.sampler.num_steps == 7


@pytest.mark.parametrize("tuned_on, generating, warns", [("test", "test", True), ("validation", "test", False),
                                                         ("all", "validation", True), ("validation", None, False),
                                                         (None, "test", False)])
def test_generate_warns_when_its_sampler_was_tuned_on_the_split_it_generates(tmp_path, caplog, tuned_on,
                                                                              generating, warns):
    tuned = write_recommendation(tmp_path, {} if tuned_on is None else {"split": tuned_on})
    config = RunConfig.model_validate({"data": "spec.yaml", "run_dir": str(tmp_path)})
    models = SimpleNamespace(provenance={"diffusion_checkpoint_sha256": "abc"})
    with caplog.at_level(logging.INFO, logger="corrdiff"):
        assert with_tuned_sampler(config, models, generating).sampler == tuned
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == (1 if warns else 0)
    if warns:
        assert f"tuned on the {tuned_on} split and this generates the {generating} split" in warnings[0]
        assert "\n" not in warnings[0]


def test_regression_mae_is_the_mean_absolute_error_of_the_regression_mean_per_channel():
    from types import SimpleNamespace

    import torch

    from corrdiff.experiments.tuning import regression_mae, Truth
    from tests.training.synthetic import identity_stats

    conditions = [torch.full((1, 2, 4, 4), float(k)) for k in range(3)]  # μ = the inputs: 0, 1, 2 everywhere
    truth = np.stack([np.stack([np.full((4, 4), 1.0), np.full((4, 4), -1.0)]) for _ in range(3)])
    models = SimpleNamespace(regression=lambda x: x, meta=SimpleNamespace(stats=identity_stats(["a", "b"],
                                                                                                  ["a", "b"])))
    mae = regression_mae(models, Truth(np.arange(3), conditions, truth.astype(np.float32), [0, 1, 2], np.ones(2)))
    np.testing.assert_allclose(mae, [(1 + 0 + 1) / 3, (1 + 2 + 3) / 3])
