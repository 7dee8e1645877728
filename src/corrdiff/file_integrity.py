"""Small facts about files: their contents' SHA-256 (with a cache keyed by path, size and modification time, so that
fingerprints by content stay cheap), the permissions the user's umask gives what corrdiff creates through temporary
names, and whether a path is a URL (a store read through fsspec, `corrdiff.data.remote`) rather than a local file."""

import hashlib
import os
import re
from pathlib import Path

HASH_BLOCK = 1 << 22  # bytes read at a time when hashing


def sha256_bytes(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's contents, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: Path) -> str:
    """The SHA-256 of a file's contents, or of a folder's (a Zarr store): every file's relative path and contents,
    in sorted order; where the folder lies does not enter."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


class ContentHashes:
    """SHA-256s of files' contents, remembered by (absolute path, size, mtime): a file is read again only when one
    of those changed. `known` ({path: [size, mtime_ns, sha256]}) is what an earlier run recorded (`recorded`)."""

    def __init__(self, known: dict | None = None):
        self.known = {str(k): list(v) for k, v in (known or {}).items() if isinstance(v, (list, tuple)) and len(v) == 3}

    def sha256(self, path: Path, stat: tuple[int, int] | None = None) -> str:
        """The contents' SHA-256; `stat`: the (size, mtime_ns) `size_and_mtime` gave already, if the caller has it."""
        path = Path(path).absolute()
        size, mtime_ns = stat if stat is not None else size_and_mtime(path)
        entry = self.known.get(str(path))
        if entry is None or entry[:2] != [size, mtime_ns]:
            entry = [size, mtime_ns, sha256_path(path)]
            self.known[str(path)] = entry
        return entry[2]

    def recorded(self, paths) -> dict:
        """The entries of `paths`, to record beside what they made."""
        return {str(Path(p).absolute()): self.known[str(Path(p).absolute())] for p in paths
                if str(Path(p).absolute()) in self.known}
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
