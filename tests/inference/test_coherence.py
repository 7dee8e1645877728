"""Members that are time series (`generate.coherence`, `corrdiff.inference.coherence`): with the exact denoiser of
Gaussian data and a deterministic solver, consecutive times correlate by rho, independent ones by 0; rho = 0 is
independent sampling bit for bit; a gap in time restarts the series and the file says where; a resumed file, a
model package, the API and torchrun ranks give the values of one uninterrupted `corrdiff generate`."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr

import corrdiff
from corrdiff.config import CoherenceSection, load_config
from corrdiff.diffusion.sampler import edm_sample, first_draws, SamplerConfig
from corrdiff.ensemble_file import SERIES_START, series_starts
from corrdiff.errors import ConfigError
from corrdiff.inference.coherence import check_sampler, SeriesLatents
from corrdiff.inference.generate import EnsembleOutput, generate, GenerationRequest, rank_positions
from corrdiff.inference.input_members import INPUT_MEMBER
from corrdiff.seeding import members_seed
from tests.api_fixtures import TIMES as API_TIMES, trained, model  # noqa: F401  (fixtures)
from tests.inference.crashes import crash_on_write
from tests.cli_runner import invoke, succeeded
from tests.data.fixtures import TIMES as DATA_TIMES
from tests.diffusion.test_sampler import gaussian_denoiser
from tests.inference.test_input_members import ensemble_of
from tests.training.run_synthetic import REPO_ROOT

SEED = 11
HOUR = np.timedelta64(1, "h")
T0 = np.datetime64("2021-01-01T00", "ns")


# ---- series and their starts -------------------------------------------------------------------------------------

@pytest.mark.parametrize("hours, starts", [
    ([0, 1, 2, 3], [1, 0, 0, 0]),
    ([0, 1, 2, 4, 5, 6], [1, 0, 0, 1, 0, 0]),  # a missing hour restarts the series
    ([0, 1, 2, 4, 6, 8], [1, 1, 1, 0, 0, 0]),  # one step for all: the most common (2 h); hourly times stand alone
    ([0, 6, 7, 8], [1, 1, 0, 0]),  # 0 → 6 is not the step (1 h): 6 starts the series
    ([0, 1, 3, 4, 6, 7], [1, 0, 1, 0, 1, 0]),  # a tie (1 h and 2 h twice each): the smaller step
    ([3, 2, 1], [1, 1, 1]),  # backwards in time: no series
    ([0], [1]),
    ([], []),
])
def test_a_series_is_a_run_of_times_with_a_constant_step(hours, starts):
    assert series_starts(T0 + np.array(hours, dtype=int) * HOUR).astype(int).tolist() == starts


def test_contiguous_blocks_of_times_cover_every_time_once():
    for times in range(0, 9):
        for world in (1, 2, 3, 4):
            blocks = [rank_positions(times, rank, world) for rank in range(world)]
            assert sum(blocks, []) == list(range(times))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


# ---- the analytic case: Gaussian data, its exact denoiser, a deterministic solver --------------------------------

MEMBERS, SHAPE = 64, (1, 8, 8)
SAMPLER = SamplerConfig(num_steps=8, sigma_max=80.0)


def samples(times, rho: float | None) -> torch.Tensor:
    """(time, member, 1, 8, 8) samples of N(M, S²) at `times`: independent (rho None) or AR(1) starting noise."""
    draw = lambda time: first_draws(SHAPE, range(MEMBERS), members_seed(SEED, time))  # noqa: E731
    series = None if rho is None else SeriesLatents(rho, times, draw)
    return torch.stack([edm_sample(gaussian_denoiser, SHAPE, range(MEMBERS), members_seed(SEED, time), SAMPLER,
                                   latents=None if series is None else series.at(i)) for i, time in enumerate(times)])


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two fields over members and pixels (4,096 independent pairs)."""
    return float(np.corrcoef(a.double().flatten().numpy(), b.double().flatten().numpy())[0, 1])


