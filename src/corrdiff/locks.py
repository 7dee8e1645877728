"""One run at a time into one result: the lock every command that writes a shared result takes.

`train` locks its step's run folder (`<run_dir>/<step>/train.lock`); `generate`, `tune`, `experiment` and
`export` lock their output (`for_output`: a hidden `.<name>.lock` beside it). A second run into the same result
is refused at once, naming the first one's PID and host; it never waits, and never writes.

The lock is `flock`'s on the lock file: the system releases it when its process ends, however it ends (even by
SIGKILL), so a killed run never blocks the next one. The file also says who holds it (`PID 123 on host`), for
the refusal; a file that still names a holder but is not locked was left by a process that ended without
releasing it, and is taken over with a warning. The holder removes the file when it is done.
Under torchrun only rank 0 takes the lock, and every rank stops when it is refused.
"""

import contextlib
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from corrdiff.distributed import broadcast_flag, DistInfo
from corrdiff.errors import CorrdiffError, OutputError

log = logging.getLogger(__name__)
BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def holder_line() -> str:
    """What a lock file says about this process: `PID 123 on host`."""
    return f"PID {os.getpid()} on {socket.gethostname()}"


@contextlib.contextmanager
def exclusive(lock_file, refuse: Callable[[str], CorrdiffError], info: DistInfo | None = None):
    """Hold `lock_file` for the body; raise `refuse(holder)` (holder: "PID 123 on host") if another process holds it.

    `info`: the process group of a torchrun run: rank 0 takes the lock and all ranks raise together."""
    lock_file, handle, holder = Path(lock_file), None, None
    if info is None or info.is_main:
        handle, holder = _take(lock_file)
    if broadcast_flag(holder is not None, info) if info is not None else holder is not None:
        raise refuse(holder or "another process")
    try:
        yield
    finally:
        if handle is not None:
            _release(lock_file, handle)


def _take(lock_file: Path):
    """(open file holding the lock, None), or (None, the holder's line) when another process holds it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock_file, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in BUSY:  # e.g. a filesystem without locks: go on, as a run without a lock would
                log.warning(f"could not lock {lock_file} ({err}); make sure no other run writes there")
                return handle, None
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            return None, holder
        if _identity(lock_file) != _identity(handle.fileno()):
            handle.close()  # its holder removed the file as we opened it: lock the one now there
            continue
        handle.seek(0)
        left = handle.read().strip()
        if left:
            log.warning(f"{lock_file}: taking over the lock of {left}, which ended without releasing it")
        handle.seek(0)
        handle.truncate(0)
        handle.write(holder_line() + "\n")
        handle.flush()
        return handle, None


def _identity(path_or_fd) -> tuple[int, int] | None:
    try:
        found = os.stat(path_or_fd)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _release(lock_file: Path, handle) -> None:
    """Remove the lock file while still holding it (whoever opened it meanwhile sees it gone and retries), then
    unlock."""
    try:
        if _identity(lock_file) == _identity(handle.fileno()):
            lock_file.unlink()
    except OSError:
        pass  # a lock file that cannot be removed is taken over by the next run
    finally:
        handle.close()


def lock_file_of(out) -> Path:
    """The lock file of an output: `.<name>.lock` beside it, links resolved (two names of one output share it)."""
    real = Path(os.path.realpath(Path(out).expanduser()))
    return real.with_name(f".{real.name}.lock")


def for_output(out, info: DistInfo | None = None, option: str = "--out"):
    """Hold the lock of the output `out` (`lock_file_of`) while writing it; an OutputError naming the other run's
    PID if one is writing it already."""
    lock_file = lock_file_of(out)
    return exclusive(lock_file, lambda holder: OutputError(
        f"{option} {out} is being written by {holder} (lock file {lock_file}); two runs into one output would mix "
        f"their results: wait for that run to end or stop it, or choose another {option}"), info)
