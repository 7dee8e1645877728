"""Crash-safe writing (`corrdiff.file_integrity`): a write is whole or leaves the old contents as they were, it
reaches the disk before the rename that publishes it, it leaves no temporary behind, what it creates takes the
umask's permissions, and no other module of corrdiff writes through temporary names or syncs by hand."""

import ast
import errno
import os
import re
from pathlib import Path

import pytest

import corrdiff
from corrdiff.file_integrity import append_synced, atomic_file, atomic_folder, atomic_write_bytes, \
    atomic_write_text, publish, temporary_path, umask

OLD, NEW = b"old contents\n", b"new contents, longer than the old\n"
TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.tmp-[0-9a-f]{8}")


class Interrupted(Exception):
    """What the writer callbacks of these tests raise half-way through."""


def write_through_a_library(path: Path, data: bytes, fail: bool = False) -> None:
    """As xarray's to_netcdf or torch.save write through `atomic_file`: the library opens the path itself."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as stream:
            stream.write(data[: len(data) // 2])
            if fail:
                raise Interrupted
            stream.write(data[len(data) // 2:])


WRITERS = {
    "atomic_write_bytes": atomic_write_bytes,
    "atomic_write_text": lambda path, data: atomic_write_text(path, data.decode()),
    "atomic_file": write_through_a_library,
}


@pytest.fixture
def synced(monkeypatch):
    """The order of what reaches the disk: ("fsync", path) for each os.fsync, ("rename", source, target) for each
    os.replace and os.rename, paths as the process saw them when it called."""
    events = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(real):
        def renaming(source, target):
            events.append(("rename", os.path.abspath(source), os.path.abspath(target)))
            return real(source, target)
        return renaming

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", rename(real_replace))
    monkeypatch.setattr(os, "rename", rename(real_rename))
    return events


# --- files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("existed", [True, False])
def test_a_write_gives_exactly_the_contents_synced_before_the_rename(tmp_path, synced, writer, existed):
    target = tmp_path / "out.bin"
    if existed:
        target.write_bytes(OLD)
    WRITERS[writer](target, NEW)
    assert target.read_bytes() == NEW
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary left
    (_, temporary), (_, source, renamed), (_, folder) = synced
    assert TEMPORARY_NAME.fullmatch(Path(temporary).name)["name"] == "out.bin"
    assert Path(temporary).parent == tmp_path.resolve()  # beside the target: the rename stays on one filesystem
    assert (source, renamed) == (temporary, str(target))  # the file is synced, then renamed
    assert folder == str(tmp_path.resolve())  # and the rename synced


@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_that_fails_midway_leaves_the_old_contents_and_no_temporary(tmp_path, monkeypatch, writer):
    target = tmp_path / "out.bin"
    target.write_bytes(OLD)
    if writer == "atomic_file":
        with pytest.raises(Interrupted):
            write_through_a_library(target, NEW, fail=True)
    else:  # the data are written, then the disk fills up while they are synced
        def full_disk(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full_disk)
        with pytest.raises(OSError, match="No space left"):
            WRITERS[writer](target, NEW)
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_write_that_fails_leaves_no_file_where_there_was_none(tmp_path):
    with pytest.raises(Interrupted):
        write_through_a_library(tmp_path / "out.bin", NEW, fail=True)
    assert os.listdir(tmp_path) == []


def test_temporary_names_are_hidden_beside_the_target_and_never_twice_the_same(tmp_path):
    names = {temporary_path(tmp_path / "scores.nc") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.parent == tmp_path and TEMPORARY_NAME.fullmatch(name.name)["name"] == "scores.nc"


def test_append_synced_grows_the_file_in_place_and_syncs_each_line(tmp_path, synced):
    log = tmp_path / "rows.jsonl"
    log.write_text("header\n")
    append_synced(log, "row 1\n")
    append_synced(log, "row 2\n")
    assert log.read_text() == "header\nrow 1\nrow 2\n"
    assert synced == [("fsync", str(log.resolve()))] * 2


# --- folders -----------------------------------------------------------------------------------------------
def fill(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


NEW_FILES = {"model.safetensors": NEW, "model.json": b"{}", "store/c/0": b"chunk"}


@pytest.mark.parametrize("existed", [True, False])
def test_atomic_folder_creates_or_replaces_the_folder_whole(tmp_path, synced, existed):
    final = tmp_path / "step-000010"
    if existed:
        fill(final, {"model.safetensors": OLD, "stale.json": b"[]"})
    with atomic_folder(final) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == final.parent
        fill(tmp, NEW_FILES)
    assert contents(final) == NEW_FILES  # nothing of the old folder is left in it
    assert os.listdir(tmp_path) == ["step-000010"]  # neither the temporary nor the old folder
    renames = [i for i, event in enumerate(synced) if event[0] == "rename"]
    synced_before = {event[1] for event in synced[: renames[0]]}
    built = synced[renames[-1]][1]
    assert {f"{built}/{name}" for name in NEW_FILES} <= synced_before  # every file on disk before the rename
    assert synced[-1] == ("fsync", str(tmp_path.resolve()))


def test_atomic_folder_that_fails_midway_leaves_the_old_folder_and_no_temporary(tmp_path):
    final = tmp_path / "package"
    fill(final, {"model.json": OLD})
    with pytest.raises(Interrupted):
        with atomic_folder(final) as tmp:
            fill(tmp, {"model.json": NEW})
            raise Interrupted
    assert contents(final) == {"model.json": OLD}
    assert os.listdir(tmp_path) == ["package"]


def test_a_store_written_through_atomic_file_replaces_a_store(tmp_path):
    """A Zarr store is a folder a library writes: `atomic_file` gives it a path where nothing is yet."""
    store = tmp_path / "ensemble.zarr"
    fill(store, {"zarr.json": OLD})
    with atomic_file(store) as tmp:
        assert not tmp.exists()
        fill(tmp, NEW_FILES)
    assert contents(store) == NEW_FILES and os.listdir(tmp_path) == ["ensemble.zarr"]


def test_publish_puts_a_built_folder_in_place(tmp_path):
    built, final = tmp_path / "cache.partial", tmp_path / "cache"
    fill(built, NEW_FILES)
    publish(built, final)
    assert contents(final) == NEW_FILES and os.listdir(tmp_path) == ["cache"]


def test_what_is_written_takes_the_umasks_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        assert umask() == 0o027
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        with atomic_folder(tmp_path / "package") as tmp:
            (tmp / "model.json").write_text("{}")
        assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o640
        assert (tmp_path / "package").stat().st_mode & 0o777 == 0o750
        assert (tmp_path / "package" / "model.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


# --- one home ----------------------------------------------------------------------------------------------
ROOT = Path(corrdiff.__file__).parent
HOME = ROOT / "file_integrity.py"
HAND_MADE_NAME = re.compile(r"\.(tmp|partial|new|old|repair|bak)\b")
# What other modules may do by hand, and why: (module, what) -> reason.
JUSTIFIED = {
    ("training/regression_cache.py", "'regression_mean.partial'"):
        "a resumable build: the cache is built under a fixed name so that a rerun finds the rows a killed build "
        "wrote and goes on from there; it is put in place by file_integrity.publish",
    ("inference/writer.py", "'.new'"):
        "`generate --overwrite` builds the new ensemble under a fixed name: every torchrun rank writes into it and "
        "an interrupted overwrite resumes it; it is put in place by file_integrity.publish",
}


def hand_written_safety(path: Path) -> list[str]:
    """What `path` does that is file_integrity's: os.fsync/os.replace/os.rename, hashlib or tempfile, string
    literals (docstrings aside) that name a temporary or partial file."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ("fsync", "replace", "rename"):
            found.append(f"os.{node.attr}")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in ("hashlib", "tempfile")]
        elif isinstance(node, ast.ImportFrom) and node.module in ("hashlib", "tempfile"):
            found.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and HAND_MADE_NAME.search(node.value):
            found.append(repr(node.value))
    return found


def test_no_other_module_syncs_renames_hashes_or_names_temporaries_by_hand():
    found = {(path.relative_to(ROOT).as_posix(), what) for path in ROOT.rglob("*.py") if path != HOME
             for what in hand_written_safety(path)}
    assert found - JUSTIFIED.keys() == set(), "use corrdiff.file_integrity instead"
    assert JUSTIFIED.keys() - found == set(), "a justified exception is gone: remove it from JUSTIFIED"


def test_the_source_check_finds_what_it_looks_for(tmp_path):
    """The checker itself, on a module that does all of it by hand."""
    module = tmp_path / "by_hand.py"
    module.write_text('"""A docstring may say .tmp."""\nimport hashlib\nimport os\n\n\n'
                      'def save(path, data):\n    tmp = path.with_name(f".{path.name}.tmp")\n'
                      '    tmp.write_bytes(data)\n    os.fsync(0)\n    os.replace(tmp, path)\n')
    assert sorted(hand_written_safety(module)) == ["'.tmp'", "hashlib", "os.fsync", "os.replace"]
