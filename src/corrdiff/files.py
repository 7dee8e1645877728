"""A cheap stand-in for a file's contents in fingerprints: its size and modification time."""

import os
from pathlib import Path


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
