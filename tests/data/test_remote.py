"""Inputs read by URL from an S3-compatible server (moto's, local) and a local web server: only the chunks of the
fine grid's box and the times asked for are fetched, the ARCO-ERA5 layout is understood end to end (`corrdiff data
check`, `corrdiff generate`, the guide's spec), credentials follow corrdiff.data.remote's rule, and every way of
failing is one line naming the URL."""

import re
from pathlib import Path

import fsspec.config
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

import corrdiff
from corrdiff.data import DataError, load_spec, PairedFields, remote
from corrdiff.data.regrid import Bilinear
from corrdiff.file_integrity import ContentHashes
from corrdiff.inference import checks, fingerprint
from corrdiff.inference.generate import input_paths, spec_inputs_of
from corrdiff.inference.inputs import InputRules
from corrdiff.output_paths import check_not_an_input, spec_files
from corrdiff.training import regression_cache
from tests.cli_runner import invoke, refused, succeeded, TINY_RUN
from tests.data import s3_server
from tests.data.s3_server import ARCO_NAMES, BUCKET, chunk_keys, isolate_aws, TIMES

STORE = "ar/era5.zarr"
FINE_SHAPE = (16, 24)
# The fine grid's box, lat 25..33.7 and lon -6.75..5.5, plus 2 cells: latitude rows 54..67 (chunk rows 0 and 1 of
# 60 rows) and longitude columns 351..359 then 0..8 (chunk columns 3 and 0 of 90): 4 of the 16 chunks of a time.
BOX_ROWS, BOX_COLUMNS = (0, 1), (0, 3)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        isolate_aws(patch, tmp_path_factory.mktemp("aws"))
        s3 = s3_server.S3Server()
        s3.url = s3_server.write_arco(s3, STORE)
        yield s3
    s3.stop()


@pytest.fixture(autouse=True)
def aws(monkeypatch, tmp_path):
    isolate_aws(monkeypatch, tmp_path)


def fine_grid(shape=FINE_SHAPE):
    """A slightly rotated grid across the 0° meridian (longitudes -6.75..5.5) and a chunk row (30°N)."""
    j, i = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return 25.0 + 0.5 * j + 0.05 * i, -6.0 + 0.5 * i - 0.05 * j


def write_spec(folder, server, url=None) -> Path:
    """A spec whose inputs are the ARCO store on the server and whose targets are a small local NetCDF."""
    lat, lon = fine_grid()
    rng = np.random.default_rng(0)
    dims = ("time", "y", "x")
    xr.Dataset({"t2m": (dims, rng.normal(270, 5, (len(TIMES), *FINE_SHAPE)).astype(np.float32), {"units": "K"})},
               coords={"time": TIMES, "lat": (dims[1:], lat), "lon": (dims[1:], lon)}).to_netcdf(folder / "fine.nc")
    spec = {"inputs": {"paths": url or server.url, "variables": ["t2m", "u10", "z@500"], "rename": ARCO_NAMES,
                       "storage_options": server.options},
            "targets": {"paths": "fine.nc", "variables": ["t2m"]},
            "splits": {"train": {"start": "2021-01-01T00", "end": "2021-01-01T18"},
                       "test": {"start": "2021-01-02T00", "end": "2021-01-02T06"}}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def expected_inputs(times_index) -> np.ndarray:
    """The inputs interpolated from the whole global grid (no crop; the regridder wraps), (time, 3, H, W)."""
    ds = s3_server.arco_dataset().isel(time=list(times_index))
    lat, lon = fine_grid()
    regrid = Bilinear(ds.latitude.values, ds.longitude.values, lat, lon, "reference")
    coarse = np.stack([ds["2m_temperature"].values, ds["10m_u_component_of_wind"].values,
                       ds["geopotential"].sel(level=500).values], 1)
    return regrid(coarse)


def data_keys(server, fetched=None) -> list[str]:
    """The keys of data chunks (not coordinates or metadata) fetched from the store, in order."""
    fetched = server.log.fetched(f"{BUCKET}/{STORE}") if fetched is None else fetched
    return [key for key in fetched if key.split("/")[0] in ARCO_NAMES.values() and not key.split("/")[1].startswith(".")]


def expected_keys(times_index) -> set[str]:
    return (chunk_keys("2m_temperature", times_index, BOX_ROWS, BOX_COLUMNS)
            | chunk_keys("10m_u_component_of_wind", times_index, BOX_ROWS, BOX_COLUMNS)
            | chunk_keys("geopotential", times_index, BOX_ROWS, BOX_COLUMNS, level=True))


@pytest.mark.parametrize("units", [{}, {"t2m": "degC", "z": "m"}], ids=["as-stored", "converted"])
def test_only_the_chunks_of_the_box_and_the_times_asked_for_are_fetched(server, tmp_path, units):
    spec = write_spec(tmp_path, server)
    spec.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), "units": units}))
    server.log.requests.clear()
    fields = PairedFields(spec)
    assert data_keys(server) == []  # opening reads metadata and coordinates, no data
    wanted = [1, 4]
    values = fields.read_inputs(TIMES.values[wanted])
    fetched = data_keys(server)
    # 3 variables × 2 times × 4 chunks, each once, of the 3 × 2 × 16 chunks the uncropped fields would need
    assert sorted(fetched) == sorted(expected_keys(wanted)) and len(fetched) == 3 * 2 * 4
    expected = expected_inputs(wanted)
    if units:  # K → °C, and geopotential → geopotential height (÷ g)
        expected[:, 0] -= 273.15
        expected[:, 2] /= 9.80665
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-4)
    field = fields.inputs[0]
    assert field.array.shape == (len(TIMES), 14, 18) and list(field.lon[[0, 8, 9, -1]]) == [351, 359, 360, 368]
    fields.close()


