"""Small facts about files: a cheap stand-in for a file's contents in fingerprints (its size and modification
time), the permissions the user's umask gives what corrdiff creates through temporary names, and whether a path
is a URL (a store read through fsspec, `corrdiff.data.remote`) rather than a local file."""

import os
import re
from pathlib import Path

URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(path) -> bool:
    """Whether `path` (a str; a pathlib.Path never is) is a URL: it starts with a scheme, `s3://`, `https://`, …"""
    return isinstance(path, str) and URL_SCHEME.match(path) is not None


def size_and_mtime(path: Path) -> tuple[int, int]:
    """(bytes, latest modification in ns) of a file, or of every file below a folder (a Zarr store)."""
    if not path.is_dir():
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns
    size, mtime_ns = 0, 0
    for root, _, names in os.walk(path):
        for name in names:
            stat = os.stat(os.path.join(root, name))
            size, mtime_ns = size + stat.st_size, max(mtime_ns, stat.st_mtime_ns)
    return size, mtime_ns


def umask() -> int:
    """The process's umask (from /proc on Linux; elsewhere by setting and restoring it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_umask_allows(path: Path) -> Path:
    """Give `path` the mode that creating it plainly would have: mkdtemp and mkstemp make 0700 folders and 0600
    files, which a renamed output would keep (a package others cannot read). Returns `path`."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask())
    return path
