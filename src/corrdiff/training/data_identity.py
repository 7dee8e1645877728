"""What makes a run's training data the same data wherever it lies: its spec's contents and its files' contents.

A run records this fingerprint (`data_fingerprint` in its saved config). A run folder copied or moved elsewhere,
with its data, then resumes although the spec's path changed: the data are compared by fingerprint, not by the
path string. Files are hashed by contents (SHA-256), with a cache in the run folder keyed by path, size and
modification time (`data_hashes.json`), so a resume reads again only what changed. Above `CONTENT_LIMIT` bytes in
all, files enter by relative name and size instead (hashing terabytes at every new run costs hours); the
normalisation statistics, which every resume also compares, are computed from the values themselves.
"""

import json
import logging
from pathlib import Path

from corrdiff.data.spec import DatasetSpec
from corrdiff.file_integrity import ContentHashes, is_url, sha256_bytes, sha256_file, size_and_mtime

log = logging.getLogger(__name__)
CONTENT_LIMIT = 4 * 1024 ** 3  # bytes of data files hashed by contents; above, by name and size
CACHE = "data_hashes.json"


def data_files(spec: DatasetSpec) -> list[Path]:
    """The spec's input, target and static files (URLs left out: a cloud store is named by its URL in the spec)."""
    files = []
    for source, what in ((spec.inputs, "inputs"), (spec.targets, "targets"), (spec.static, "static")):
        if source is not None:
            files += [f for f in spec.files(source, what) if not is_url(f)]
    return files


def data_fingerprint(spec: DatasetSpec, run_dir: Path) -> str:
    """The SHA-256 of the spec's contents and of its files' (or, above `CONTENT_LIMIT`, their names and sizes)."""
    files = data_files(spec)
    root = Path(spec.source_file).parent if spec.source_file else Path(".")
    stats = [size_and_mtime(f) for f in files]  # one walk of each store, for the sizes and the hash cache
    cache_path = Path(run_dir) / CACHE
    hashes = ContentHashes(_read_cache(cache_path))
    by_contents = sum(size for size, _ in stats) <= CONTENT_LIMIT
    entries = [f"{_relative(f, root)} {stat[0]} {hashes.sha256(f, stat) if by_contents else ''}"
               for f, stat in zip(files, stats)]
    spec_text = sha256_file(spec.source_file) if spec.source_file else ""
    if by_contents:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(hashes.recorded(files), sort_keys=True))
        except OSError as err:  # a cache only: the next resume reads the files again
            log.info(f"{cache_path}: not written ({err})")
    return sha256_bytes("\n".join([spec_text, *entries]))


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _read_cache(path: Path) -> dict:
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}
