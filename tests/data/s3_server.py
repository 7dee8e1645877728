"""A real S3-compatible server for the tests (moto's server mode, on 127.0.0.1, no network), which logs every
request it answers, and a tiny store laid out as ARCO-ERA5 / WeatherBench2 to put in it.

ARCO layout: one Zarr (v2, consolidated) store, long variable names (`2m_temperature`, `geopotential` with a
`level` dimension in hPa), dims `time`, `latitude` descending 90..-90, `longitude` 0..359.
"""

import functools
import http.server
import tempfile
import threading

import numpy as np
import pandas as pd
import pytest
import xarray as xr

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'corrdiff[test]'); "
                                  "the S3 tests run against its local server")
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'corrdiff[cloud]')")

BUCKET = "era5"
TIMES = pd.date_range("2021-01-01", periods=6, freq="6h")
LEVELS = [500, 850]
CHUNKS = {"time": 1, "level": -1, "latitude": 60, "longitude": 90}  # 4 × 4 chunks per time on the 1° grid
WHOLE = {"time": 1, "level": -1, "latitude": -1, "longitude": -1}  # one chunk per time, as ARCO-ERA5 has
ARCO_NAMES = {"t2m": "2m_temperature", "u10": "10m_u_component_of_wind", "z": "geopotential"}


class RequestLog:
    """WSGI middleware in front of the server: every request it answers, as (method, path)."""

    def __init__(self, app):
        self.app, self.requests = app, []

    def __call__(self, environ, start_response):
        self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return self.app(environ, start_response)

    def fetched(self, prefix: str) -> list[str]:
        """The object keys below `prefix` (bucket/store/) that were downloaded (GET), in order."""
        start = f"/{prefix.strip('/')}/"
        return [path[len(start):] for method, path in self.requests if method == "GET" and path.startswith(start)]


class S3Server:
    """moto's ThreadedMotoServer on a free port, with its RequestLog (`log`) and `endpoint` URL."""

    def __init__(self):
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.log = RequestLog(self.server._server.app)  # the werkzeug server's WSGI app, wrapped
        self.server._server.app = self.log

    @property
    def options(self) -> dict:
        """fsspec storage options to reach this server."""
        return {"endpoint_url": self.endpoint}

    def filesystem(self):
        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)

    def stop(self):
        self.server.stop()


class HTTPServer:
    """A plain web server (the standard library's) serving `folder` on a free port of 127.0.0.1, with its `log`
    of request lines: the https:// case (without TLS)."""

    def __init__(self, folder):
        self.log = []
        log = self.log

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                log.append(self.requestline)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fetched(self, prefix: str) -> list[str]:
        """The keys below `prefix` (store/) that were downloaded (GET), in order."""
        start = f"/{prefix.strip('/')}/"
        paths = [line.split()[1] for line in self.log if line.startswith("GET ")]
        return [path[len(start):] for path in paths if path.startswith(start)]

    def stop(self):
        self.server.shutdown()


def isolate_aws(monkeypatch, tmp_path, credentials: bool = True) -> None:
    """An environment where botocore finds the test's credentials (or none), never the machine's own."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe (a second's timeout)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if credentials:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec reuses filesystems made with the same options


def field(lat: np.ndarray, lon: np.ndarray, t: float, kind: int) -> np.ndarray:
    """A smooth global field, periodic in longitude (so values either side of the 0/360 seam agree)."""
    rad_lat, rad_lon = np.radians(lat), np.radians(lon)
    return np.cos(rad_lat) * (3.0 + kind) + np.sin(rad_lon + 0.3 * t) * np.cos(rad_lat) + 0.1 * kind * t


def arco_dataset(times=TIMES, more: bool = False) -> xr.Dataset:
    """A global 1° dataset in the ARCO-ERA5 layout (`more`: with 10m_v_component_of_wind and temperature too)."""
    lat = np.arange(90.0, -90.5, -1.0)
    lon = np.arange(0.0, 360.0, 1.0)
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    steps = (pd.DatetimeIndex(times) - TIMES[0]) / pd.Timedelta("6h")  # the fields depend on the time itself
    t2m = np.stack([250.0 + 10 * field(grid_lat, grid_lon, t, 0) for t in steps])
    u10 = np.stack([5.0 * field(grid_lat, grid_lon, t, 1) for t in steps])
    z = np.stack([[9.80665 * (5500.0 + (850 - level) * 4 + 50 * field(grid_lat, grid_lon, t, 2)) for level in LEVELS]
                  for t in steps])
    dims = ("time", "latitude", "longitude")
    ds = xr.Dataset(
        {"2m_temperature": (dims, t2m.astype(np.float32), {"units": "K", "long_name": "2 metre temperature"}),
         "10m_u_component_of_wind": (dims, u10.astype(np.float32), {"units": "m s**-1"}),
         "geopotential": (("time", "level", "latitude", "longitude"), z.astype(np.float32),
                          {"units": "m**2 s**-2", "long_name": "Geopotential"})},
        coords={"time": times, "level": ("level", np.array(LEVELS, np.int64), {"units": "millibars"}),
                "latitude": ("latitude", lat, {"units": "degrees_north"}),
                "longitude": ("longitude", lon, {"units": "degrees_east"})})
    if more:
        ds["10m_v_component_of_wind"] = (dims, (-0.5 * u10).astype(np.float32), {"units": "m s**-1"})
        ds["temperature"] = (("time", "level", "latitude", "longitude"), (z / 9.80665 / 30.0).astype(np.float32),
                             {"units": "K"})
    return ds


def write_arco(server: S3Server, store: str = "ar/era5.zarr", times=TIMES, bucket: str = BUCKET,
               public: bool = False, chunks: dict = CHUNKS, more: bool = False) -> str:
    """The ARCO-layout dataset written to the server as a consolidated Zarr v2 store (`public`: objects anyone may
    read, as in a public data set); its s3:// URL."""
    fs = server.filesystem()
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    with tempfile.TemporaryDirectory() as folder:  # written here, then uploaded: quicker than object by object
        arco_dataset(times, more).chunk(chunks).to_zarr(f"{folder}/store.zarr", zarr_format=2, consolidated=True)
        fs.put(f"{folder}/store.zarr/", f"{bucket}/{store}", recursive=True,
               **({"ACL": "public-read"} if public else {}))
    return f"s3://{bucket}/{store}"


def chunk_keys(variable: str, times, rows, columns, level: bool = False) -> set[str]:
    """The Zarr v2 keys of `variable`'s chunks at time indices `times` and chunk rows × columns."""
    middle = "0." if level else ""
    return {f"{variable}/{t}.{middle}{r}.{c}" for t in times for r in rows for c in columns}
