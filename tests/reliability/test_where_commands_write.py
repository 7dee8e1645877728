"""Where a command may write (`corrdiff.output_paths`) and when (`corrdiff.locks`), provoked through the real CLI.

1. No command writes over what it reads: an output that is, lies inside or holds an input is refused with one line,
   whatever the flags, for every command that writes (generate, export, import physicsnemo, tune, experiment,
   score, report, case, data stats) and every kind of input (checkpoint folder, run folder, model package, Zarr
   store, data file, spec, run config), named directly, through a symbolically linked folder or by a hard link.
2. One run at a time into one output: a second generate, tune, experiment or export into an output that another
   process is writing is refused, naming that process's PID; a lock left by a process that is gone is taken over
   with a warning; two generations started together into one --out leave one ensemble, the winner's.
"""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
import yaml

from corrdiff import locks
from tests.api_fixtures import trained  # noqa: F401  (the session's tiny trained run)
from tests.cli_runner import invoke, refused, succeeded
from tests.data import fixtures
from tests.evaluation import evaluation_fixtures as fx

REPO_ROOT = Path(__file__).resolve().parents[2]
NEVER = "this command never writes over its own inputs"


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def checkpoint_folder(folder: Path, kind: str = "diffusion") -> Path:
    root = folder / "run" / kind / "checkpoints"
    return root / (root / "latest").read_text().strip()


@pytest.fixture(scope="module")
def world(trained, tmp_path_factory):  # noqa: F811
    """The trained run, its model package, the same data as Zarr stores with a run config reading them, and a
    Zarr ensemble with its truth: {"folder", "config", "package", "zarr_data", "zarr_config", "ensemble", "truth"}."""
    folder, config = trained
    root = tmp_path_factory.mktemp("where")
    package = root / "model"
    succeeded(invoke("export", folder / "run", "--config", config, "--out", package))
    zarr_spec = fixtures.write_generic(root / "zdata", fmt="zarr")
    zarr_config = root / "zconfig.yaml"
    zarr_config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "data": str(zarr_spec),
                                           "run_dir": str(folder / "run")}))
    truth, ensemble, regression = fx.case(times=2, members=2, shape=(8, 8), variables=("u", "v"))
    return {"folder": folder, "config": config, "package": package, "zarr_data": root / "zdata",
            "zarr_config": zarr_config, "ensemble": fx.write_ensemble(root / "ens.zarr", ensemble, regression, fmt="zarr"),
            "truth": fx.write_truth(root / "truth.nc", truth)}


def symlink(target: Path, link: Path) -> Path:
    os.symlink(target, link)
    return link


def hard_link(target: Path, link: Path) -> Path:
    os.link(target, link)
    return link


def assert_refused(result, out, phrase: str, victim: Path | None = None, before: str | None = None) -> str:
    line = refused(result)
    assert f"--out {out} {phrase}" in line and NEVER in line, line
    if victim is not None:
        assert digest(victim) == before
    return line


# --- 1. never over an input ----------------------------------------------------------------------------------
# (case id, [command line after `generate` but --out], out, phrase): `w` is the world, `t` the test's folder.
GENERATE_CASES = [
    ("checkpoint model.json", lambda w, t: checkpoint_folder(w["folder"]) / "model.json",
     [], "is inside the diffusion checkpoint"),
    ("checkpoint state.json", lambda w, t: checkpoint_folder(w["folder"]) / "state.json",
     [], "is inside the diffusion checkpoint"),
    ("run folder", lambda w, t: w["folder"] / "run" / "regression" / "ens.nc", [], "is inside the regression checkpoint"),
    ("symlinked checkpoint folder", lambda w, t: symlink(checkpoint_folder(w["folder"]), t / "ck") / "model.json",
     [], "is inside the diffusion checkpoint"),
    ("hard link into a checkpoint", lambda w, t: hard_link(checkpoint_folder(w["folder"]) / "model.json", t / "m.json"),
     [], "is a hard link into the diffusion checkpoint"),
    ("symlinked data folder", lambda w, t: symlink(w["folder"] / "data", t / "data") / "coarse.nc",
     [], "is a file of the spec's inputs"),
    ("hard link to the spec", lambda w, t: hard_link(w["folder"] / "data" / "spec.yaml", t / "s.yaml"),
     [], "is the dataset spec"),
    ("hard link to the run config", lambda w, t: hard_link(w["config"], t / "c.yaml"), [], "is the run config"),
    ("Zarr store", lambda w, t: w["zarr_data"] / "coarse.zarr" / "ens.nc",
     ["--input", "{zarr_data}/coarse.zarr"], "is inside an --input file"),
]


