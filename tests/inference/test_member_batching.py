"""Members per denoiser call: as many as fit, and half as many after an out-of-memory, with the same result."""

import importlib
import logging

import numpy as np
import pytest
import torch
import xarray as xr

from corrdiff.errors import OutputError
from corrdiff.inference.member_batching import fitting_batch, MemberBatching
from tests.inference.test_generate import ensemble, run_dir, run_generate  # noqa: F401 (fixtures)

sampler_module = importlib.import_module("corrdiff.diffusion.sampler")  # where generation calls sample_ensemble


def test_the_batch_is_what_fits_the_free_memory_within_one_and_all_members():
    assert fitting_batch(free_bytes=10 * 2**30, per_member_bytes=2**30, members=32) == 8  # 80% of 10 GiB
    assert fitting_batch(free_bytes=10 * 2**30, per_member_bytes=2**30, members=4) == 4
    assert fitting_batch(free_bytes=2**20, per_member_bytes=2**30, members=4) == 1


def test_out_of_memory_halves_the_batch_and_gives_the_same_members(run_dir, ensemble, tmp_path, monkeypatch,
                                                                   caplog):
    real = sampler_module.sample_ensemble
    sizes = []

    def small_memory(*args, **kwargs):
        batch = args[6] if len(args) > 6 else kwargs.get("batch_size")
        sizes.append(batch)
        if batch is None or batch > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(sampler_module, "sample_ensemble", small_memory)
    with caplog.at_level(logging.WARNING, logger="corrdiff"):
        out = run_generate(run_dir, tmp_path / "small.nc")
    assert sizes[:3] == [3, 1, 1] and set(sizes[2:]) == {1}  # halved once (3 -> 1), then kept
    assert "out of memory with 3 members at once; retrying with 1" in caplog.text
    with xr.open_dataset(out) as small, xr.open_dataset(ensemble) as whole:
        # The same members, up to float32 round-off of convolutions at another batch size.
        np.testing.assert_allclose(small["u"].values, whole["u"].values, rtol=1e-5, atol=1e-5)


def test_out_of_memory_with_one_member_is_an_error_that_says_what_to_do():
    def never_fits(size):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(OutputError, match=r"one member at a time; use patches \(generate.patch_shape\)"):
        MemberBatching(2, 4, torch.device("cpu")).run(never_fits)