def test_data_check_reads_an_arco_store_from_s3(server, tmp_path):
    server.log.requests.clear()
    result = succeeded(invoke("data", "check", write_spec(tmp_path, server)))
    assert "inputs  (3): t2m, u10, z@500" in result.output
    assert "split train           4 times" in result.output and "split test            2 times" in result.output
    assert sorted(data_keys(server)) == sorted(expected_keys([0, 4]))  # one time per split: its box's chunks


def test_several_stores_by_url_are_combined_by_time(server, tmp_path):
    first = s3_server.write_arco(server, "ar/first.zarr", TIMES[:3], chunks=s3_server.WHOLE)
    second = s3_server.write_arco(server, "ar/second.zarr", TIMES[3:], chunks=s3_server.WHOLE)
    fields = PairedFields(write_spec(tmp_path, server, url=[first, second]))
    np.testing.assert_allclose(fields.read_inputs(TIMES.values[[2, 3]]), expected_inputs([2, 3]), rtol=1e-6)
    assert fields.times("all").size == len(TIMES)


def test_a_store_over_https_is_read_the_same_way(server, tmp_path):
    """https:// (here plain http from a local web server): the same lazy reading, the same chunks fetched."""
    s3_server.arco_dataset().chunk(s3_server.CHUNKS).to_zarr(tmp_path / "era5.zarr", zarr_format=2, consolidated=True)
    web = s3_server.HTTPServer(tmp_path)
    try:
        spec = write_spec(tmp_path, server, url=f"{web.endpoint}/era5.zarr")
        raw = yaml.safe_load(spec.read_text())
        del raw["inputs"]["storage_options"]
        spec.write_text(yaml.safe_dump(raw))
        values = PairedFields(spec).read_inputs(TIMES.values[[1, 4]])
    finally:
        web.stop()
    assert sorted(data_keys(web, web.fetched("era5.zarr"))) == sorted(expected_keys([1, 4]))
    np.testing.assert_allclose(values, expected_inputs([1, 4]), rtol=1e-6)


