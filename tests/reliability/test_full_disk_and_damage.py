"""No traceback on a full disk, a damaged file or statistics that do not fit (issue 22 item 6): one line, exit code 2,
and nothing half-written left behind.

1. `score --out` and `export --out` (a model package, or PhysicsNeMo files) on a disk that fills up: one line
   saying "no space left", and no file, temporary or half set of files where the output was to be. The disk is
   a 1 MiB tmpfs where the test may mount one (`disks.small_disk`), else ENOSPC injected at the write calls.
2. A compressed NetCDF file with flipped bytes: netCDF4 raises RuntimeError ("NetCDF: HDF error") or
   AttributeError ("NetCDF: Can't open HDF5 attribute") from lazily read coordinates and attributes, and a value
   decoded from damaged bytes may overflow; `data check` gives one line naming the file, never a traceback.
3. A statistics file whose number of means or stds is not its number of channels: one line naming the file and
   the counts (it was a broadcasting ValueError in `train`), and `data stats --overwrite` replaces it.
(`import physicsnemo --out` naming a file, `export --out` naming a file, and `train` with such statistics are
cases of the bad-input table, `test_bad_inputs.py`.)
"""

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from corrdiff.inference import model_package
from corrdiff.data import Normalization
from corrdiff.errors import DataError, OutputError
from corrdiff.evaluation import evaluate, write_scores
from tests.api_fixtures import trained  # noqa: F401  (trained: a fixture)
from tests.cli_runner import invoke, refused, succeeded
from tests.data import fixtures as data_fixtures, real_layouts
from tests.evaluation import evaluation_fixtures as fx
from tests.interop.physicsnemo_fixtures import imported_run
from tests.reliability.disks import fill, listing, no_space, partial_write_then_enospc, small_disk

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


# --- 1. a full disk -------------------------------------------------------------------------------------
def test_score_out_on_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    ens, truth, _ = fx.write_case(tmp_path, times=3, members=2, shape=(8, 8), variables=("u", "v"))
    with small_disk(tmp_path / "disk") as disk:
        if disk is None:  # no tmpfs here: netCDF's write stops half-way with ENOSPC
            real = xr.Dataset.to_netcdf

            def to_netcdf(self, path=None, *args, **kwargs):
                real(self, path, *args, **kwargs)
                partial_write_then_enospc(path, Path(path).read_bytes())

            monkeypatch.setattr(xr.Dataset, "to_netcdf", to_netcdf)
            disk = tmp_path / "disk"
        else:
            fill(disk, 8 << 10)  # the scores file is ~30 KiB
        out = disk / "scores.nc"
        line = refused(invoke("score", ens, "--truth", truth, "--out", out, "-q", "--spectra", "none"))
        assert f"{out}: no space left on the device while writing the scores" in line
        assert "free some space and run the command again" in line
        assert listing(disk) == []  # neither scores.nc nor its temporary
        result = evaluate(ens, truth, distributions=False)  # the library says the same
        with pytest.raises(OutputError, match="no space left on the device while writing the scores"):
            write_scores(result.scores, disk / "again.nc")  # (HDF5 keeps the failed file's name in this process)
        result.evaluation.close()
        assert listing(disk) == []


