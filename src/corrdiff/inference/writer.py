"""Writing the ensemble file (layout: `corrdiff.ensemble_file`) one time at a time, so that a rerun can resume it.

- Every planned time has its slot from the start; after a time's fields are written, its flag in
  `generation_complete(time)` is set and the file is synced. A crash loses at most the time being written.
- The file records the fingerprint of its generation (`corrdiff.inference.fingerprint`). An existing file is
  resumed only when its fingerprint is this generation's; anything else there is refused, or with `replace`
  (the writer's own temporary files) started over.
- Nothing non-finite is written: a member with NaN or inf stops the run, naming the time and the channel.
- A full disk is an OutputError naming the file and saying "no space left"; freeing space and rerunning resumes.
- NetCDF: HDF5 that fails in the middle of a write (a full disk, a kill) can leave a file that still reads
  but no longer takes appends (`NetCDF: HDF error`). A marker `.NAME.writing` exists while a writer may have
  a write in flight; a rerun that finds it copies the readable, finite flagged times into a fresh file that
  replaces the old one, and goes on from there. Zarr needs no repair: its chunks are written atomically.
- `OverlappedWriter` writes time t in a background thread while the caller samples time t+1: at most one
  write in flight, its error raised by the next `write` or by `close`, the flag/sync order unchanged.
"""

import errno
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.locks import combine_locks, HDF5_LOCK, NETCDFC_LOCK

from corrdiff import ensemble_file
from corrdiff.ensemble_file import ENGINES, ENSEMBLE_DIMS, FIELD_DIMS, FLAG, regression_name
from corrdiff.errors import CorrdiffError, OutputError
from corrdiff.file_integrity import atomic_file, publish
from corrdiff.inference.fingerprint import Fingerprint

log = logging.getLogger(__name__)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
METADATA_BYTES = 16 << 20  # room HDF5 or Zarr may need beside one time's fields
# netCDF-C and HDF5 are not thread-safe, even across files, and netCDF4 releases the GIL in their calls: the
# writer's own netCDF4 calls take the lock xarray takes for its netCDF4 reads (e.g. of the inputs), in its order.
NETCDF_LOCK = combine_locks([NETCDFC_LOCK, HDF5_LOCK])