HOURS = T0 + np.arange(4) * HOUR


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_consecutive_times_correlate_by_rho(rho):
    series = samples(HOURS, rho)
    lag1 = [correlation(series[i], series[i + 1]) for i in range(len(HOURS) - 1)]
    # The ODE of Gaussian data is linear: a sample is M + c·z, so it correlates as the noise; sampling error of
    # 4,096 pairs ≈ (1 − rho²)/64 ≤ 0.012.
    assert all(abs(c - rho) < 0.05 for c in lag1), lag1
    assert abs(correlation(series[0], series[2]) - rho**2) < 0.06  # AR(1): rho² at lag 2
    # Standard normal noise at every time: the spread of independent samples (the same solver, the same error).
    assert all(abs(float(series[i].std() / samples(HOURS[i : i + 1], None).std()) - 1) < 0.05 for i in range(4))


def test_independent_members_do_not_correlate_and_rho_0_is_independent_bit_for_bit():
    independent = samples(HOURS, None)
    assert all(abs(correlation(independent[i], independent[i + 1])) < 0.06 for i in range(len(HOURS) - 1))
    assert torch.equal(samples(HOURS, 0.0), independent)


def test_a_rho_per_channel_gives_each_channel_its_own_correlation():
    shape = (2, 8, 8)
    draw = lambda time: first_draws(shape, range(MEMBERS), members_seed(SEED, time))  # noqa: E731
    series = SeriesLatents((0.3, 0.9), HOURS, draw)
    fields = torch.stack([edm_sample(gaussian_denoiser, shape, range(MEMBERS), members_seed(SEED, time), SAMPLER,
                                     latents=series.at(i)) for i, time in enumerate(HOURS)])
    for channel, rho in enumerate((0.3, 0.9)):
        lag1 = [correlation(fields[i, :, channel], fields[i + 1, :, channel]) for i in range(len(HOURS) - 1)]
        assert all(abs(c - rho) < 0.06 for c in lag1), (channel, lag1)
    same = SeriesLatents((0.9, 0.9), HOURS, draw)  # equal values per channel: the single rho, bit for bit
    assert torch.equal(same.at(3), SeriesLatents(0.9, HOURS, draw).at(3))


def test_a_rho_per_channel_names_as_many_as_there_are_channels():
    section = CoherenceSection(method="ar1", rho=(0.5, 0.3))
    assert section.rho_per_channel(["u", "v"]) == (0.5, 0.3)
    assert CoherenceSection(method="ar1", rho=0.4).rho_per_channel(["u", "v"]) == (0.4, 0.4)
    with pytest.raises(ConfigError, match="rho has 2 values for 3 output channels \\(u, v, w\\)"):
        section.rho_per_channel(["u", "v", "w"])
    with pytest.raises(ValueError, match="below 1"):
        CoherenceSection(method="ar1", rho=(0.5, 1.0))


def test_a_gap_restarts_the_series():
    times = T0 + np.array([0, 1, 2, 5, 6]) * HOUR
    series, independent = samples(times, 0.9), samples(times, None)
    assert abs(correlation(series[2], series[3])) < 0.06  # across the gap: independent
    assert abs(correlation(series[3], series[4]) - 0.9) < 0.05
    for start in (0, 3):  # a series starts from the independent draw itself
        assert torch.equal(series[start], independent[start])
    assert not torch.equal(series[4], independent[4])


def test_the_state_is_rebuilt_from_the_series_start_in_any_order():
    times = T0 + np.array([0, 1, 2, 3, 7, 8, 9]) * HOUR
    draw = lambda time: first_draws((1, 4, 4), range(3), members_seed(SEED, time))  # noqa: E731
    in_order = [SeriesLatents(0.8, times, draw).at(i) for i in range(len(times))]  # each from scratch
    walked = SeriesLatents(0.8, times, draw)
    for i in (5, 2, 3, 6, 0, 4, 1):  # forwards, backwards, across the gap
        assert torch.equal(walked.at(i), in_order[i]), i


def test_a_stochastic_sampler_is_refused_in_one_line():
    ar1 = CoherenceSection(method="ar1", rho=0.5)
    for sampler, says in ((SamplerConfig(solver="dpmpp_2m_sde"), "sampler.solver dpmpp_2m_sde draws fresh noise"),
                          (SamplerConfig(S_churn=2.0), "sampler.S_churn 2.0 draws fresh noise"),
                          (SamplerConfig(arithmetic="physicsnemo"), "needs sampler.arithmetic edm")):
        with pytest.raises(ConfigError, match=says) as err:
            check_sampler(ar1, sampler, ["u"])
        assert "generate.coherence.method ar1" in str(err.value) and "\n" not in str(err.value)
    check_sampler(ar1, SamplerConfig(solver="dpmpp_2m"), ["u"])
    check_sampler(CoherenceSection(), SamplerConfig(solver="dpmpp_2m_sde"), ["u"])  # independent: anything goes


