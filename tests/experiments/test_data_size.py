"""`corrdiff experiment data-size` on the tiny generic fixture: 9 training times, two steps per training."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr
import yaml

from corrdiff import checkpoint as ckpt
from corrdiff.data import DownscalingDataset, load_spec, Normalization, PairedFields
from corrdiff.errors import ConfigError
from corrdiff.experiments import data_size, parse_fractions
from tests.api_fixtures import CONFIG
from tests.cli_runner import invoke, refused, succeeded
from tests.data import fixtures

FRACTIONS = [0.25, 0.5, 1.0]
EXPECTED_SAMPLES = [3, 5, 9]  # ⌈f·9⌉ of the fixture's 9 training times


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """(folder, config, out, the full train times): the experiment run once on three fractions."""
    folder = tmp_path_factory.mktemp("data-size")
    spec = fixtures.write_generic(folder / "data", splits={  # the fixture's, with a validation split (best-crps)
        "train": {"start": "2021-01-01T00", "end": "2021-01-02T02"},
        "validation": {"start": "2021-01-02T03", "end": "2021-01-02T06"},
        "test": {"start": "2021-01-02T03", "end": "2021-01-02T21"}})
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = folder / "out"
    result = succeeded(invoke("experiment", "data-size", config, "--fractions", *FRACTIONS, "--out", out,
                              "--times", 2, "--quiet"))
    assert "fraction 3/3 (1: 9 training times)" in result.output
    return folder, config, out, PairedFields(load_spec(spec)).times("train")


def test_fractions_are_nested_contiguous_prefixes_of_the_train_split(experiment):
    _, _, out, all_train = experiment
    seen = []
    for fraction, count in zip(FRACTIONS, EXPECTED_SAMPLES):
        times = DownscalingDataset(out / f"fraction-{fraction:g}" / "spec.yaml", split="train").times
        np.testing.assert_array_equal(times, all_train[:count])
        seen.append(set(times.tolist()))
    assert seen[0] < seen[1] < seen[2]


def test_each_run_saw_only_its_times(experiment):
    """The statistics a fraction's checkpoints carry are the targets' mean and std over its times alone."""
    folder, _, out, all_train = experiment
    fine = xr.open_dataset(folder / "data" / "fine.nc")
    for fraction, count in zip(FRACTIONS, EXPECTED_SAMPLES):
        truth = fine["t2m"].sel(time=all_train[:count]).values.astype(np.float64)
        run = out / f"fraction-{fraction:g}" / "run"
        for kind in ("regression", "diffusion"):
            meta = ckpt.load_model(ckpt.resolve(run / kind / "checkpoints", "latest"), kind=kind).meta
            t2m = meta.stats.target.names.index("t2m")
            assert meta.stats.target.mean[t2m] == pytest.approx(truth.mean(), rel=1e-6)
            assert meta.stats.target.std[t2m] == pytest.approx(truth.std(ddof=1), rel=1e-6)  # the sample std
        saved = Normalization.load(out / f"fraction-{fraction:g}" / "stats.json")
        assert saved.target.mean[0] == pytest.approx(truth.mean(), rel=1e-6)
    # the fixture's t2m warms by 1 K per time step: a smaller fraction has a lower mean
    means = [Normalization.load(out / f"fraction-{f:g}" / "stats.json").target.mean[0] for f in FRACTIONS]
    assert means[0] < means[1] < means[2]


def test_every_fraction_trained_the_same_steps_and_scored_the_same_times(experiment):
    _, _, out, _ = experiment
    times = []
    for fraction in FRACTIONS:
        folder = out / f"fraction-{fraction:g}"
        for kind in ("regression", "diffusion"):
            latest = ckpt.load_model(ckpt.resolve(folder / "run" / kind / "checkpoints", "latest"), kind=kind)
            assert latest.meta.step == CONFIG[kind]["steps"]
        with xr.open_dataset(folder / "ensemble.nc") as ensemble:
            times.append(ensemble["time"].values)
    assert len(times[0]) == 2
    for other in times[1:]:
        np.testing.assert_array_equal(other, times[0])


def test_table_has_one_row_per_fraction_model_variable_and_matches_the_scores(experiment):
    _, _, out, _ = experiment
    table = xr.open_dataset(out / "data_size.nc")
    assert table["crps"].dims == ("fraction", "model", "variable")
    assert list(table["fraction"].values) == FRACTIONS
    assert list(table["train_samples"].values) == EXPECTED_SAMPLES
    assert {"corrdiff", "regression"} <= set(table["model"].values)
    assert list(table["variable"].values) == ["t2m", "u10", "refl"]
    rows = (out / "data_size.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) - 1 == table["crps"].size
    for fraction in FRACTIONS:
        with xr.open_dataset(out / f"fraction-{fraction:g}" / "scores.nc") as scores:
            for model in ("corrdiff", "regression"):
                for variable in ("t2m", "refl"):
                    for metric in ("crps", "mae"):
                        expected = float(scores[metric].sel(model=model, variable=variable))
                        assert float(table[metric].sel(fraction=fraction, model=model, variable=variable)) == \
                            pytest.approx(expected)
                        row = next(r.split(",") for r in rows[1:]
                                   if r.startswith(f"{fraction:g},") and f",{model},{variable}," in r)
                        assert float(row[header.index(metric)]) == pytest.approx(expected, rel=1e-5)
    assert (out / "data_size.png").stat().st_size > 1000


def test_rerun_skips_done_fractions(experiment, monkeypatch):
    _, config, out, _ = experiment
    before = (out / "fraction-0.5" / "scores.nc").stat().st_mtime_ns

    def must_not_train(*args, **kwargs):
        raise AssertionError("a done fraction was trained again")

    monkeypatch.setattr(data_size, "train", must_not_train)
    monkeypatch.setattr(data_size, "generate", must_not_train)
    result = succeeded(invoke("experiment", "data-size", config, "--fractions", "0.25,0.5", "1", "--out", out,
                              "--times", 2, "--quiet"))
    assert result.output.count("done before, skipped") == 3
    assert (out / "fraction-0.5" / "scores.nc").stat().st_mtime_ns == before


def test_other_settings_or_a_foreign_folder_are_refused(experiment, tmp_path):
    _, config, out, _ = experiment
    line = refused(invoke("experiment", "data-size", config, "--fractions", "1", "--out", out, "--times", 2,
                          "--set", "regression.steps=3"))
    assert "other settings" in line and str(out) in line
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    line = refused(invoke("experiment", "data-size", config, "--fractions", "1", "--out", foreign))
    assert "not empty" in line and (foreign / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("values, words", [
    (["0", "0.5"], "not in (0, 1]"),
    (["0.5", "1.5"], "not in (0, 1]"),
    (["0.5", "0.25"], "strictly increasing"),
    (["0.5", "0.5"], "strictly increasing"),
    (["half"], "not a number"),
])
def test_bad_fractions_are_one_line_errors(experiment, tmp_path, values, words):
    _, config, _, _ = experiment
    line = refused(invoke("experiment", "data-size", config, "--fractions", *values, "--out", tmp_path / "x"))
    assert words in line
    assert not (tmp_path / "x").exists()


def test_fractions_too_close_for_the_data_are_refused():
    assert parse_fractions(["0.125,0.25", 1]) == [0.125, 0.25, 1.0]
    assert data_size.samples_of([0.125, 0.25, 1.0], 9, "spec") == [2, 3, 9]
    with pytest.raises(ConfigError, match="both keep 2 of the 9"):
        data_size.samples_of([0.15, 0.2], 9, "spec")
    with pytest.raises(ConfigError, match="at least one"):
        parse_fractions([])


def test_each_fraction_is_scored_at_its_best_checkpoints_and_says_which(experiment):
    _, _, out, _ = experiment
    table = xr.open_dataset(out / "data_size.nc")
    rows = (out / "data_size.csv").read_text().splitlines()
    header = rows[0].split(",")
    for fraction in FRACTIONS:
        folder = out / f"fraction-{fraction:g}"
        scored = json.loads((folder / "done.json").read_text())["scored"]
        diffusion = folder / "run" / "diffusion" / "checkpoints"
        assert scored["diffusion"]["pointer"] == "best-crps"  # the sample check ran at the last step
        assert scored["diffusion"]["path"] == str(diffusion / ckpt.read_pointer(diffusion, "best-crps"))
        assert scored["regression"]["pointer"] == "best"
        with xr.open_dataset(folder / "ensemble.nc") as ensemble:
            assert ensemble.attrs["diffusion_checkpoint"] == scored["diffusion"]["path"]
        assert str(table["diffusion_checkpoint"].sel(fraction=fraction).values) == "best-crps"
        assert int(table["diffusion_step"].sel(fraction=fraction)) == scored["diffusion"]["step"] == 2
        row = next(r.split(",") for r in rows[1:] if r.startswith(f"{fraction:g},"))
        assert row[header.index("diffusion_checkpoint")] == "best-crps" and row[header.index("order")] == "contiguous"


def test_the_scored_checkpoint_is_the_best_not_the_last(experiment, tmp_path):
    """On a run whose best-crps is an earlier step than latest: best-crps; without it, best (by loss)."""
    _, _, out, _ = experiment
    trained = out / "fraction-1" / "run" / "diffusion" / "checkpoints"
    root = tmp_path / "run" / "diffusion" / "checkpoints"
    shutil.copytree(trained / "step-000002", root / "step-000002")
    shutil.copytree(trained / "step-000002", root / "step-000004")
    for pointer, name in (("latest", "step-000004"), ("best", "step-000004"), ("best-crps", "step-000002")):
        ckpt.set_pointer(root, pointer, name)
    scored = data_size.scored_checkpoint(tmp_path / "run", "diffusion")
    assert (scored["pointer"], scored["path"]) == ("best-crps", str(root / "step-000002"))
    (root / "best-crps").unlink()
    ckpt.set_pointer(root, "best", "step-000002")
    scored = data_size.scored_checkpoint(tmp_path / "run", "diffusion")
    assert (scored["pointer"], scored["path"]) == ("best", str(root / "step-000002"))


@pytest.mark.parametrize("total, count", [(9, 5), (9, 3), (1200, 300), (1200, 7), (10, 10)])
def test_spread_takes_times_over_the_whole_record_and_contiguous_a_block(total, count):
    record = np.datetime64("2000-01-01T00") + np.arange(total) * np.timedelta64(1, "h")
    spread = data_size.fraction_times(record, count, "spread")
    assert len(spread) == len(np.unique(spread)) == count and np.all(np.diff(spread) > np.timedelta64(0))
    picked = np.searchsorted(record, spread)  # indices into the record
    assert picked[0] == 0 and (total - 1) - picked[-1] < total / count  # the last within one step of the end
    assert np.all(np.diff(picked) <= np.ceil(total / count))  # and no gap wider than a step
    np.testing.assert_array_equal(data_size.fraction_times(record, count, "contiguous"), record[:count])
    with pytest.raises(ConfigError, match="--order must be one of contiguous, spread"):
        data_size.fraction_times(record, count, "random")


def test_a_spread_fraction_spec_reads_back_the_same_times(experiment, tmp_path):
    folder, _, _, all_train = experiment
    spec = data_size.fraction_spec(folder / "data" / "spec.yaml", all_train, 4, "spread", tmp_path / "f")
    read = PairedFields(load_spec(spec)).times("train")
    np.testing.assert_array_equal(read, data_size.fraction_times(all_train, 4, "spread"))
    assert read[0] == all_train[0] and read[-1] != all_train[3]  # not the first block


def test_order_spread_is_recorded_in_every_output(experiment, tmp_path):
    folder, config, _, all_train = experiment
    out = tmp_path / "spread"
    succeeded(invoke("experiment", "data-size", config, "--fractions", "0.5", "--order", "spread", "--out", out,
                     "--times", 1, "--quiet"))
    assert json.loads((out / "experiment.json").read_text())["order"] == "spread"
    done = json.loads((out / "fraction-0.5" / "done.json").read_text())
    picked = data_size.fraction_times(all_train, 5, "spread")
    assert done["order"] == "spread" and done["train_end"] == str(np.datetime64(picked[-1], "s"))
    times = DownscalingDataset(out / "fraction-0.5" / "spec.yaml", split="train").times
    np.testing.assert_array_equal(times, picked)
    assert str(xr.open_dataset(out / "data_size.nc")["order"].values[0]) == "spread"
    row = (out / "data_size.csv").read_text().splitlines()[1].split(",")
    assert row[2] == "spread"
    # The same --out with the other order is another experiment: refused, nothing overwritten.
    line = refused(invoke("experiment", "data-size", config, "--fractions", "0.5", "--out", out, "--times", 1))
    assert "other settings" in line and "--order (there: spread)" in line


def test_done_record_names_the_fraction_times(experiment):
    _, _, out, all_train = experiment
    done = json.loads((out / "fraction-0.25" / "done.json").read_text())
    assert done["train_samples"] == 3
    assert done["train_start"] == str(np.datetime64(all_train[0], "s"))
    assert done["train_end"] == str(np.datetime64(all_train[2], "s"))


def test_an_unfinished_fraction_is_completed_from_its_checkpoints(experiment, monkeypatch):
    """A fraction interrupted after training (no scores, no done.json) resumes its runs, scores the same."""
    _, config, out, _ = experiment
    folder = out / "fraction-1"
    with xr.open_dataset(folder / "scores.nc") as scores:
        crps = scores["crps"].load()
    saved = {kind: ckpt.resolve(folder / "run" / kind / "checkpoints", "latest").stat().st_mtime_ns
             for kind in ("regression", "diffusion")}
    (folder / "done.json").unlink()
    (folder / "scores.nc").unlink()
    trained, real_train = [], data_size.train

    def recorded_train(kind, config, **options):
        trained.append((kind, config.run_dir))
        return real_train(kind, config, **options)

    monkeypatch.setattr(data_size, "train", recorded_train)
    result = succeeded(invoke("experiment", "data-size", config, "--fractions", *FRACTIONS, "--out", out,
                              "--times", 2, "--quiet"))
    assert result.output.count("done before, skipped") == 2
    assert [kind for kind, _ in trained] == ["regression", "diffusion"]
    assert all(run_dir == str(folder / "run") for _, run_dir in trained)
    for kind in ("regression", "diffusion"):  # resumed at its last step: no step trained again, nothing saved
        latest = ckpt.resolve(folder / "run" / kind / "checkpoints", "latest")
        assert ckpt.load_model(latest, kind=kind).meta.step == CONFIG[kind]["steps"]
        assert latest.stat().st_mtime_ns == saved[kind]
    with xr.open_dataset(folder / "scores.nc") as scores:
        np.testing.assert_allclose(scores["crps"].values, crps.values)