class EnsembleWriter:
    """Creates (or reopens, to resume) an ensemble file and writes one time slot at a time.

    `times` (time,) datetime64; `lat`, `lon` (y, x) degrees; `fingerprint`: this generation's. With `replace`,
    a file at `path` that is not this generation's is removed and started over (for temporary files only).
    `coords` and `grid_mapping` go to `ensemble_file.template` (`corrdiff.inference.context` makes them).
    """

    def __init__(self, path, times, members, lat, lon, channels, channel_attrs, global_attrs, fmt="netcdf", *,
                 fingerprint: Fingerprint, replace: bool = False, coords: dict | None = None,
                 grid_mapping: dict | None = None):
        self.path, self.fmt = Path(path), fmt
        self.times = np.asarray(times, dtype="datetime64[ns]")
        self.channels = list(channels)
        self.fingerprint = fingerprint
        self._layout = lambda: ensemble_file.template(self.times, members, lat, lon, self.channels, channel_attrs,
                                                      {**global_attrs, **fingerprint.attrs()}, coords=coords,
                                                      grid_mapping=grid_mapping)
        self._bytes_per_time = (members + 1) * len(self.channels) * int(np.size(lat)) * 4
        self._marker = marker_path(self.path)
        self._nc, self._failed = None, False
        self._complete = np.zeros(len(self.times), dtype=bool)
        if resumable(self.path, fmt, fingerprint, replace):
            if fmt == "netcdf" and self._marker.exists():
                self._repair()
        else:
            remove(self.path)
            self._create()
        if fmt == "netcdf":
            self._open_netcdf()
        self._complete = self.written()

    # --- the public interface ------------------------------------------------------------------------------
    def written(self) -> np.ndarray:
        """Boolean (time,) of the slots already complete."""
        if self._nc is not None:
            with NETCDF_LOCK:
                return np.asarray(self._nc[FLAG][:], dtype=bool)
        with xr.open_zarr(self.path, consolidated=False) as ds:
            return ds[FLAG].values.astype(bool)

    def write(self, index: int, ensemble: np.ndarray, mean: np.ndarray) -> None:
        """Write time slot `index`: ensemble (member, channel, y, x) and regression mean (channel, y, x), physical units.

        Raises OutputError, writing nothing, when a value is not finite; and when the disk is full.
        """
        self._refuse_nonfinite(index, ensemble, mean)
        try:
            if self._nc is not None:
                self._write_netcdf(index, ensemble, mean)
            else:
                self._write_zarr(index, ensemble, mean)
        except BaseException as err:
            self._failed = True  # the file may hold half a write: the marker stays, and a rerun repairs it
            if is_io_error(err):
                raise self._io_error(err, f"writing {_iso(self.times[index])}") from err
            raise
        self._complete[index] = True

    def close(self) -> None:
        """Close the file; after a failed write, errors closing it are left to the one already raised."""
        if self._nc is None:
            return
        try:
            with NETCDF_LOCK:
                self._nc.close()
        except (OSError, RuntimeError) as err:
            if not self._failed:  # else the write's error is already on its way up
                self._failed = True
                raise self._io_error(err, "closing it") from err
        finally:
            self._nc = None
            if not self._failed:
                self._marker.unlink(missing_ok=True)

    # --- writing -------------------------------------------------------------------------------------------
    def _write_netcdf(self, index, ensemble, mean) -> None:
        with NETCDF_LOCK:
            for c, name in enumerate(self.channels):
                self._nc[name][index] = ensemble[:, c].astype(np.float32)
                self._nc[regression_name(name)][index] = mean[c].astype(np.float32)
            self._nc.sync()  # the data reach the disk before the flag that declares them written
            self._nc[FLAG][index] = 1
            self._nc.sync()

    def _write_zarr(self, index, ensemble, mean) -> None:
        region = {"time": slice(index, index + 1)}
        fields = {}
        for c, name in enumerate(self.channels):
            fields[name] = (ENSEMBLE_DIMS, ensemble[None, :, c].astype(np.float32))
            fields[regression_name(name)] = (FIELD_DIMS, mean[None, c].astype(np.float32))
        xr.Dataset(fields).to_zarr(self.path, region=region, consolidated=False)
        xr.Dataset({FLAG: (("time",), np.ones(1, dtype="int8"))}).to_zarr(self.path, region=region, consolidated=False)

    def _refuse_nonfinite(self, index: int, ensemble: np.ndarray, mean: np.ndarray) -> None:
        found = first_nonfinite_field(ensemble, mean, self.channels)
        if found:
            what, name = found
            raise OutputError(f"{self.path}: {what} of {name!r} at {_iso(self.times[index])} came out NaN or infinite; "
                              "nothing of this time was written. The checkpoints or the input at this time may be "
                              "broken (try generate.precision=fp32, or more sampler.num_steps)")

    # --- creating, opening, repairing ----------------------------------------------------------------------
    def _create(self) -> None:
        try:
            ensemble_file.write(self._layout(), self.path, self.fmt)  # the file appears complete in layout, or not at all
        except (OSError, RuntimeError) as err:
            raise self._io_error(err, "creating it") from err

    def _open_netcdf(self) -> None:
        try:
            self._marker.touch()
            self._nc = netCDF4.Dataset(self.path, "a")
        except (OSError, RuntimeError) as err:
            raise self._io_error(err, "opening it to write") from err

    def _repair(self) -> None:
        """Replace the file by a fresh one holding its readable, finite flagged times (see the module's doc)."""
        names = [v for c in self.channels for v in (c, regression_name(c))]
        kept = 0
        try:
            with atomic_file(self.path) as fresh:
                ensemble_file.write(self._layout(), fresh, "netcdf")
                with netCDF4.Dataset(self.path, "r") as old, netCDF4.Dataset(fresh, "a") as new:
                    for index in np.flatnonzero(np.asarray(old[FLAG][:], dtype=bool)):
                        try:
                            fields = {name: np.ma.filled(old[name][index], np.nan) for name in names}
                        except (OSError, RuntimeError, IndexError):
                            continue  # unreadable: generated again
                        if all(np.isfinite(values).all() for values in fields.values()):
                            for name, values in fields.items():
                                new[name][index] = values
                            new[FLAG][index] = 1
                            kept += 1
        except (OSError, RuntimeError) as err:
            raise self._io_error(err, "repairing it after an interrupted write") from err
        self._marker.unlink(missing_ok=True)
        log.info(f"{self.path}: an earlier run stopped in the middle of a write; kept {kept} complete times")

    def _io_error(self, err: BaseException, doing: str) -> OutputError:
        done = f"{int(np.sum(self._complete))} of {len(self.times)} times are complete; "
        return io_error(self.path, err, doing, self._bytes_per_time, done)