def test_export_of_a_package_on_a_full_disk_is_one_line_and_leaves_no_folder(trained, tmp_path, monkeypatch):
    folder, config = trained
    with small_disk(tmp_path / "disk") as disk:
        if disk is None:
            monkeypatch.setattr(model_package, "_write", partial_write_then_enospc)
            disk = tmp_path / "disk"
        else:
            fill(disk, 100 << 10)  # a package of the tiny run is ~400 KiB
        out = disk / "model"
        line = refused(invoke("export", folder / "run", "--config", config, "--out", out))
        assert f"{out}: no space left on the device while writing the model package" in line
        assert listing(disk) == []


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A run folder imported from the PhysicsNeMo fixtures: it exports to PhysicsNeMo (~520 KiB per network)."""
    out = tmp_path_factory.mktemp("imported") / "run"
    imported_run(out)
    return out


def test_export_for_physicsnemo_on_a_full_disk_leaves_no_half_set_of_files(imported, tmp_path, monkeypatch):
    with small_disk(tmp_path / "disk") as disk:
        if disk is None:  # the second .mdlus archive fills the disk
            real, entries = zipfile.ZipFile.writestr, []

            def writestr(self, name, data, *args, **kwargs):
                entries.append(name)
                if len(entries) > 3:
                    raise no_space()
                return real(self, name, data, *args, **kwargs)

            monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)
            disk = tmp_path / "disk"
        out = disk / "export"  # 1 MiB holds regression.mdlus, not diffusion.mdlus beside it
        line = refused(invoke("export", imported, "--format", "physicsnemo", "--out", out))
        assert f"{out}: no space left on the device while exporting for PhysicsNeMo" in line
        assert listing(disk) == []  # not regression.mdlus alone, nor a temporary


# --- 2. a damaged file ----------------------------------------------------------------------------------
def compressed_generic(folder: Path) -> Path:
    """The generic fixture's spec, its fine (target) file written compressed (zlib, shuffle): 2-D lat/lon read
    lazily, as WRF's XLAT/XLONG are."""
    spec = data_fixtures.write_generic(folder)
    fine = xr.load_dataset(folder / "fine.nc")
    fine.to_netcdf(folder / "fine.nc", encoding={v: {"zlib": True, "shuffle": True} for v in fine.variables})
    return spec


def chunk_position(data: bytes, values: np.ndarray, level: int = 4) -> int:
    """Where the one HDF5 chunk of `values` starts in the file's bytes `data`: HDF5's shuffle filter (byte k of
    every element together) then deflate is zlib's stream of the shuffled bytes (xarray's default level 4)."""
    little = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"))
    shuffled = np.frombuffer(little.tobytes(), np.uint8).reshape(-1, little.itemsize).T.tobytes()
    return data.find(zlib.compress(shuffled, level))


def test_a_damaged_coordinate_chunk_is_one_line_naming_the_file(tmp_path):
    """A flipped byte in the compressed latitudes, which are read lazily after the file is opened: netCDF4's
    RuntimeError came out of `data check` as a traceback."""
    spec = compressed_generic(tmp_path)
    good = (tmp_path / "fine.nc").read_bytes()
    with xr.open_dataset(tmp_path / "fine.nc") as fine:
        start = chunk_position(good, fine["XLAT"].values)
    assert start > 0, "the latitudes' chunk is not where HDF5's shuffle + deflate would put it"
    damaged = bytearray(good)
    damaged[start + 100] ^= 0xFF
    (tmp_path / "fine.nc").write_bytes(bytes(damaged))
    line = refused(invoke("data", "check", spec))
    assert line == (f"error: targets: reading {tmp_path / 'fine.nc'} failed (RuntimeError: NetCDF: HDF error): the "
                    "file is damaged; download or write it again")


def test_a_time_decoded_from_damaged_bytes_is_one_line_naming_the_file(tmp_path):
    """WRF's XTIME with a flipped bit in one value's exponent: xarray decodes it lazily, when the times are read,
    and 2e37 minutes overflowed (OverflowError in `data check`, the issue's traceback)."""
    real_layouts.write_era5_cds(tmp_path / "era5")
    wrfout, = real_layouts.write_wrfout(tmp_path / "wrf", per_file=len(real_layouts.WRF_TIMES))
    spec = real_layouts.write_doc_spec(tmp_path, "wrf")
    minutes = ((real_layouts.WRF_TIMES - real_layouts.WRF_TIMES[0]) / np.timedelta64(1, "m")).to_numpy()
    data = bytearray(wrfout.read_bytes())
    start = data.find(minutes.astype("<f4").tobytes())
    assert start > 0, "XTIME's values are not in the file as float32"
    data[start + 4 * 3 + 3] ^= 0x3F  # XTIME[3]: 540 minutes becomes 2e37
    wrfout.write_bytes(bytes(data))
    line = refused(invoke("data", "check", spec))
    assert line == (f"error: targets: reading {wrfout} failed (OverflowError: time values outside range of 64 bit "
                    "signed integers): the file is damaged; download or write it again")


