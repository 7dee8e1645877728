"""Files written whole or not at all, and what their contents are.

Crash-safe writing: every file or folder corrdiff publishes is built under a temporary name beside it,
`.<name>.tmp-<8 hex digits>` (`temporary_path`: hidden, in the same folder so that the rename is atomic, random
so that two writers never share one), synced to disk, then renamed into place and its folder synced
(`publish`). `atomic_write_bytes`/`atomic_write_text` write a whole file so; `atomic_file` gives a block the
temporary path to write through a library (xarray's to_netcdf/to_zarr, zipfile, torch.save); `atomic_folder`
gives it a temporary folder to fill. Whatever the block raises, the temporary is removed and the target is as
it was. What is created takes the permissions the user's umask gives, as creating it plainly would.
`append_synced` is for logs a killed run resumes from: they grow in place, each line on disk before it counts.

Content identity: SHA-256 of bytes, files and folders (a Zarr store), with a cache keyed by path, size and
modification time (`ContentHashes`) so that fingerprints by content stay cheap; whether a path is a URL (a store
read through fsspec, `corrdiff.data.remote`) rather than a local file.
"""

import hashlib
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

HASH_BLOCK = 1 << 22  # bytes read at a time when hashing


def sha256_bytes(data: bytes | str) -> str:
    """The SHA-256 of bytes, or of a string's UTF-8 encoding."""
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


# --------------------------------------------------------------------------------------------- crash-safe writing
TEMPORARY = ".tmp-"  # marks the temporary names of `temporary_path`


def temporary_path(path) -> Path:
    """A fresh hidden name beside `path` for what is to become `path`: `.<name>.tmp-<8 random hex digits>`."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMPORARY}{secrets.token_hex(4)}")


def sync_folder(path) -> None:
    """Sync a folder's entries (a rename in it) to disk; a no-op where the filesystem does not allow it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sync(path) -> None:
    """Sync a written file to disk; for a folder (a Zarr store), every file and folder below it, itself last."""
    path = Path(path)
    if not path.is_dir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    for root, _, names in os.walk(path, topdown=False):
        for name in names:
            sync(os.path.join(root, name))
        sync_folder(root)


def remove_path(path) -> None:
    """Delete a file or a folder; nothing when absent."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def publish(built, final) -> None:
    """Put `built`, a complete file or folder beside `final`, in the place of `final`: synced to disk, renamed, and
    the rename synced. A file replaces a file in one atomic rename; a folder at `final` (or anything, where `built`
    is a folder) is first moved aside under a temporary name, removed once `built` is in place."""
    built, final = Path(built), Path(final)
    sync(built)
    if built.is_dir() or (final.is_dir() and not final.is_symlink()):
        aside = temporary_path(final) if final.exists() or final.is_symlink() else None
        if aside is not None:
            os.rename(final, aside)  # between the two renames both exist, the old one under its hidden name
        os.rename(built, final)
        if aside is not None:
            remove_path(aside)
    else:
        os.replace(built, final)
    sync_folder(final.absolute().parent)


@contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path` (nothing there yet) for the block to write, as a file or a folder (a
    Zarr store), through whatever library; once the block is done, `publish` it as `path`. If the block raises,
    the temporary is removed and `path` is left as it was."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


@contextmanager
def atomic_folder(final):
    """Yield a fresh empty temporary folder beside `final` for the block to fill; once the block is done, the
    folder, its files synced, replaces or creates `final` whole (`publish`). If the block raises, the temporary
    folder is removed and `final` is left as it was."""
    with atomic_file(final) as tmp:
        tmp.mkdir()
        yield tmp


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` as the file `path`, whole or not at all (`atomic_file`); returns `path`."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "xb") as stream:
        stream.write(data)
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write `text` (UTF-8) as the file `path`, whole or not at all (`atomic_file`); returns `path`."""
    return atomic_write_bytes(path, text.encode())


def append_synced(path, text: str) -> None:
    """Append `text` to the file `path` and sync it to disk before returning, for a log that a killed run resumes
    from: it grows in place (rewriting it whole for each line would cost its length every time), and a line cut
    short by a kill is the reader's to drop."""
    with open(path, "a") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
