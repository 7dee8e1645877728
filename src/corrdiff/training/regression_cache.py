"""The regression mean μ(y) of every training sample, computed once by the frozen regression network and kept on disk.

Diffusion training needs μ of each sample to form the residual r = x − μ(y). Recomputing it costs a full-domain
regression forward per sample per step, which dominates patched training (a 64² patch step against a 448²
regression pass). The cache computes μ once over the training split and training reads it back.

Layout, in the diffusion run folder:
  regression_mean/mean.npy     (N, C_out, H, W) float32, normalised, row i the sample at `times[i]` (a .npy
                               read as a memory map, so a worker reads only the rows it needs)
  regression_mean/cache.json   the fingerprint it was built for; written last
float32, not bf16: bf16 keeps 8 significant bits (relative error up to 2^-9), a bias on the residual that the
cache must not add; the cache equals the recomputed μ exactly.

A cache is used only when its fingerprint is the present one: the regression checkpoint's SHA-256, the
training times, grid, channels, input normalisation, the data spec and input files (path, size, modified time)
and the normalised inputs of three samples. Anything else is rebuilt. It is built in `regression_mean.partial/`
(with `progress.json`, the rows done), renamed into place only when complete: a killed build is never taken for
a cache, and the next build with the same fingerprint resumes where it stopped.

μ is computed in fp32 (no autocast, as at generation), `batch` samples per call: on one device, the same batch
size gives the same values whatever the samples batched with it, so with the training micro-batch size the
cache holds exactly the μ that training would recompute (another batch size differs in the last bits).
"""

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from corrdiff.data import PairedDataset, Sample
from corrdiff.errors import TrainingError
from corrdiff.file_integrity import atomic_write_text, is_url, publish, sha256_bytes, size_and_mtime, sync
from corrdiff.progress import bar as progress_bar

log = logging.getLogger(__name__)

FORMAT = 1
FOLDER, PARTIAL = "regression_mean", "regression_mean.partial"
MEAN_FILE, META_FILE, PROGRESS_FILE = "mean.npy", "cache.json", "progress.json"
DTYPE = np.float32
SAVE_EVERY_S = 10.0  # how often a build records the rows it has written (what a killed build keeps)


def _file_entry(path: Path | str) -> str:
    """`path size mtime_ns`; a folder (a Zarr store) sums its files' sizes and takes their latest time; a URL as it
    is (listing a cloud store could mean millions of requests)."""
    if is_url(path):
        return path
    path = Path(path)
    size, mtime = size_and_mtime(path)
    return f"{path.absolute()} {size} {mtime}"


