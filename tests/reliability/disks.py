"""A disk with no room left, for the tests of what a command leaves behind when the disk fills up.

`small_disk(folder)` mounts a 1 MiB tmpfs at `folder` where this process may (root, with the mount capability):
the kernel's own ENOSPC then comes through every library (netCDF-C, HDF5, zipfile, plain writes) as it does on a
real disk. `fill(folder, free)` leaves `free` bytes. Where mounting is not allowed, `small_disk` gives None and
the test injects ENOSPC at the write calls of the library it exercises (`partial_write_then_enospc`): the
same error, raised after part of the file is written.
"""

import contextlib
import errno
import os
import subprocess
from pathlib import Path

SIZE = "1m"


@contextlib.contextmanager
def small_disk(folder: Path):
    """`folder` on a fresh 1 MiB tmpfs (unmounted at the end), or None where this process may not mount one."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(folder)], capture_output=True).returncode == 0
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, free: int) -> None:
    """Fill the disk of `folder` until about `free` bytes are left."""
    stat = os.statvfs(folder)
    available = stat.f_bavail * stat.f_frsize
    with open(folder / ".filler", "wb") as filler:
        filler.write(b"\0" * max(available - free, 0))


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def partial_write_then_enospc(path, data: bytes) -> None:
    """What a write of `data` to `path` does on a disk that fills up half-way: half the bytes, then ENOSPC."""
    Path(path).write_bytes(data[: len(data) // 2])
    raise no_space()


def listing(folder: Path) -> list[str]:
    """Every path under `folder` (relative), the filler left out."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != ".filler")
