"""Where a command may write: never over one of its own inputs, never over something of another kind.

Every command that writes a file or folder checks its output here *before* it writes anything: `generate`,
`tune`, `experiment`, `export`, `import physicsnemo`, `score`, `report`, `case`, `baseline`, `data stats` and
`data coarsen`. Each lists what it reads ({role: paths}: checkpoints, run folders, model packages, the run
config, the dataset spec and its data files or Zarr stores), and:

1. an output that is one of the command's inputs, lies inside one (a checkpoint folder, a run folder, a model
   package, a Zarr store) or holds one is refused, whatever the flags. Paths are compared resolved, so a
   symbolic link anywhere along either path counts, and by device and inode, so a hard link to an input, or to
   a file inside an input folder, counts too;
2. an output whose folder cannot be made (a file is in the way) is refused; missing folders are created;
3. an output that already exists is replaced only with `--overwrite`, and only when it is an earlier output
   of the same command (a corrdiff scores file, report folder, baseline file, statistics file); anything else
   is left alone and the command stops, naming it.

Callers say what their kind of output is (`kind`, a phrase) and how to recognise one (`is_kind`). The
module knows nothing of file formats, so both `corrdiff.data` and `corrdiff.evaluation` can use it. Two runs
into one output are kept apart by `corrdiff.locks`.
"""

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from corrdiff.errors import DataError, OutputError
from corrdiff.file_integrity import is_url


def _real(path) -> Path:
    """The absolute path with every symbolic link along it resolved (the path need not exist)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _identity(path) -> tuple[int, int] | None:
    """(device, inode) of what `path` names, links followed; None when it does not exist."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    return found.st_dev, found.st_ino


def _above(path: Path) -> set[tuple[int, int]]:
    """The identities of the existing folders above `path` (its own name not included)."""
    return {identity for parent in Path(path).absolute().parents if (identity := _identity(parent))}


def _holds_file(folder: Path, identity: tuple[int, int]) -> bool:
    """Whether a file under `folder` has this (device, inode): a hard link to it elsewhere shares them."""
    for root, _, names in os.walk(folder):
        if any(_identity(Path(root) / name) == identity for name in names):
            return True
    return False


class _Output:
    """An output path, resolved and identified once, to compare with each input (`relation`)."""

    def __init__(self, out):
        self.path, self.real = Path(out), _real(out)
        self.identity = _identity(out)
        self.above = _above(out) | _above(self.real)
        # A file with several names may be a hard link to a file inside an input folder.
        self.linked = self.identity if self.path.is_file() and os.stat(self.path).st_nlink > 1 else None

    def relation(self, source) -> str | None:
        """How writing this output would touch `source` ("is", "is inside", "holds", "is a hard link into"), or
        None."""
        source = Path(source)
        real_source, identity = _real(source), _identity(source)
        if real_source == self.real or (identity is not None and identity == self.identity):
            return "is"
        if self.real.is_relative_to(real_source) or (identity is not None and identity in self.above):
            return "is inside"
        if real_source.is_relative_to(self.real) or (self.identity is not None and self.path.is_dir()
                                                     and self.identity in _above(source) | _above(real_source)):
            return "holds"
        if self.linked is not None and source.is_dir() and _holds_file(source, self.linked):
            return "is a hard link into"
        return None


def clash(out, source) -> str | None:
    """How writing `out` would touch the input `source` ("is", "is inside", "holds", "is a hard link into"), or
    None: by resolved path (symbolic links) and by device and inode (hard links)."""
    return _Output(out).relation(source)


def check_not_an_input(out, inputs: dict[str, Iterable], option: str = "--out") -> None:
    """Refuse `out` when it is, is inside, holds or is a hard link into one of `inputs` ({role: paths})."""
    output = _Output(out)
    for role, paths in inputs.items():
        for source in paths:
            if source is None or is_url(source):  # stores by URL (corrdiff.data.remote) are never written here
                continue
            relation = output.relation(source)
            if relation is not None:
                raise OutputError(f"{option} {out} {relation} {role} {source}: this command never writes over its "
                                  "own inputs; choose another output path")


def empty_or_written_by(path, wrote_it: Callable[[Path], bool]) -> bool:
    """Whether `path` is an empty folder, or a folder that `wrote_it` recognises as a command's own output."""
    path = Path(path)
    if not path.is_dir():
        return False
    return not any(path.iterdir()) or wrote_it(path)


def check_earlier_output(out, kind: str, is_kind: Callable[[Path], bool], overwrite: bool,
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
    check_earlier_output(out, kind, is_kind, overwrite, option)
    return Path(out)


def make_folder(out, option: str = "--out") -> None:
    """Create the folder `out` goes in; an OutputError naming it when it cannot be made."""
    folder = Path(out).absolute().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{option} {out}: cannot create its folder {folder} ({err}); choose another {option}") from None


SPEC_ROLES = {"inputs": "a file of the spec's inputs", "targets": "a file of the spec's targets",
              "static": "a file of the spec's static fields"}


def spec_inputs(spec) -> dict[str, list[Path]]:
    """What a dataset spec (`corrdiff.data.DatasetSpec`) reads, by role: the spec itself, the files or Zarr stores of
    its inputs, targets and static fields, and its grid file. A source whose files cannot be listed (a glob that
    matches nothing) is left out: the command that reads it says what is wrong."""
    found = {"the dataset spec": [spec.source_file] if getattr(spec, "source_file", None) else []}
    for what, role in SPEC_ROLES.items():
        source = getattr(spec, what, None)
        if source is not None:
            try:
                found[role] = spec.files(source, what)
            except DataError:  # e.g. targets that a new forecast does without
                continue
    if getattr(spec, "grid", None):
        found["the spec's grid file"] = [spec.resolve(spec.grid)]
    return found


def spec_files(spec) -> list[Path]:
    """Every file `spec_inputs` names, in one list."""
    return [path for paths in spec_inputs(spec).values() for path in paths]
