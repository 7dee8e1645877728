"""`corrdiff.locks`: one run at a time into one result; a lock left by a process that is gone is taken over with a
warning; under torchrun only rank 0 takes it."""

import logging
import os

import pytest
import torch

from corrdiff import locks
from corrdiff.distributed import DistInfo
from corrdiff.errors import OutputError

DEAD_PID = 2 ** 22 + 12345  # above Linux's largest PID (pid_max is at most 2^22): no process has it


def test_a_second_holder_is_refused_naming_the_first_and_the_lock_is_gone_after(tmp_path):
    out = tmp_path / "e.nc"
    lock_file = locks.lock_file_of(out)
    assert lock_file == tmp_path / ".e.nc.lock"
    with locks.for_output(out):
        assert lock_file.read_text() == locks.holder_line() + "\n"
        # A second open file of the same lock, as another process would have (flock locks open files).
        with pytest.raises(OutputError, match=rf"--out {out} is being written by PID {os.getpid()} on .*choose "
                                              "another --out"):
            with locks.for_output(out):
                pass
        assert lock_file.read_text() == locks.holder_line() + "\n"  # the refused one changed nothing
    assert not lock_file.exists()
    with locks.for_output(out):  # released
        pass


def test_two_names_of_one_output_share_its_lock(tmp_path):
    (tmp_path / "runs").mkdir()
    os.symlink(tmp_path / "runs", tmp_path / "link")
    assert locks.lock_file_of(tmp_path / "link" / "e.nc") == locks.lock_file_of(tmp_path / "runs" / "e.nc")


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "e.nc"
    locks.lock_file_of(out).write_text(f"PID {DEAD_PID} on somewhere\n")  # written, but no longer flock-ed
    with caplog.at_level(logging.WARNING, logger="corrdiff"):
        with locks.for_output(out):
            assert locks.lock_file_of(out).read_text().startswith(f"PID {os.getpid()} ")
    assert f"taking over the lock of PID {DEAD_PID} on somewhere, which ended without releasing it" in caplog.text
    assert not locks.lock_file_of(out).exists()


def test_only_rank_0_takes_the_lock(tmp_path):
    out = tmp_path / "e.nc"
    rank = lambda r: DistInfo(rank=r, world_size=1, local_rank=r, device=torch.device("cpu"))
    with locks.for_output(out, rank(1)):
        assert not locks.lock_file_of(out).exists()
    with locks.for_output(out, rank(0)):
        assert locks.lock_file_of(out).exists()