# ---- through `corrdiff generate`, the API and a model package (the tiny run of tests/api_fixtures.py) -------------

AR1 = ["--coherence", "ar1", "--coherence-rho", "0.9"]
CONSECUTIVE = [str(t) for t in DATA_TIMES[2:6].values.astype("datetime64[s]")]  # 4 times, 3 h apart
WITH_GAP = [CONSECUTIVE[0], CONSECUTIVE[1], CONSECUTIVE[3]]


def times_args(times):
    return [a for t in times for a in ("--times", t)]


def cli(trained, out, times, *options):
    folder, config = trained
    succeeded(invoke("generate", config, "--out", out, "--input", folder / "data" / "coarse.nc", "--quiet",
                     *times_args(times), *options))
    with xr.open_dataset(out) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    """The consecutive times, independent and as AR(1) series, written by `corrdiff generate`."""
    root = tmp_path_factory.mktemp("coherence")
    return {"independent": cli(trained, root / "independent.nc", CONSECUTIVE),
            "ar1": cli(trained, root / "ar1.nc", CONSECUTIVE, *AR1)}


def test_the_file_records_the_series_and_rho_only_when_coherent(files):
    independent, ar1 = files["independent"], files["ar1"]
    assert SERIES_START not in independent.variables and "corrdiff_coherence" not in independent.attrs
    assert "coherence" not in independent.attrs["corrdiff_fingerprint_ingredients"]
    assert ar1[SERIES_START].values.tolist() == [1, 0, 0, 0] and ar1[SERIES_START].dims == ("time",)
    assert ar1[SERIES_START].attrs["flag_meanings"] == "continues_series starts_series"
    assert ar1.attrs["corrdiff_coherence"] == "ar1" and ar1.attrs["corrdiff_coherence_rho"] == 0.9
    assert '"coherence.rho":0.9' in ar1.attrs["corrdiff_fingerprint_ingredients"]
    assert "coherence:" in ar1.attrs["corrdiff_config"] and "coherence" not in independent.attrs["corrdiff_config"]
    for name in ("t2m", "u10", "t2m_regression"):  # the first time starts the series: its members are the same
        np.testing.assert_array_equal(ar1[name].values[0], independent[name].values[0])
    assert not np.array_equal(ar1["t2m"].values[1:], independent["t2m"].values[1:])
    np.testing.assert_array_equal(ar1["t2m_regression"].values, independent["t2m_regression"].values)


def test_rho_0_gives_the_independent_file_bit_for_bit(trained, files, tmp_path):
    zero = cli(trained, tmp_path / "zero.nc", CONSECUTIVE, "--coherence", "ar1", "--coherence-rho", "0")
    for name in ("t2m", "u10", "refl"):
        np.testing.assert_array_equal(zero[name].values, files["independent"][name].values)
    assert zero.attrs["corrdiff_fingerprint"] != files["independent"].attrs["corrdiff_fingerprint"]


def test_a_gap_restarts_the_series_in_the_file(trained, files, tmp_path):
    gapped = cli(trained, tmp_path / "gap.nc", WITH_GAP, *AR1)
    assert gapped[SERIES_START].values.tolist() == [1, 0, 1]
    ar1, independent = files["ar1"], files["independent"]
    np.testing.assert_array_equal(gapped["t2m"].values[:2], ar1["t2m"].values[:2])  # the same series so far
    np.testing.assert_array_equal(gapped["t2m"].values[2], independent["t2m"].values[3])  # restarted


def test_patched_sampling_takes_the_series_whole_domain_noise(trained, tmp_path):
    patched = ["--set", "generate.patch_shape=[8, 8]", "--set", "generate.patch_overlap=[4, 4]"]
    times = CONSECUTIVE[:3]
    independent = cli(trained, tmp_path / "independent.nc", times, *patched)
    zero = cli(trained, tmp_path / "zero.nc", times, *patched, "--coherence", "ar1", "--coherence-rho", "0")
    ar1 = cli(trained, tmp_path / "ar1.nc", times, *patched, *AR1)
    np.testing.assert_array_equal(zero["t2m"].values, independent["t2m"].values)
    np.testing.assert_array_equal(ar1["t2m"].values[0], independent["t2m"].values[0])
    assert not np.array_equal(ar1["t2m"].values[1:], independent["t2m"].values[1:])
    assert "patch_shape:\n  - 8\n  - 8" in ar1.attrs["corrdiff_config"]