def fingerprint(dataset: PairedDataset, regression_sha256: str) -> dict:
    """What determines the cached values: a flat JSON-able dict (its `digest` key is the SHA-256 of the rest)."""
    height, width = np.shape(dataset.lat)
    stats = dataset.stats.input
    times = np.asarray(dataset.times, dtype="datetime64[ns]").astype("<i8")
    n = len(dataset)
    probes = sorted({0, n // 2, n - 1}) if n else []
    ingredients = {
        "format": FORMAT,
        "regression_sha256": regression_sha256,
        "shape": [n, len(dataset.target_channels), height, width],
        "dtype": np.dtype(DTYPE).name,
        "times_sha256": sha256_bytes(times.tobytes()),
        "grid_sha256": sha256_bytes(np.asarray(dataset.lat, "<f8").tobytes()
                                    + np.asarray(dataset.lon, "<f8").tobytes()),
        "input_channels": list(dataset.input_channels),
        "input_stats_sha256": sha256_bytes(json.dumps([list(stats.names), stats.mean.tolist(), stats.std.tolist(),
                                                       [str(t) for t in stats.transforms]])),
        "probe_inputs_sha256": sha256_bytes(b"".join(
            dataset[i].input.numpy().astype("<f4").tobytes() for i in probes)),
    }
    spec = getattr(dataset, "spec", None)
    if spec is not None:  # a DownscalingDataset: its spec file and input files
        files = spec.files(spec.inputs, "inputs") + (spec.files(spec.static, "static") if spec.static else [])
        ingredients["input_files_sha256"] = sha256_bytes("\n".join(_file_entry(f) for f in files))
        ingredients["spec_sha256"] = sha256_bytes(Path(spec.source_file).read_bytes()) if spec.source_file else None
    return ingredients | {"digest": sha256_bytes(json.dumps(ingredients, sort_keys=True))}


def cache_bytes(dataset: PairedDataset) -> int:
    """Size of the cache of `dataset` on disk, bytes."""
    height, width = np.shape(dataset.lat)
    return len(dataset) * len(dataset.target_channels) * height * width * np.dtype(DTYPE).itemsize


def fits_on_disk(folder: Path, dataset: PairedDataset) -> tuple[bool, str]:
    """(whether what the cache still needs fits in the free space of `folder`'s disk, with 10% to spare; a sentence)."""
    folder.mkdir(parents=True, exist_ok=True)
    held = sum(p.stat().st_blocks * 512 for p in (folder / FOLDER / MEAN_FILE, folder / PARTIAL / MEAN_FILE)
               if p.exists())  # what an earlier build already wrote (a fresh .npy is sparse)
    needed, free = max(cache_bytes(dataset) - held, 0), shutil.disk_usage(folder).free
    why = f"the regression-mean cache needs {needed / 2**30:.2f} GiB, {folder} has {free / 2**30:.2f} GiB free"
    return needed * 1.1 <= free, why


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def complete(folder: Path, expected: dict) -> bool:
    """Whether `folder/regression_mean` is a complete cache with the `expected` fingerprint."""
    meta = _read_json(folder / FOLDER / META_FILE)
    if meta is None or meta.get("digest") != expected["digest"]:
        return False
    try:
        mean = np.load(folder / FOLDER / MEAN_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return list(mean.shape) == expected["shape"] and mean.dtype == DTYPE


def _stale_reason(folder: Path, expected: dict) -> str:
    meta = _read_json(folder / FOLDER / META_FILE)
    if meta is None:
        return "no cache yet" if not (folder / FOLDER).exists() else "the cache is incomplete"
    changed = [k for k in sorted(expected) if k != "digest" and meta.get(k) != expected[k]]
    return f"the cache was built for another {', '.join(changed) or 'file'}" if changed else "the cache is unreadable"


@torch.no_grad()
def regression_means(regression: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """μ(y) (batch, C_out, H, W) float32 of normalised inputs (batch, C_in, H, W), in fp32 whatever the autocast.

    The one place that computes μ for training, with or without the cache, so both see the same values.
    """
    with torch.autocast(inputs.device.type, enabled=False):
        return regression(inputs).to(torch.float32)


def build(folder: Path, dataset: PairedDataset, regression: torch.nn.Module, expected: dict, device,
          batch: int = 8, progress: bool = True) -> Path:
    """Compute μ of every sample into `folder/regression_mean`, `batch` per call (resuming a partial build of the
    same fingerprint); its folder."""
    partial, final = folder / PARTIAL, folder / FOLDER
    state = _read_json(partial / PROGRESS_FILE)
    done = state["done"] if state and state.get("digest") == expected["digest"] else 0
    if done == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        mean = np.lib.format.open_memmap(partial / MEAN_FILE, mode="w+", dtype=DTYPE, shape=tuple(expected["shape"]))
    else:
        mean = np.load(partial / MEAN_FILE, mmap_mode="r+")
        log.info(f"resuming the regression-mean cache in {partial} at sample {done} of {len(dataset)}")
    regression.eval()
    last_saved = time.monotonic()
    with progress_bar(total=len(dataset), initial=done, desc="regression mean", unit="sample", disable=not progress) as bar:
        for start in range(done, len(dataset), batch):
            stop = min(start + batch, len(dataset))
            # Always `batch` samples per call (the last ones repeated to fill the last call): a convolution's
            # algorithm, hence its rounding, depends on the batch size, and training recomputes μ in micro-batches.
            rows = [min(i, stop - 1) for i in range(start, start + batch)]
            inputs = torch.stack([dataset[i].input for i in rows]).to(device)
            mean[start:stop] = regression_means(regression, inputs)[: stop - start].cpu().numpy()
            bar.update(stop - start)
            # Recorded rows survive a kill from here on.
            if time.monotonic() - last_saved >= SAVE_EVERY_S or stop == len(dataset):
                mean.flush()
                atomic_write_text(partial / PROGRESS_FILE, json.dumps({"digest": expected["digest"], "done": stop}))
                last_saved = time.monotonic()
    mean.flush()
    del mean
    sync(partial / MEAN_FILE)  # the rows on disk before cache.json declares them complete
    atomic_write_text(partial / META_FILE, json.dumps(expected, indent=1))
    (partial / PROGRESS_FILE).unlink()
    shutil.rmtree(final, ignore_errors=True)  # a stale cache; killed after this, the next run renames or rebuilds
    # Built under its own fixed name, not a temporary one, so that a killed build is found and resumed.
    publish(partial, final)
    return final


def ensure(folder: Path, dataset: PairedDataset, regression: torch.nn.Module, regression_sha256: str, device,
           is_main: bool = True, batch: int = 8, progress: bool = True) -> "CachedMeanDataset":
    """`dataset` with its cached μ, built first (by the main process; the others wait for it) if not up to date."""
    expected = fingerprint(dataset, regression_sha256)
    if is_main and not complete(folder, expected):
        log.info(f"building the regression-mean cache in {folder / FOLDER} ({_stale_reason(folder, expected)}; "
                 f"{cache_bytes(dataset) / 2**30:.2f} GiB)")
        build(folder, dataset, regression, expected, device, batch, progress)
    while not complete(folder, expected):  # other processes: the main one builds it (torchrun stops all if it fails)
        time.sleep(2.0)
    return CachedMeanDataset(dataset, folder / FOLDER / MEAN_FILE)


class CachedMeanDataset(torch.utils.data.Dataset):
    """A training dataset whose samples carry their cached μ: input (C_in + C_out, H, W) is y then μ(y).

    Everything else (times, grid, channels, stats, length) is the wrapped dataset's. Picklable for DataLoader
    workers: the memory map is opened in each process on first use.
    """

    def __init__(self, dataset: PairedDataset, mean_file: Path):
        self.dataset, self.mean_file = dataset, Path(mean_file)
        self._mean = None
        shape = np.load(self.mean_file, mmap_mode="r").shape
        if shape[0] != len(dataset):
            raise TrainingError(f"{self.mean_file}: {shape[0]} samples cached, the training split has {len(dataset)}; "
                                f"delete {self.mean_file.parent} to rebuild it")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        if self._mean is None:
            self._mean = np.load(self.mean_file, mmap_mode="r")
        sample = self.dataset[index]
        mean = torch.from_numpy(np.array(self._mean[index]))
        return Sample(torch.cat([sample.input, mean]), sample.target, sample.time)

    def __getattr__(self, name):  # the PairedDataset properties of the wrapped dataset
        if name in ("dataset", "_mean", "mean_file"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getstate__(self):
        return self.__dict__ | {"_mean": None}
