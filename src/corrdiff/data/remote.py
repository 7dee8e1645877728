"""Stores read by URL (`s3://`, `gs://`, `https://`, …) through fsspec: the credentials, the lazy opening of the
Zarr store, and one-line errors that say what to do.

A path with a scheme (`s3://bucket/era5.zarr`) is a URL; anything else is a local path. A URL is read as a Zarr
store (v2 with consolidated metadata, as ARCO-ERA5 and WeatherBench2 are, or v3), never listed or globbed, and
opened lazily: the metadata and the coordinates are read at once, a chunk of data only when a value in it is
(`corrdiff.data.crop` narrows the coarse inputs to the fine grid's box, `fields.read_field` to the times asked for).

Credentials, in this order:

1. the source's `storage_options` (spec key) go to fsspec as they are: `{anon: true}` for a public bucket,
   `{profile: NAME}`, `{key: …, secret: …}`, `{endpoint_url: …}` for another S3-compatible server, `{token: …}`
   for gcsfs, `{headers: …}` for https;
2. fsspec's own configuration fills in what they leave out (`~/.config/fsspec/*.json`, `FSSPEC_S3_ANON=true`, …);
3. s3://, when neither names credentials or `anon`: signed with the credentials botocore finds (AWS_ACCESS_KEY_ID and
   AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials, an instance or container role), and anonymous
   (`anon=True`) when it finds none, so that public buckets need no set-up. gs:// follows gcsfs's own rule (Google's
   default credentials when there are any, else anonymous); https:// sends none.
"""

import atexit
from urllib.parse import urlsplit

import xarray as xr
from zarr.core.sync import sync
from zarr.storage import FsspecStore

from corrdiff.errors import DataError
from corrdiff.file_integrity import URL_SCHEME
# The package fsspec needs for a protocol, for the error when it is missing.
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "http": "aiohttp", "https": "aiohttp",
            "az": "adlfs", "abfs": "adlfs"}
INSTALL = {"s3fs": "pip install 'corrdiff[cloud]'", "aiohttp": "pip install 'corrdiff[cloud]'"}
BUCKETED = ("s3", "s3a", "gs", "gcs")  # the first part of the path names a bucket
S3 = ("s3", "s3a")
# Options that say how to authenticate: given any of them (or fsspec's config gives one), nothing is guessed.
CREDENTIAL_KEYS = ("anon", "key", "secret", "token", "profile", "session")
# Errors of fsspec's backends (botocore, aiohttp, fsspec) that mean the server could not be reached.
NETWORK_ERRORS = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                  "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError", "ClientOSError",
                  "FSTimeoutError", "ConnectionError", "TimeoutError", "gaierror"}
CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "ProfileNotFound", "TokenRetrievalError",
                     "UnauthorizedSSOTokenError", "DefaultCredentialsError", "RefreshError"}
DENIED_CODES = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AllAccessDisabled",
                "403 Forbidden", "401 Unauthorized")


def protocol(url: str) -> str:
    """`s3` for s3://bucket/key."""
    return URL_SCHEME.match(url).group(1).lower()


def storage_options(url: str, given: dict | None = None) -> dict:
    """The fsspec options to open `url` with: `given` (a source's `storage_options`) as they are, and for s3:// with
    no say on credentials there or in fsspec's config, `anon=True` when botocore finds no credentials."""
    options = dict(given or {})
    if protocol(url) in S3 and not _names_credentials(options) and not _aws_credentials_found():
        options["anon"] = True
    return options


def _names_credentials(options: dict) -> bool:
    import fsspec.config

    configured = {**fsspec.config.conf.get("s3", {}), **options}
    return any(key in configured for key in CREDENTIAL_KEYS)


def _aws_credentials_found() -> bool:
    """Whether botocore's credential chain (environment, profiles, instance role) finds credentials."""
    try:
        import botocore.session
    except ImportError:
        return False  # no s3fs (it brings botocore): opening the store says which package to install
    try:
        return botocore.session.get_session().get_credentials() is not None
    except Exception:  # a broken profile (AWS_PROFILE naming none): not anonymous; s3fs then says what is wrong
        return True


def open_store(url: str, what: str, options: dict | None = None, chunks=None) -> xr.Dataset:
    """The Zarr store at `url`, opened lazily (`chunks` as xarray's: None reads through zarr, {} through dask in
    the store's chunks); a DataError naming the URL and what to do when it cannot be opened."""
    options = storage_options(url, options)
    try:
        store = FsspecStore.from_url(url, storage_options=options, read_only=True)
        _close_at_exit(store.fs)
        ds = xr.open_dataset(store, engine="zarr", chunks=chunks, decode_timedelta=False)
    except Exception as err:  # fsspec's backends (botocore, aiohttp, gcsfs) share no base class: each is sorted below
        raise DataError(f"{what}: cannot open {url}: {problem(url, options, err)}") from None
    ds.encoding["source"] = url
    return ds


