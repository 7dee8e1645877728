"""The fingerprint of an ensemble file: a SHA-256 of everything that determines its values.

A file records the digest (global attribute `corrdiff_fingerprint`) and its readable ingredients
(`corrdiff_fingerprint_ingredients`, JSON). A rerun may resume a file only when its own fingerprint is the
same, so that no file mixes members made with other weights, settings, seeds, inputs or times.

Input files enter by their name and contents (SHA-256), not their folder or modification time: a `touch` changes
nothing, an edit of the same size within a second is seen, and inputs moved elsewhere with the file resume it. So
that this stays cheap, a file records its inputs' hashes by path, size and modification time
(`corrdiff_input_hashes`), and a rerun reads again only the inputs that changed (`corrdiff.file_integrity.ContentHashes`).

Left out on purpose: what only reorders float32 arithmetic (device, channels_last, compile, CUDA graphs,
member_batch, the number of processes), so that a run may be resumed on another machine; where and how
the file is written (path, format); and --allow-mismatch, which changes no value (the checkpoints' SHA-256s
are in) and is recorded in the file's attributes.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corrdiff.file_integrity import ContentHashes, is_url, sha256_bytes, sha256_file

FINGERPRINT = "corrdiff_fingerprint"
INGREDIENTS = "corrdiff_fingerprint_ingredients"
INPUT_HASHES = "corrdiff_input_hashes"  # {path: [size, mtime_ns, sha256]}: the hash cache, not in the digest
LISTED_FILES = 20  # input files listed one by one in the ingredients; more are summarised by a hash


@dataclass(frozen=True)
class Fingerprint:
    """What determines an ensemble's values: `ingredients` (flat, JSON-able) and their SHA-256 `digest`."""

    ingredients: dict
    input_hashes: dict = field(default_factory=dict, compare=False)  # ContentHashes.recorded of the inputs

    @property
    def digest(self) -> str:
        return sha256_bytes(_canonical(self.ingredients))

    def attrs(self) -> dict[str, str]:
        """The global attributes that record it (and the inputs' hash cache)."""
        cache = {INPUT_HASHES: json.dumps(self.input_hashes, sort_keys=True)} if self.input_hashes else {}
        return {FINGERPRINT: self.digest, INGREDIENTS: _canonical(self.ingredients), **cache}

    @staticmethod
    def hashes_from_attrs(attrs) -> ContentHashes:
        """The inputs' hash cache a file records (empty when it records none or it cannot be read)."""
        try:
            known = json.loads(str(attrs.get(INPUT_HASHES, "{}")))
        except ValueError:
            known = {}
        return ContentHashes(known if isinstance(known, dict) else {})

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
                           version: str, tf32: bool = False, input_member=None,
                           hashes: ContentHashes | None = None, coherence: dict | None = None) -> Fingerprint:
    """The fingerprint of one generation: checkpoints, sampler, seed, members, precision, patches, inputs, times.

    `tf32`: CUDA ran float32 convolutions in TF32 (`allow_tf32`), a lower precision rather than a reordering; kept
    only when true, so that the fingerprints of files made without it stay what they were; the same for the
    sampler's `arithmetic`, kept only when it is not "edm", and `input_member` (the ensemble input member read: a
    number, "mean" or "all: <labels>"), kept only when one is chosen; and `coherence` ({"method", "rho"} of members
    as time series, `corrdiff.inference.coherence`), kept only when the members are not independent. `hashes`: the input hashes an earlier run
    recorded (`Fingerprint.hashes_from_attrs`), to skip reading unchanged inputs."""
    hashes = hashes if hashes is not None else ContentHashes()
    times = np.asarray(times, dtype="datetime64[s]")
    iso = [str(t) for t in times]
    ingredients = {
        "corrdiff_version": version,
        "regression_checkpoint_sha256": regression_sha256,
        "diffusion_checkpoint_sha256": diffusion_sha256,
        **{f"sampler.{k}": _json_exact(v) for k, v in sampler.items() if (k, v) != ("arithmetic", "edm")},
        "seed": int(seed),
        "members": int(members),
        "channels": list(channels),
        "bf16": bool(bf16),
        **({"tf32": True} if tf32 else {}),
        **({"input_member": str(input_member)} if input_member is not None else {}),
        **{f"coherence.{k}": v for k, v in (coherence or {}).items()},
        "patch_shape": list(patch_shape) if patch_shape else None,
        "patch_overlap": list(patch_overlap) if patch_shape else None,  # no patches: the overlap is unused
        "times": f"{len(iso)} from {iso[0]} to {iso[-1]}" if iso else "none",
        "times_sha256": sha256_bytes("\n".join(iso)),
        "grid_sha256": sha256_bytes(np.asarray(lat, "<f8").tobytes() + np.asarray(lon, "<f8").tobytes()),
        "data_spec_sha256": sha256_file(spec_file) if spec_file else None,
        **_describe_files(input_files, hashes),
    }
    return Fingerprint(ingredients, hashes.recorded(input_files))


def _describe_files(paths: list[Path], hashes: ContentHashes) -> dict:
    """Name and contents' SHA-256 of each input (its folder and modification time do not enter); a URL as it is
    (hashing a cloud store could mean millions of requests)."""
    entries = [str(p) if is_url(p) else f"{Path(p).name} (sha256 {hashes.sha256(Path(p))})" for p in paths]
    if len(entries) <= LISTED_FILES:
        return {"input_files": entries}
    return {"input_files": f"{len(entries)} files from {entries[0]} to {entries[-1]}",
            "input_files_sha256": sha256_bytes("\n".join(entries))}


def _json_exact(value):
    """A JSON value that reads back equal (inf and nan as text)."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _canonical(ingredients: dict) -> str:
    return json.dumps(ingredients, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "…"