def test_a_compressed_netcdf_with_flipped_bytes_is_one_line_never_a_traceback(tmp_path):
    spec = compressed_generic(tmp_path)
    good = (tmp_path / "fine.nc").read_bytes()
    refusals = []
    for position in np.linspace(len(good) // 4, len(good) - 1, 24).astype(int):  # past the superblock
        damaged = bytearray(good)
        damaged[position] ^= 0xFF
        (tmp_path / "fine.nc").write_bytes(bytes(damaged))
        result = invoke("data", "check", spec)
        if result.exit_code != 0:  # a byte nothing reads leaves the file as good as it was
            refusals.append(refused(result))
    assert refusals and all("fine.nc" in line for line in refusals), refusals


# bytes of ../shared/realdata/wrf_tip_d1.nc (blob a9fa40e4) whose flip made `data check` end in a traceback
WRF_DAMAGE = {14293: "AttributeError: NetCDF: Can't open HDF5 attribute", 287307: "RuntimeError: NetCDF: HDF error"}


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
@pytest.mark.parametrize("position", sorted(WRF_DAMAGE))
def test_a_damaged_real_wrf_file_is_one_line_naming_it(tmp_path, position):
    damaged = bytearray((REALDATA / "wrf_tip_d1.nc").read_bytes())
    damaged[position] ^= 0xFF
    (tmp_path / "wrf_tip_d1.nc").write_bytes(bytes(damaged))
    (tmp_path / "wrf_tip_d2.nc").symlink_to(REALDATA / "wrf_tip_d2.nc")
    (tmp_path / "spec.yaml").write_text(
        "inputs:  {paths: wrf_tip_d1.nc, variables: [t2m], rename: {t2m: T2}}\n"
        "targets: {paths: wrf_tip_d2.nc, variables: [t2m], rename: {t2m: T2}}\n"
        "splits:  {train: {start: 2005-09-21T00, end: 2005-09-21T00}}\n")
    line = refused(invoke("data", "check", tmp_path / "spec.yaml"))
    assert f"inputs: reading {tmp_path / 'wrf_tip_d1.nc'} failed ({WRF_DAMAGE[position]})" in line
    assert "the file is damaged; download or write it again" in line


# --- 3. statistics that do not fit their channels -------------------------------------------------------
@pytest.mark.parametrize("key", ["mean", "std", "transforms"])
def test_statistics_with_a_value_missing_are_one_line_and_replaced_by_data_stats(tmp_path, key):
    spec = data_fixtures.write_generic(tmp_path)
    succeeded(invoke("data", "stats", spec, "-q"))
    path = tmp_path / "stats.json"
    raw = json.loads(path.read_text())
    raw["input"][key].pop()
    path.write_text(json.dumps(raw))
    message = rf"stats.json: not a corrdiff statistics file \(4 channels .*, but {key} holds 3 values\)"
    with pytest.raises(DataError, match=message + ".*corrdiff data stats --overwrite"):
        Normalization.load(path)
    line = refused(invoke("data", "check", spec))
    assert f"{path}: not a corrdiff statistics file" in line and f"{key} holds 3 values" in line
    succeeded(invoke("data", "stats", spec, "-q", "--overwrite"))  # what the line says to do works
    assert len(Normalization.load(path).input.std) == 4


def test_statistics_with_a_std_of_zero_are_one_line(tmp_path):
    spec = data_fixtures.write_generic(tmp_path)
    succeeded(invoke("data", "stats", spec, "-q"))
    raw = json.loads((tmp_path / "stats.json").read_text())
    raw["target"]["std"][1] = 0.0
    (tmp_path / "stats.json").write_text(json.dumps(raw))
    line = refused(invoke("data", "check", spec))
    assert "stats.json: not a corrdiff statistics file (std must be positive, got [" in line