_OPENED: list = []  # the asynchronous filesystems opened, held until their aiohttp sessions are closed at exit


def _close_at_exit(fs) -> None:
    """Close `fs`'s sessions at exit: fsspec leaves those of the asynchronous filesystems zarr uses open, and
    aiohttp then complains on stderr. Registered after zarr's own exit hook, so it runs first, on zarr's loop."""
    if not _OPENED:
        atexit.register(_close_sessions)
    if not any(fs is known for known in _OPENED):
        _OPENED.append(fs)


def _close_sessions() -> None:
    for fs in _OPENED:
        http_session, s3_client = getattr(fs, "_session", None), getattr(fs, "_s3creator", None)  # fsspec's, s3fs's
        try:
            if http_session is not None and not http_session.closed:
                sync(http_session.close(), timeout=1)
            if s3_client is not None:
                sync(s3_client.__aexit__(None, None, None), timeout=1)
        except Exception:  # at exit, nothing is left to tell
            pass
    _OPENED.clear()


def open_urls(urls: list[str], what: str, prepare, options: dict | None = None) -> xr.Dataset:
    """The Zarr stores at `urls` as one lazy dataset: each `prepare`d (canonical form, variables kept), several
    combined by their coordinates (through dask, in the stores' own chunks)."""
    chunks = None if len(urls) == 1 else {}
    parts = [prepare(open_store(url, what, options, chunks)) for url in urls]
    if len(parts) == 1:
        return parts[0]
    try:
        return xr.combine_by_coords(parts, data_vars="minimal", coords="minimal", compat="override", join="outer",
                                    combine_attrs="drop_conflicts")
    except ValueError as err:
        raise DataError(f"{what}: cannot combine {urls[0]} … by their coordinates: {err}") from None


def problem(url: str, options: dict, err: Exception) -> str:
    """Why `url` could not be opened, in words that say what to do."""
    text = " ".join(str(err).split()) or type(err).__name__
    names = {kind.__name__ for kind in type(err).__mro__}
    scheme = protocol(url)
    if isinstance(err, ImportError):
        package = PACKAGES.get(scheme, "the fsspec backend of this protocol")
        return f"reading {scheme}:// needs {package} ({INSTALL.get(package, f'pip install {package}')})"
    if "Protocol not known" in text:
        return f"fsspec knows no protocol {scheme!r}; use s3://, gs://, https://, … or a local path"
    if names & CREDENTIAL_ERRORS or isinstance(err, PermissionError) or any(code in text for code in DENIED_CODES) \
            or getattr(err, "status", None) in (401, 403):
        return _denied(url, options, text)
    if names & NETWORK_ERRORS or isinstance(err, (ConnectionError, TimeoutError)):
        endpoint = options.get("endpoint_url") or options.get("client_kwargs", {}).get("endpoint_url")
        where = endpoint or urlsplit(url).netloc
        return f"cannot reach {where} ({text}); check the network connection" + \
            (" and the endpoint_url in `storage_options`" if endpoint else "")
    if isinstance(err, FileNotFoundError):
        return _missing(url, options)
    if "JSONDecodeError" in names:
        return f"its Zarr metadata is not valid JSON ({text})"
    return text


def _denied(url: str, options: dict, text: str) -> str:
    if options.get("anon"):
        how = "it was read anonymously" + (" as no AWS credentials were found" if protocol(url) in S3 else "")
        fix = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or give the source "
               "`storage_options`" if protocol(url) in S3 else "give the source `storage_options` with credentials")
    else:
        how = "the credentials used may not read it"
        fix = ("check them (AWS_ACCESS_KEY_ID, AWS_PROFILE, or the source's `storage_options`), or, for a public "
               "bucket, set `storage_options: {anon: true}`")
    return f"access denied ({text}): {how}; {fix}"


def _missing(url: str, options: dict) -> str:
    """Why no Zarr store was found at `url`: no such bucket, nothing at the path, or something that is not Zarr."""
    not_zarr = ("no Zarr store there (no zarr.json, .zgroup or .zmetadata); stores given by URL are read as Zarr: "
                "check the URL, or download other files and give their local path")
    if protocol(url) not in BUCKETED:
        return not_zarr
    try:
        import fsspec

        fs, path = fsspec.url_to_fs(url, **options)
        bucket = path.split("/")[0]
        if not fs.exists(bucket):
            return f"no bucket {bucket!r} (or none these credentials can see); check the URL"
        if not fs.exists(path):
            return f"nothing at {url}; check the path (a Zarr store is a folder of objects, e.g. …/era5.zarr)"
    except Exception:  # the diagnosis costs two requests and may fail like the first: the general answer stands
        pass
    return not_zarr