@pytest.mark.parametrize("case", GENERATE_CASES, ids=[c[0] for c in GENERATE_CASES])
def test_generate_never_writes_over_what_it_reads(world, tmp_path, case):
    _, make_out, options, phrase = case
    out = make_out(world, tmp_path)
    before = digest(out) if out.is_file() else None
    options = [o.format(**world) for o in options]
    result = invoke("generate", world["config"], "--out", out, "--overwrite", "--quiet", *options)
    assert_refused(result, out, phrase, out if before else None, before)


def test_generate_never_replaces_a_folder_that_holds_its_data(world):
    out = world["folder"] / "data"
    assert_refused(invoke("generate", world["config"], "--out", out, "--quiet"), out, "holds the dataset spec")


@pytest.mark.parametrize("how", ["in the package", "through a symlinked folder", "by a hard link"])
def test_generate_with_a_model_package_never_writes_over_it(world, tmp_path, how):
    package = world["package"]
    out = {"in the package": package / "model.json",
           "through a symlinked folder": tmp_path / "link" / "fields.safetensors",
           "by a hard link": tmp_path / "model.json"}[how]
    if how == "through a symlinked folder":
        symlink(package, tmp_path / "link")
    elif how == "by a hard link":
        hard_link(package / "model.json", out)
    before = digest(out)
    result = invoke("generate", "--model", package, "--input", world["folder"] / "data" / "coarse.nc", "--out", out,
                    "--overwrite", "--quiet")
    phrase = "is a hard link into the model package" if how == "by a hard link" else \
        "is inside the model package"
    assert_refused(result, out, phrase, out, before)


def test_export_never_writes_over_what_it_reads(world, tmp_path):
    folder = world["folder"]
    out = folder / "run" / "diffusion" / "model"
    assert_refused(invoke("export", folder / "run", "--out", out), out, "is inside the diffusion checkpoint")
    assert_refused(invoke("export", folder / "run", "--out", folder), folder, "holds the regression checkpoint")
    out = world["zarr_data"] / "static.zarr" / "model"
    assert_refused(invoke("export", folder / "run", "--config", world["zarr_config"], "--out", out), out,
                   "is inside a file of the spec's static fields")
    out = symlink(folder / "run" / "regression", tmp_path / "link") / "pn"
    assert_refused(invoke("export", folder / "run", "--format", "physicsnemo", "--out", out), out,
                   "is inside the regression checkpoint")
    assert not (folder / "run" / "regression" / "pn").exists() and not (folder / "run" / "diffusion" / "model").exists()


def test_import_never_writes_over_what_it_reads(tmp_path):
    package = tmp_path / "e2s"
    package.mkdir()
    out = symlink(package, tmp_path / "link") / "run"
    assert_refused(invoke("import", "physicsnemo", "--package", package, "--out", out), out, "is inside the package")
    stats = tmp_path / "stats.json"
    stats.write_text("{}")
    out = hard_link(stats, tmp_path / "run")
    assert_refused(invoke("import", "physicsnemo", "--regression", tmp_path / "r.mdlus", "--stats", stats, "--grid",
                          tmp_path / "grid.nc", "--out", out), out, "is the statistics file", stats, digest(stats))


def test_tune_never_writes_over_what_it_reads(world, tmp_path):
    folder, tune = world["folder"], ["--solver", "euler", "--nfe", "3", "--times", "1", "--members", "2", "--quiet"]
    out = folder / "run" / "diffusion" / "tune"
    assert_refused(invoke("tune", world["config"], "--out", out, *tune), out, "is inside the diffusion checkpoint")
    out = folder / "data"
    assert_refused(invoke("tune", world["config"], "--out", out, *tune), out, "holds the dataset spec")
    out = symlink(world["zarr_data"] / "fine.zarr", tmp_path / "link") / "tune"
    assert_refused(invoke("tune", world["zarr_config"], "--out", out, *tune), out,
                   "is inside a file of the spec's targets")


def test_experiment_never_writes_over_what_it_reads(world, tmp_path):
    experiment = lambda config, out: invoke("experiment", "data-size", config, "--fractions", "1", "--out", out, "-q")
    out = world["zarr_data"] / "fine.zarr" / "experiment"
    assert_refused(experiment(world["zarr_config"], out), out, "is inside a file of the spec's targets")
    out = symlink(world["folder"] / "data", tmp_path / "link")
    assert_refused(experiment(world["config"], out), out, "holds the dataset spec")
    assert not (world["folder"] / "data" / "experiment.json").exists()