def test_the_api_gives_the_values_of_the_command(model, trained, files):
    ens = model.downscale(trained[0] / "data" / "coarse.nc", members=2, seed=0, times=CONSECUTIVE,
                          coherence={"method": "ar1", "rho": 0.9})
    for name in ("t2m", "u10", "refl", "t2m_regression"):
        np.testing.assert_array_equal(ens[name].values, files["ar1"][name].values, err_msg=name)
    np.testing.assert_array_equal(ens[SERIES_START].values, files["ar1"][SERIES_START].values)
    for key in ("corrdiff_coherence", "corrdiff_coherence_rho"):
        assert str(ens.attrs[key]) == str(files["ar1"].attrs[key]), key
    # (the fingerprints differ by design: the API's names no input file)
    assert '"coherence.method":"ar1","coherence.rho":0.9' in ens.attrs["corrdiff_fingerprint_ingredients"]
    default = model.downscale(trained[0] / "data" / "coarse.nc", members=2, seed=0, times=CONSECUTIVE[:2])
    np.testing.assert_array_equal(default["t2m"].values, files["independent"]["t2m"].values[:2])


@pytest.mark.parametrize("bad, says", [({"method": "ar2"}, r"^coherence: method: Input should be 'independent'"),
                                       ({"method": "ar1", "rho": 1.0}, r"^coherence: rho: Value error, rho 1.0: each value must be at least 0 and below 1"),
                                       ("ar1", r"^coherence 'ar1': expected a dict")])
def test_the_api_refuses_a_bad_coherence_in_one_line(model, trained, bad, says):
    with pytest.raises(ConfigError, match=says):
        model.downscale(trained[0] / "data" / "coarse.nc", members=1, times=CONSECUTIVE[:1], coherence=bad)


def test_a_model_package_generates_the_same_series(trained, files, tmp_path):
    folder, config = trained
    package = tmp_path / "model"
    succeeded(invoke("export", folder / "run", "--config", config, "--out", package))
    out = tmp_path / "package.nc"
    succeeded(invoke("generate", "--model", package, "--input", folder / "data" / "coarse.nc", "--out", out,
                     "--quiet", *times_args(CONSECUTIVE), *AR1))
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds["t2m"].values, files["ar1"]["t2m"].values)
        assert ds[SERIES_START].values.tolist() == [1, 0, 0, 0]


def test_every_input_member_is_a_series_of_its_own(model, trained):
    ensemble = ensemble_of(xr.open_dataset(trained[0] / "data" / "coarse.nc").load())
    ar1 = {"method": "ar1", "rho": 0.9}
    every = model.downscale(ensemble, members=2, times=CONSECUTIVE[:3], member="all", coherence=ar1)
    first = model.downscale(ensemble, members=2, times=CONSECUTIVE[:3], member=0, coherence=ar1)
    independent = model.downscale(ensemble, members=2, times=CONSECUTIVE[:3], member="all")
    np.testing.assert_array_equal(every["t2m"].values[:, :2], first["t2m"].values)  # members 0, 1: the same series
    np.testing.assert_array_equal(every["t2m"].values[0], independent["t2m"].values[0])  # every series starts there
    assert not np.array_equal(every["t2m"].values[1:, 2:], independent["t2m"].values[1:, 2:])
    np.testing.assert_array_equal(every[INPUT_MEMBER].values, independent[INPUT_MEMBER].values)


