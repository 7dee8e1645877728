"""What a write that failed leaves: one line saying why (a full disk said as such), and nothing it made.

`write_failed` is the line, `write_errors` turns a block's file-system errors into it, and `whole_or_nothing`
also removes what the block made in a folder only the command writes. netCDF4 reports a full disk without an
errno: as RuntimeError("NetCDF: HDF error") when a write or the closing fails, and as PermissionError when not even
the file can be made; below `NEARLY_FULL_BYTES` free beside the output (in a folder one may write in), such an
error is taken for a full disk.
"""

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from corrdiff.errors import CorrdiffError, OutputError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NEARLY_FULL_BYTES = 16 << 20


def write_failed(path, err: BaseException, doing: str) -> OutputError:
    """The one-line OutputError of a write of `path` that failed with `err` (an OSError, or netCDF/HDF5's
    RuntimeError): "no space left" on a full disk, else the error itself."""
    folder = Path(path).absolute().parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    nearly_full = free is not None and free < NEARLY_FULL_BYTES and (
        isinstance(err, RuntimeError) or (isinstance(err, PermissionError) and os.access(folder, os.W_OK)))
    if getattr(err, "errno", None) in DISK_FULL or nearly_full:
        room = f"{free / 2**20:.1f} MiB free" if free is not None else "free space unknown"
        return OutputError(f"{path}: no space left on the device while {doing} ({room}); nothing was left "
                           "behind: free some space and run the command again")
    text = " ".join(str(err).split())
    return OutputError(f"{path}: failed while {doing} ({type(err).__name__}: {text}); nothing was left behind")


def is_write_error(err: BaseException) -> bool:
    """An error of the file system or of netCDF/HDF5 (which raise RuntimeError), not one of corrdiff's own."""
    return isinstance(err, (OSError, RuntimeError)) and not isinstance(err, CorrdiffError)


@contextmanager
def write_errors(path, doing: str):
    """Run a block that writes `path`: a file system's error (a full disk) comes out as `write_failed`'s line."""
    try:
        yield Path(path)
    except BaseException as err:
        if is_write_error(err):
            raise write_failed(path, err, doing) from None
        raise


@contextmanager
def whole_or_nothing(folder, doing: str):
    """Run a block that writes into `folder`: when it fails, remove what it made there (the folder itself if it
    was not there, else the entries that were not there before, temporaries included), and raise a file
    system's error (a full disk) as `write_failed`'s one line. Files it replaced cannot be brought back. Only for
    a folder no other process writes meanwhile (one the command holds the lock of)."""
    folder = Path(folder)
    existed = folder.is_dir()
    before = set(os.listdir(folder)) if existed else set()
    try:
        with write_errors(folder, doing):
            yield folder
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            for name in set(os.listdir(folder)) - before:
                entry = folder / name
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else \
                    entry.unlink(missing_ok=True)
        raise