def test_anonymous_only_when_no_credentials_are_found(server, tmp_path, monkeypatch):
    url = server.url
    assert remote.storage_options(url, server.options) == server.options  # the test's credentials, signed
    isolate_aws(monkeypatch, tmp_path, credentials=False)
    assert remote.storage_options(url, server.options) == {**server.options, "anon": True}
    assert remote.storage_options(url, {"profile": "x"}) == {"profile": "x"}  # the spec says how: nothing guessed
    assert remote.storage_options(url, {"anon": False}) == {"anon": False}
    assert remote.storage_options("https://example.org/era5.zarr", {}) == {}
    monkeypatch.setitem(fsspec.config.conf, "s3", {"anon": False})  # fsspec's own config says how
    assert remote.storage_options(url, {}) == {}
    monkeypatch.delitem(fsspec.config.conf, "s3")
    isolate_aws(monkeypatch, tmp_path)
    public = s3_server.write_arco(server, "era5.zarr", bucket="public", public=True, chunks=s3_server.WHOLE)
    isolate_aws(monkeypatch, tmp_path, credentials=False)
    fields = PairedFields(write_spec(tmp_path, server, url=public))  # read anonymously: the bucket is public
    assert fields.read_inputs(TIMES.values[:1]).shape == (1, 3, *FINE_SHAPE)


def open_error(server, url, **options) -> str:
    with pytest.raises(DataError) as error:
        remote.open_store(url, "inputs", {**server.options, **options})
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"inputs: cannot open {url}: ")
    return message


def test_a_missing_bucket_or_key_or_a_store_that_is_not_zarr(server):
    assert "no bucket 'nobucket'" in open_error(server, "s3://nobucket/era5.zarr")
    assert f"nothing at s3://{BUCKET}/missing.zarr; check the path" in open_error(server, f"s3://{BUCKET}/missing.zarr")
    server.filesystem().pipe(f"{BUCKET}/era5.nc", b"CDF\x01 not zarr")
    assert "no Zarr store there (no zarr.json, .zgroup or .zmetadata)" in open_error(server, f"s3://{BUCKET}/era5.nc")


def test_no_network(server):
    message = open_error(server, server.url, endpoint_url="http://127.0.0.1:9",
                         config_kwargs={"retries": {"max_attempts": 1}})
    assert "cannot reach http://127.0.0.1:9" in message and "check the network connection" in message


def test_permission_denied(server, monkeypatch):
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server now checks credentials
    message = open_error(server, server.url)
    assert "access denied" in message and "the credentials used may not read it" in message


def test_a_protocol_whose_package_is_missing():
    try:  # gcsfs is not among corrdiff's dependencies; where it is installed, there is nothing to say
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(DataError, match=r"cannot open gs://bucket/era5.zarr: reading gs:// needs gcsfs"):
        remote.open_store("gs://bucket/era5.zarr", "inputs")


def test_spec_errors_for_urls(server, tmp_path):
    spec = write_spec(tmp_path, server, url=f"s3://{BUCKET}/ar/*.zarr")
    with pytest.raises(DataError, match=r"inputs.paths: s3://era5/ar/\*.zarr: globs are not expanded in URLs"):
        PairedFields(spec)
    raw = yaml.safe_load(spec.read_text())
    raw["targets"]["storage_options"] = {"anon": True}
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="targets: .*storage_options: only for paths that are URLs"):
        load_spec(spec)


def test_cli_error_is_one_line(server, tmp_path):
    line = refused(invoke("data", "check", write_spec(tmp_path, server, url=f"s3://{BUCKET}/missing.zarr")))
    assert f"inputs: cannot open s3://{BUCKET}/missing.zarr: nothing at" in line


def test_urls_pass_the_checks_made_on_local_files(server, tmp_path):
    """Where the commands look at a spec's files on disk (outputs that must not overwrite inputs, fingerprints,
    --input, model packages), a URL is taken as it is: never stat-ed, listed or made a local path."""
    spec = load_spec(write_spec(tmp_path, server))
    dataset = type("Dataset", (), {"spec": spec})()
    assert server.url in spec_files(spec) and tmp_path / "fine.nc" in spec_files(spec)
    check_not_an_input(tmp_path / "out.nc", {"a file of the spec": spec_files(spec)})
    found = spec_inputs_of(dataset)  # what a generation reads, by role: the URL as it is, never a local path
    assert tmp_path / "fine.nc" in found["a file of the spec's targets"]
    assert not any("era5" in str(path) for paths in found.values() for path in paths if not isinstance(path, str))
    check_not_an_input(tmp_path / "out.nc", found)
    assert checks.input_files(dataset)[0] == [server.url]
    assert fingerprint._describe_files([server.url], ContentHashes()) == {"input_files": [server.url]}
    assert regression_cache._file_entry(server.url) == server.url
    assert input_paths([server.url, str(tmp_path / "fine.nc")]) == [server.url, tmp_path / "fine.nc"]
    rules = InputRules.from_spec(spec)  # how inputs are read, never the credentials (they may be secrets)
    assert rules.inputs.storage_options == {} and "storage_options" not in rules.to_dict()["source"]
    assert InputRules.from_dict(rules.to_dict()) == rules