def test_an_interrupted_generation_resumes_to_the_same_series(trained, files, tmp_path, monkeypatch):
    folder, config = trained
    out = tmp_path / "resumed.nc"
    cfg = load_config(config, ["generate.coherence.method=ar1", "generate.coherence.rho=0.9"])
    request = GenerationRequest(folder / "run" / "regression", folder / "run" / "diffusion",
                                inputs=[str(folder / "data" / "coarse.nc")], times=CONSECUTIVE)
    undo_crash = crash_on_write(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, request, EnsembleOutput(out, progress=False))
    with xr.open_dataset(out) as partial:
        assert partial["generation_complete"].values.tolist() == [1, 1, 0, 0]
    undo_crash()
    generate(cfg, request, EnsembleOutput(out, progress=False))  # resumes at the third time, mid-series
    with xr.open_dataset(out) as resumed:
        for name in ("t2m", "u10", "refl"):
            np.testing.assert_array_equal(resumed[name].values, files["ar1"][name].values)
        assert resumed.attrs["corrdiff_fingerprint"] == files["ar1"].attrs["corrdiff_fingerprint"]
    other = load_config(config, ["generate.coherence.method=ar1", "generate.coherence.rho=0.5"])
    with pytest.raises(corrdiff.errors.OutputError, match=r"other settings \(coherence.rho: 0.9 → 0.5\)"):
        generate(other, request, EnsembleOutput(out, progress=False))


# ---- torchrun: contiguous blocks of times, the file of one process -----------------------------------------------

GENERATE_SCRIPT = """
import torch
from corrdiff.config import load_config
from corrdiff.inference.generate import EnsembleOutput, generate, GenerationRequest
torch.set_num_threads(1)
folder = {folder!r}
cfg = load_config({config!r}, ["generate.coherence.method=ar1", "generate.coherence.rho=0.9", "generate.format={fmt}"])
request = GenerationRequest(folder + "/run/regression", folder + "/run/diffusion", inputs=[folder + "/data/coarse.nc"],
                            times={times!r})
generate(cfg, request, EnsembleOutput({out!r}, progress=False))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_torchrun_ranks_take_blocks_and_give_the_file_of_one_process(trained, tmp_path, fmt):
    folder, config = trained
    times = [str(t) for t in DATA_TIMES[1:8].values.astype("datetime64[s]")]
    times = times[:2] + times[3:]  # 6 times with a gap: rank 1's block (the last 3) starts inside the second series
    suffix = ".nc" if fmt == "netcdf" else ".zarr"
    # This checkout's corrdiff first on the path, as for tests/inference/test_generate.py's torchrun test.
    path = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / f"ranks{processes}{suffix}"
        script = tmp_path / f"gen{processes}.py"
        script.write_text(GENERATE_SCRIPT.format(folder=str(folder), config=str(config), fmt=fmt, times=times,
                                                 out=str(out)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = [sys.executable] if processes == 1 else \
            [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={port}",
             "--master_addr=127.0.0.1"]
        result = subprocess.run([*launcher, str(script)], env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        with xr.open_dataset(out, engine="netcdf4" if fmt == "netcdf" else "zarr") as ds:
            outputs[processes] = ds.load()
    one, two = outputs[1], outputs[2]
    assert one[SERIES_START].values.tolist() == [1, 0, 1, 0, 0, 0] == two[SERIES_START].values.tolist()
    assert sorted(p.name for p in tmp_path.iterdir() if ".part-" in p.name) == []
    for name in ("t2m", "u10", "refl", "t2m_regression"):
        np.testing.assert_array_equal(two[name].values, one[name].values, err_msg=name)


def test_a_rho_per_channel_through_the_command_line(trained, files, tmp_path):
    independent = files["independent"]
    channels = [n for n in independent.data_vars if "member" in independent[n].dims]
    rhos = ",".join(["0.9"] * len(channels))
    same = cli(trained, tmp_path / "same.nc", CONSECUTIVE, "--coherence", "ar1", "--coherence-rho", rhos)
    for name in channels:  # equal values per channel: the single rho's members
        np.testing.assert_array_equal(same[name].values, files["ar1"][name].values)
    assert same.attrs["corrdiff_coherence_rho"].tolist() == [0.9] * len(channels)
    folder, config = trained
    wrong = invoke("generate", config, "--out", tmp_path / "wrong.nc", "--input", folder / "data" / "coarse.nc",
                   "--quiet", *times_args(CONSECUTIVE), "--coherence", "ar1", "--coherence-rho", rhos + ",0.5")
    assert wrong.exit_code == 2 and f"rho has {len(channels) + 1} values for {len(channels)} output channels" in \
        wrong.output and not (tmp_path / "wrong.nc").exists()
