"""The fingerprint of an ensemble file: a SHA-256 of everything that determines its values.

A file records the digest (global attribute `corrdiff_fingerprint`) and its readable ingredients
(`corrdiff_fingerprint_ingredients`, JSON). A rerun may resume a file only when its own fingerprint is the
same, so that no file mixes members made with other weights, settings, seeds, inputs or times.

Left out on purpose: what only reorders float32 arithmetic (device, channels_last, compile, CUDA graphs,
member_batch, the number of processes), so that a run may be resumed on another machine; where and how
the file is written (path, format); and --allow-mismatch, which changes no value (the checkpoints' SHA-256s
are in) and is recorded in the file's attributes.
"""

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corrdiff.files import size_and_mtime

FINGERPRINT = "corrdiff_fingerprint"
INGREDIENTS = "corrdiff_fingerprint_ingredients"
LISTED_FILES = 20  # input files listed one by one in the ingredients; more are summarised by a hash


@dataclass(frozen=True)
class Fingerprint:
    """What determines an ensemble's values: `ingredients` (flat, JSON-able) and their SHA-256 `digest`."""

    ingredients: dict

    @property
    def digest(self) -> str:
        return _sha256(_canonical(self.ingredients))

    def attrs(self) -> dict[str, str]:
        """The global attributes that record it."""
        return {FINGERPRINT: self.digest, INGREDIENTS: _canonical(self.ingredients)}

    @classmethod
    def from_attrs(cls, attrs) -> "Fingerprint | None":
        """The fingerprint a file records; None when it records none (not written by this corrdiff)."""
        if FINGERPRINT not in attrs or INGREDIENTS not in attrs:
            return None
        try:
            return cls(json.loads(str(attrs[INGREDIENTS])))
        except ValueError:
            return None

    def differences(self, new: "Fingerprint", most: int = 4) -> str:
        """`key: old → new` for the ingredients that differ (at most `most`), for an error message."""
        keys = sorted(set(self.ingredients) | set(new.ingredients))
        changed = [k for k in keys if self.ingredients.get(k) != new.ingredients.get(k)]
        shown = [f"{k}: {_short(self.ingredients.get(k))} → {_short(new.ingredients.get(k))}" for k in changed[:most]]
        more = f"; and {len(changed) - most} more" if len(changed) > most else ""
        return "; ".join(shown) + more if shown else "the fingerprints differ"


def generation_fingerprint(*, regression_sha256: str, diffusion_sha256: str, sampler: dict, seed: int, members: int,
                           channels, bf16: bool, patch_shape, patch_overlap, times: np.ndarray, lat: np.ndarray,
                           lon: np.ndarray, input_files: list[Path], spec_file: Path | None,
                           version: str, tf32: bool = False) -> Fingerprint:
    """The fingerprint of one generation: checkpoints, sampler, seed, members, precision, patches, inputs, times.

    `tf32`: CUDA ran float32 convolutions in TF32 (`allow_tf32`), a lower precision rather than a reordering; kept
    only when true, so that the fingerprints of files made without it stay what they were. The same for the
    sampler's `arithmetic`, kept only when it is not "edm"."""
    times = np.asarray(times, dtype="datetime64[s]")
    iso = [str(t) for t in times]
    ingredients = {
        "corrdiff_version": version,
        "regression_checkpoint_sha256": regression_sha256,
        "diffusion_checkpoint_sha256": diffusion_sha256,
        **{f"sampler.{k}": _plain(v) for k, v in sampler.items() if (k, v) != ("arithmetic", "edm")},
        "seed": int(seed),
        "members": int(members),
        "channels": list(channels),
        "bf16": bool(bf16),
        **({"tf32": True} if tf32 else {}),
        "patch_shape": list(patch_shape) if patch_shape else None,
        "patch_overlap": list(patch_overlap) if patch_shape else None,  # no patches: the overlap is unused
        "times": f"{len(iso)} from {iso[0]} to {iso[-1]}" if iso else "none",
        "times_sha256": _sha256("\n".join(iso)),
        "grid_sha256": _sha256(np.asarray(lat, "<f8").tobytes() + np.asarray(lon, "<f8").tobytes()),
        "data_spec_sha256": _file_sha256(spec_file) if spec_file else None,
        **_describe_files(input_files),
    }
    return Fingerprint(ingredients)


def _describe_files(paths: list[Path]) -> dict:
    """Path, size and modification time of each input (hashing their contents would cost a read of every input)."""
    entries = [_file_entry(Path(p)) for p in paths]
    if len(entries) <= LISTED_FILES:
        return {"input_files": entries}
    return {"input_files": f"{len(entries)} files from {entries[0]} to {entries[-1]}",
            "input_files_sha256": _sha256("\n".join(entries))}


def _file_entry(path: Path) -> str:
    """`path (N bytes, modified T)`; a folder (a Zarr store) counts every file in it."""
    path = path.absolute()
    size, mtime_ns = size_and_mtime(path)
    modified = dt.datetime.fromtimestamp(mtime_ns // 1000 / 1e6, dt.timezone.utc).isoformat()
    return f"{path} ({size} bytes, modified {modified})"


def _plain(value):
    """A JSON value that reads back equal (inf and nan as text)."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _canonical(ingredients: dict) -> str:
    return json.dumps(ingredients, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()  # a spec is a small YAML file