class OverlappedWriter:
    """Writes the times of an `EnsembleWriter` in a background thread, one at a time, while the caller samples on.

    At most one write is in flight: `write` first waits for the previous one, so one time's ensemble waits in
    memory beside the one being sampled. The error of a background write (a full disk, a non-finite member,
    any OSError) is raised by the next `write` or by `close`, the very exception `EnsembleWriter.write` raises,
    and nothing is written after it. While a write is in flight only its thread touches the file (netCDF4 and
    HDF5 are not thread-safe): call nothing else of `writer` meanwhile. With `overlap=False` every write runs
    in the caller's thread. `on_written(index)` is called once time slot `index` is complete (a progress bar).
    """

    def __init__(self, writer: EnsembleWriter, overlap: bool = True,
                 on_written: Callable[[int], object] | None = None):
        self.writer = writer
        self._on_written = on_written or (lambda index: None)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corrdiff-writer") if overlap else None
        self._in_flight: Future | None = None
        self._failed = False

    def write(self, index: int, ensemble: np.ndarray, mean: np.ndarray) -> None:
        """Write time slot `index` as `EnsembleWriter.write` does, in the background when overlapping.

        `ensemble` (member, channel, y, x) and `mean` (channel, y, x) must not be changed afterwards: they are
        written after this returns. Raises the error of the previous write, if it failed, and writes nothing.
        """
        self._wait()
        if self._failed:  # the caller went on after the error: still nothing is written after a failed write
            raise OutputError(f"{self.writer.path}: an earlier write failed, so nothing more is written; rerun the "
                              "same command to resume")
        if self._pool is None:
            self._write(index, ensemble, mean)
        else:
            self._in_flight = self._pool.submit(self._write, index, ensemble, mean)

    def close(self) -> None:
        """Wait for the write in flight and close the file; raises that write's error, if it failed."""
        try:
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self.writer.close()  # after a failed write, errors of closing are left to that write's

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()  # re-raises the write's exception, here in the caller's thread

    def _write(self, index, ensemble, mean) -> None:
        try:
            self.writer.write(index, ensemble, mean)
        except BaseException:
            self._failed = True  # read by the caller's thread after the future (or the call) has raised
            raise
        self._on_written(index)


def first_nonfinite_field(ensemble: np.ndarray, mean: np.ndarray, channels) -> tuple[str, str] | None:
    """(what, channel) of the first channel whose regression mean (C, H, W) or members (members, C, H, W) hold a
    NaN or an infinity, `what` being "the regression mean" or "member(s) k, …"; None when all are finite."""
    for c, name in enumerate(channels):
        bad_members = np.flatnonzero(~np.isfinite(ensemble[:, c]).reshape(len(ensemble), -1).all(axis=1))
        if not np.isfinite(mean[c]).all():
            return "the regression mean", name
        if bad_members.size:
            return f"member{'s' if bad_members.size > 1 else ''} {', '.join(map(str, bad_members[:5]))}", name
    return None


def io_error(path: Path, err: BaseException, doing: str, needed_bytes: int = 0, done: str = "") -> OutputError:
    """The OutputError for an OSError or a netCDF RuntimeError (which carries no errno): a full disk, or else."""
    try:
        free = shutil.disk_usage(Path(path).absolute().parent).free
    except OSError:
        free = None
    if getattr(err, "errno", None) in DISK_FULL or (free is not None and free < needed_bytes + METADATA_BYTES):
        return OutputError(f"{path}: no space left on the device while {doing} ({_size(free)} free); "
                           f"{done}free some space and rerun the same command to resume")
    return OutputError(f"{path}: failed while {doing} ({type(err).__name__}: {err}); {done}rerun the same command "
                       "to resume")