def test_open_inputs_reads_a_store_by_url(server, monkeypatch):
    """corrdiff.open_inputs takes URLs as paths; with no storage_options argument, fsspec's config gives the endpoint."""
    monkeypatch.setitem(fsspec.config.conf, "s3", server.options)
    ds = corrdiff.open_inputs(server.url, ["t2m", "z@500"], rename=ARCO_NAMES)
    expected = s3_server.arco_dataset()["geopotential"].sel(level=500).isel(time=2).values
    np.testing.assert_allclose(ds["z@500"].isel(time=2).values, expected)
    assert ds["t2m"].dims == ("time", "lat", "lon") and ds.sizes["lat"] == 181


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "real-data.md"


def test_the_arco_era5_spec_of_the_guide(server, tmp_path):
    """docs/real-data.md's ARCO-ERA5 spec through `corrdiff data check`, on a store of its layout with all its
    variables: only `paths` and `storage_options` are pointed at the local server."""
    match = re.search(r"<!-- spec \(tests/data/test_remote.py\): arco-era5 -->\s*```yaml\n(.*?)```", GUIDE.read_text(),
                      re.S)
    assert match, f"no ARCO-ERA5 spec in {GUIDE}"
    raw = yaml.safe_load(match.group(1))
    url = s3_server.write_arco(server, "ar/full.zarr", chunks=s3_server.WHOLE, more=True)
    raw["inputs"].update(paths=url, storage_options=server.options)
    spec = write_spec(tmp_path, server)  # its fine.nc: the targets the guide's spec names
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    output = succeeded(invoke("data", "check", spec)).output
    assert "inputs  (5): t2m, u10, v10, z@500, t@850" in output and "split test" in output


@pytest.mark.slow
def test_generate_downscales_inputs_read_from_s3(server, tmp_path):
    """Train both steps (2 steps each) on the store by URL, then `corrdiff generate` reads it again for the test split."""
    spec = write_spec(tmp_path, server)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": "spec.yaml", "run_dir": "run", "device": "cpu", **TINY_RUN}))
    for kind in ("regression", "diffusion"):
        succeeded(invoke("train", kind, config, "--quiet"))
    server.log.requests.clear()
    out = tmp_path / "test.nc"
    succeeded(invoke("generate", config, "--out", out, "--quiet"))
    with xr.open_dataset(out) as ds:
        assert list(ds["time"].values) == list(TIMES.values[4:]) and ds["t2m"].sizes["member"] == 2
        assert server.url in ds.attrs["corrdiff_input_files"]
    assert sorted(data_keys(server)) == sorted(expected_keys([4, 5]))  # the test split's times, the box's chunks


def test_a_store_that_fails_in_the_middle_of_a_read_is_one_line():
    """The network goes while a time is read: whatever the client raises becomes one line naming the store."""
    from corrdiff.data.fields import read_field
    from corrdiff.data.readers import Field

    class ConnectionLost(Exception):  # as botocore's and aiohttp's errors are: not OSError
        pass

    class Failing:
        def isel(self, **_):
            return self

        @property
        def values(self):
            raise ConnectionLost("Connection was closed before we received a valid response")

    field = Field("t2m", Failing(), "s3://era5/store.zarr", np.zeros(2), np.zeros(2),
                  times=pd.Index(np.array(["2021-01-01"], "datetime64[ns]")))
    with pytest.raises(DataError, match=r"^s3://era5/store\.zarr: reading 't2m' failed: Connection was closed before "
                                        r"we received a valid response; the store is read over the network: check "
                                        r"the connection and the credentials, then run again$"):
        read_field(field, np.array(["2021-01-01"], "datetime64[ns]"))
    field.file = "local.nc"
    with pytest.raises(ConnectionLost):  # a local file's unknown error is a bug to see, not a message to hide
        read_field(field, np.array(["2021-01-01"], "datetime64[ns]"))
