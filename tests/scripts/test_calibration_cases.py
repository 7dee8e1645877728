"""The calibration study's cases (scripts/calibration_cases.py) are datasets corrdiff reads, built as documented."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from corrdiff.data import PairedFields

REPO = Path(__file__).parents[2]
WRF = REPO.parent / "shared" / "realdata" / "wrf_tip_d2.nc"


def cases_module():
    spec = importlib.util.spec_from_file_location("calibration_cases", REPO / "scripts" / "calibration_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not WRF.exists(), reason="../shared/realdata/wrf_tip_d2.nc is not here")
def test_wrf_case_crops_real_t2_into_samples_with_block_mean_inputs(tmp_path):
    cases_module().wrf_case(WRF, tmp_path)
    t2 = xr.open_dataset(WRF)["T2"].values
    fine, coarse = xr.open_dataset(tmp_path / "fine.nc")["T2"], xr.open_dataset(tmp_path / "coarse.nc")["T2"]
    assert fine.shape[1:] == (32, 32) and coarse.shape[1:] == (10, 10)
    # the first sample: the crop at (time 0, row 4, column 4), inputs the 4 x 4 means of the 40 x 40 around it
    np.testing.assert_array_equal(fine[0], t2[0, 4:36, 4:36])
    np.testing.assert_allclose(coarse[0], t2[0, :40, :40].reshape(10, 4, 10, 4).mean(axis=(1, 3)), rtol=1e-6)
    fields = PairedFields(tmp_path / "spec.yaml")
    sizes = {split: len(fields.times(split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 648, "validation": 90, "test": 90}
    # the test crops are the second time's, east of every training crop by more than 10 columns
    last = fine.sel(time=fields.times("test")[-1])
    assert any(np.array_equal(last, t2[1, y:y + 32, 228:260]) for y in range(4, 145, 8))