def is_io_error(err: BaseException) -> bool:
    """An error of the file system or of netCDF/HDF5 (RuntimeError), not one of corrdiff's own."""
    return isinstance(err, (OSError, RuntimeError)) and not isinstance(err, CorrdiffError)


def resumable(path: Path, fmt: str, fingerprint: Fingerprint, replace: bool = False) -> bool:
    """Whether `path` holds this generation's ensemble, to resume; False when nothing is there or it is to be replaced.

    Raises OutputError naming the file when something else is there and `replace` is False.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return False
    found, why_not = recorded_fingerprint(path, fmt)
    if found is not None and found.digest == fingerprint.digest:
        return True
    if replace:
        return False
    if why_not.startswith("cannot be read") and marker_path(path).exists():
        log.warning(f"{path}: left unreadable by an interrupted run ({why_not}); starting it over")
        return False  # the marker says an earlier run of ours was writing it: nothing readable is lost
    if found is None:
        raise OutputError(f"{path} exists and {why_not}; it is left as it is: choose another --out, or pass "
                          "--overwrite to replace it")
    raise OutputError(f"{path} holds an ensemble made with other settings ({found.differences(fingerprint)}); "
                      "resuming it would mix the two: pass --overwrite to replace it, or choose another --out")


def _recorded_attrs(path: Path, fmt: str) -> tuple[dict, bool]:
    """(the global attributes, whether it has the completion flag) of the ensemble at `path`; what fails to open it
    is raised."""
    with xr.open_dataset(path, engine=ENGINES[fmt], decode_times=False, chunks=None,
                         **({"consolidated": False} if fmt == "zarr" else {})) as ds:
        return dict(ds.attrs), FLAG in ds


def recorded_fingerprint(path: Path, fmt: str) -> tuple[Fingerprint | None, str]:
    """The fingerprint the ensemble at `path` records, or None and why it has none."""
    try:
        attrs, has_flag = _recorded_attrs(path, fmt)
    except Exception as err:  # noqa: BLE001  (any file at all may be here; each library fails its own way)
        return None, f"cannot be read as a {fmt} ensemble ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if not has_flag:
        return None, f"is not a corrdiff ensemble (it has no {FLAG!r} variable)"
    found = Fingerprint.from_attrs(attrs)
    return found, "" if found else "records no fingerprint of its generation (an older corrdiff wrote it)"


def recorded_input_hashes(path: Path, fmt: str):
    """The input hashes (`ContentHashes`) an ensemble at `path` records; empty when there is none to read."""
    if not Path(path).exists():
        return Fingerprint.hashes_from_attrs({})
    try:
        attrs, _ = _recorded_attrs(path, fmt)
    except Exception:  # noqa: BLE001  (whatever is there, resumable() says what is wrong with it)
        attrs = {}
    return Fingerprint.hashes_from_attrs(attrs)


def marker_path(path: Path) -> Path:
    """The marker that exists while a NetCDF writer may have a write in flight."""
    return Path(path).with_name(f".{Path(path).name}.writing")


def overwrite_path(out: Path) -> Path:
    """Where `--overwrite` builds the new file: a hidden name beside `out`, renamed over it when complete. A fixed
    name, not a temporary one (`corrdiff.file_integrity.temporary_path`): every rank of a torchrun writes there, and
    an interrupted overwrite resumes it."""
    return Path(out).with_name(f".{Path(out).name}.new")


def check_not_a_folder(out: Path) -> None:
    """An OutputError when `out` is a folder other than a Zarr store (--overwrite never removes such a folder)."""
    out = Path(out)
    if out.is_dir() and not out.is_symlink() and not ensemble_file.is_zarr(out):
        raise OutputError(f"--out {out} is a folder, not a Zarr store; --overwrite does not replace folders: "
                          "choose another --out")


def replace(new: Path, out: Path) -> None:
    """Put the complete `new` in the place of `out` (`corrdiff.file_integrity.publish`: synced, then a rename; a
    Zarr store moves `out` aside first)."""
    publish(new, out)


def remove(path: Path) -> None:
    """Delete a file or a Zarr store, and a NetCDF file's marker; nothing when absent."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    marker_path(path).unlink(missing_ok=True)


def _iso(time) -> str:
    return str(np.datetime64(time, "s"))


def _size(n_bytes) -> str:
    if n_bytes is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
