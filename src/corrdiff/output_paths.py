"""Where a command may write: never over one of its own inputs, never over something of another kind.

Every command that writes a file or folder (`score --out`, `report --out`, `baseline interp|rf --out`,
`data stats`, `data coarsen --out`) checks its output here *before* the long work starts:

1. an output that is one of the command's inputs — the same path, the same file through a symbolic link or
   a hard link (same device and inode), a path inside an input store (a Zarr folder), or a folder that holds
   an input — is refused, whatever the flags;
2. an output whose folder cannot be made (a file is in the way) is refused; missing folders are created;
3. an output that already exists is replaced only with `--overwrite`, and only when it is an earlier output
   of the same command (a corrdiff scores file, report folder, baseline file, statistics file); anything else
   is left alone and the command stops, naming it.

Callers say what their kind of output is (`kind`, a phrase) and how to recognise one (`is_kind`). The
module knows nothing of file formats, so both `corrdiff.data` and `corrdiff.evaluation` can use it.
"""

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from corrdiff.errors import OutputError
from corrdiff.files import is_url


def _real(path) -> Path:
    """The absolute path with every symbolic link along it resolved (the path need not exist)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _same_file(a: Path, b: Path) -> bool:
    """Whether a and b are one file or folder: same resolved path, or same device and inode (hard links)."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def clash(out, source) -> str | None:
    """How writing `out` would touch the input `source` ("is", "is inside", "holds"), or None."""
    out, source = Path(out), Path(source)
    if _same_file(out, source):
        return "is"
    real_out, real_source = _real(out), _real(source)
    if real_out.is_relative_to(real_source):
        return "is inside"
    if real_source.is_relative_to(real_out):
        return "holds"
    return None


def check_not_an_input(out, inputs: dict[str, Iterable], option: str = "--out") -> None:
    """Refuse `out` when it is, is inside, or holds one of `inputs` ({role: paths}, e.g. {"truth": [...]})."""
    for role, paths in inputs.items():
        for source in paths:
            if source is None or is_url(source):  # stores by URL (corrdiff.data.remote) are never written here
                continue
            relation = clash(out, source)
            if relation is not None:
                where = "" if relation == "is" else f" {relation} "
                detail = f"{option} {out} is {role} {source}" if relation == "is" else \
                    f"{option} {out}{where}{role} {source}"
                raise OutputError(f"{detail}: this command never writes over its own inputs; "
                                  "choose another output path")


def check_replaceable(out, kind: str, is_kind: Callable[[Path], bool], overwrite: bool,
                      option: str = "--out") -> None:
    """Refuse an existing `out` unless `overwrite` is given and it is an earlier output of this `kind`."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not is_kind(out):
        raise OutputError(f"{option} {out} exists and is not {kind}; it is left as it is: choose another path, "
                          "or move it away yourself")
    if not overwrite:
        raise OutputError(f"{option} {out} exists ({kind}); pass --overwrite to replace it, or choose another path")


def check_folder(out, option: str = "--out") -> None:
    """Refuse `out` when the folder it goes in cannot be made: a file stands where one of its folders would be.
    (Missing folders are fine: commands create them.)"""
    for parent in Path(out).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{option} {out}: {parent} is a file, not a folder; choose another path")
            return


def check_output(out, inputs: dict[str, Iterable], kind: str, is_kind: Callable[[Path], bool],
                 overwrite: bool, option: str = "--out") -> Path:
    """The checks above (inputs first: --overwrite never makes writing over an input acceptable); returns `out`."""
    check_not_an_input(out, inputs, option)
    check_folder(out, option)
    check_replaceable(out, kind, is_kind, overwrite, option)
    return Path(out)


def spec_files(spec) -> list[Path]:
    """The files a dataset spec (`corrdiff.data.DatasetSpec`) reads: the spec itself and its stores."""
    files = [spec.source_file] if getattr(spec, "source_file", None) else []
    for what in ("inputs", "targets", "static"):
        source = getattr(spec, what, None)
        if source is not None:
            files += spec.files(source, what)
    if getattr(spec, "grid", None):
        files.append(spec.resolve(spec.grid))
    return files
