"""What corrdiff creates through temporary names gets the permissions the user's umask gives."""

import os
import tempfile
from pathlib import Path

from corrdiff.checkpoint import replace_text
from corrdiff.file_integrity import as_umask_allows, umask


def test_temporary_folders_and_files_take_the_umasks_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        assert umask() == 0o027
        folder = as_umask_allows(Path(tempfile.mkdtemp(dir=tmp_path)))
        fd, name = tempfile.mkstemp(dir=tmp_path)
        os.close(fd)
        assert folder.stat().st_mode & 0o777 == 0o750 and as_umask_allows(Path(name)).stat().st_mode & 0o777 == 0o640
        replace_text(tmp_path / "config.yaml", "a: 1\n")
        assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
