"""Real NCEP GRIB2 files as downloaded (../shared/realdata/, skipped when absent): U and V packed in one
multi-field message must both be read, and a missing variable's error must list the file's fields briefly."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from corrdiff.data import grib
from corrdiff.errors import DataError

REALDATA = Path(__file__).parents[2].parent / "shared" / "realdata"
GFS = REALDATA / "gfs.t12z.pgrbf120.2p5deg.grib2"
NAM = REALDATA / "nam.t00z.awp21100.tm00.grib2"
eccodes = pytest.importorskip("eccodes")


def field_count(path: Path) -> int:
    """Fields in the file as eccodes counts them with multi-field support on (cfgrib's own way)."""
    eccodes.codes_grib_multi_support_on()
    count = 0
    try:
        with open(path, "rb") as stream:
            eccodes.codes_grib_multi_support_reset_file(stream)
            while (handle := eccodes.codes_grib_new_from_file(stream)) is not None:
                eccodes.codes_release(handle)
                count += 1
    finally:
        eccodes.codes_grib_multi_support_off()
    return count


@pytest.mark.parametrize("path", [GFS, NAM], ids=["gfs", "nam"])
def test_inventory_holds_every_field_with_v_at_every_level_of_u(path):
    if not path.exists():
        pytest.skip(f"{path} is not here")
    messages = grib.inventory(path)
    assert len(messages) == len({(m.short_name, m.type_of_level, m.level, m.step_type) for m in messages})
    with open(path, "rb") as stream:  # every field of the file is one of the inventory's distinct ones
        total = field_count(path)
    assert total > eccodes.codes_count_in_file(open(path, "rb"))  # the file packs several fields per message
    assert len(messages) <= total and total - len(messages) < 0.05 * total  # repeats only (the same field twice)
    levels = lambda short_name, kind: {m.level for m in messages if m.short_name == short_name
                                       and m.type_of_level == kind}
    assert levels("u", "isobaricInhPa") and levels("v", "isobaricInhPa") == levels("u", "isobaricInhPa")
    assert levels("10v", "heightAboveGround") == levels("10u", "heightAboveGround") == {10.0}


def test_gfs_v10_and_v850_are_read_as_cfgrib_reads_them():
    if not GFS.exists():
        pytest.skip(f"{GFS} is not here")
    opened = grib.open_variables([GFS], {"v10": "v10", "v850": "v@850", "u850": "u@850"}, None, "inputs")
    reference = xr.open_dataset(GFS, engine="cfgrib", backend_kwargs={"indexpath": "", "filter_by_keys": {
        "typeOfLevel": "isobaricInhPa", "shortName": "v"}})
    ds, name = opened["v850"]
    np.testing.assert_array_equal(ds[name].values.squeeze(), reference["v"].sel(isobaricInhPa=850).values)
    ds, name = opened["v10"]
    assert np.isfinite(ds[name].values).all() and ds[name].values.std() > 1  # a real wind field, m s-1


def test_a_missing_variable_lists_the_file_on_a_few_short_lines():
    if not GFS.exists():
        pytest.skip(f"{GFS} is not here")
    with pytest.raises(DataError) as raised:
        grib.open_variables([GFS], {"x": "no_such_field"}, None, "inputs")
    lines = str(raised.value).splitlines()
    assert "'no_such_field' not found" in lines[0] and 2 <= len(lines) <= 8
    assert max(len(line) for line in lines) < 600
    assert lines[1].startswith("  heightAboveGround: ") and "v10 (10v)" in lines[1]
    assert lines[2].startswith("  isobaricInhPa: ") and " v@(26 levels)" in lines[2]
    assert lines[-1].startswith("  and ") and "maxWind" in lines[-1]