def test_score_report_and_case_never_write_inside_an_input_store(world, tmp_path):
    ensemble, truth = world["ensemble"], world["truth"]
    link = symlink(ensemble, tmp_path / "link")
    out = link / "scores.nc"
    assert_refused(invoke("score", ensemble, "--truth", truth, "--out", out, "-q"), out, "is inside the predictions")
    out = link / "report" / "scores.nc"
    assert_refused(invoke("report", ensemble, "--truth", truth, "--out", link / "report", "-q"), out,
                   "is inside the predictions")
    out = ensemble / "case" / "case.nc"
    assert_refused(invoke("case", ensemble, "--truth", truth, "--vortex", "--out", ensemble / "case"), out,
                   "is inside the predictions")
    out = world["zarr_data"] / "fine.zarr" / "scores.nc"
    assert_refused(invoke("score", ensemble, "--truth", world["zarr_data"] / "spec.yaml", "--out", out, "-q"), out,
                   "is inside a store of the truth spec")
    assert not any((ensemble / name).exists() for name in ("scores.nc", "report", "case"))


@pytest.mark.parametrize("stats, phrase", [("fine.zarr/stats.json", "is inside a file of the dataset spec"),
                                           ("alias.json", "is a hard link into a file of the dataset spec")])
def test_data_stats_never_writes_into_a_zarr_store_of_its_spec(tmp_path, stats, phrase):
    spec = fixtures.write_generic(tmp_path / "data", fmt="zarr", stats=stats)
    if stats == "alias.json":  # a file that is also a chunk of the coarse store
        chunk = next(p for p in (tmp_path / "data" / "coarse.zarr").rglob("*") if p.is_file())
        hard_link(chunk, tmp_path / "data" / "alias.json")
    line = refused(invoke("data", "stats", spec, "--overwrite", "-q"))
    assert f"the spec's `stats` file {tmp_path / 'data' / stats} {phrase}" in line and NEVER in line


# --- 2. one run at a time into one output ----------------------------------------------------------------------
def assert_busy(result, out) -> None:
    line = refused(result)
    assert f"{out} is being written by PID {os.getpid()} on " in line and "wait for that run to end" in line, line


def test_a_second_generation_into_the_same_out_is_refused_naming_the_first(world, tmp_path):
    out = tmp_path / "e.nc"
    with locks.for_output(out):  # held by this process, as a first generation holds it
        assert_busy(invoke("generate", world["config"], "--out", out, "--quiet"), out)
    assert not out.exists()


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(world, tmp_path):
    out = tmp_path / "e.nc"
    locks.lock_file_of(out).write_text("PID 4199999 on a-node-that-rebooted\n")  # no process holds it
    result = succeeded(invoke("generate", world["config"], "--out", out, "--quiet", "--times", "2021-01-02T03:00:00"))
    assert "taking over the lock of PID 4199999 on a-node-that-rebooted" in result.output
    assert out.exists() and not locks.lock_file_of(out).exists()


def test_tune_experiment_and_export_into_an_output_being_written_are_refused(world, tmp_path):
    folder, config = world["folder"], world["config"]
    commands = {
        "tune": ["tune", config, "--solver", "euler", "--nfe", "3", "--times", "1", "--members", "2", "--quiet"],
        "experiment": ["experiment", "data-size", config, "--fractions", "1", "--quiet"],
        "export": ["export", folder / "run", "--config", config]}
    for name, command in commands.items():
        out = tmp_path / name
        with locks.for_output(out):
            assert_busy(invoke(*command, "--out", out), out)
        assert not out.exists() or not any(out.iterdir())


def start_generate(config: Path, out: Path, seed: int) -> subprocess.Popen:
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "corrdiff", "generate", str(config), "--out", str(out), "--seed",
                             str(seed), "--members", "8", "--set", "sampler.num_steps=8", "--split", "all", "--quiet"],
                            cwd=out.parent, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # two processes of their own, ~20 s on 2 cores
def test_two_generations_started_together_into_one_out_leave_the_winners_ensemble(world, tmp_path):
    out = tmp_path / "e.nc"
    first = start_generate(world["config"], out, seed=1)
    time.sleep(0.5)
    second = start_generate(world["config"], out, seed=2)
    outputs = {seed: process.communicate(timeout=300)[0] for seed, process in ((1, first), (2, second))}
    codes = {1: first.returncode, 2: second.returncode}
    assert sorted(codes.values()) == [0, 2], outputs
    winner = next(seed for seed, code in codes.items() if code == 0)
    loser, pid = (2, first.pid) if winner == 1 else (1, second.pid)
    errors = [line for line in outputs[loser].splitlines() if line.startswith("error: ")]
    # Refused by the lock while the winner writes, or (had it finished first) by the file's other seed.
    assert len(errors) == 1 and "Traceback" not in outputs[loser], outputs[loser]
    assert f"is being written by PID {pid} on " in errors[0] or "seed" in errors[0], errors[0]
    with xr.open_dataset(out) as ds:
        assert int(ds.attrs["corrdiff_seed"]) == winner and bool(ds["generation_complete"].all())
    assert not locks.lock_file_of(out).exists()
