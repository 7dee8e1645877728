"""Untrusted `.mdlus` files are bounded before anything is allocated: archives that inflate far beyond their size,
and an args.json that describes a network much larger than its weights (or above the ceiling), are refused in one
line from their headers and shapes. The peak memory of a fresh process grows by less than `ARCHIVE_GROWTH_MB` for
the archives (reading them would take 256 MB) and `NETWORK_GROWTH_MB` for the networks (the meta device's shape
inference loads some of torch's modules: about 75 MB, as much as converting a valid tiny file; building what
args.json asks for would take 420 MB for 256 channels and 27 GB for 2048)."""

import json
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest

from corrdiff.interop.mdlus import read_mdlus
from tests.interop.physicsnemo_fixtures import FIXTURES
from tests.interop.test_bad_archives import expect_error, rewrite

INFLATED = 256 << 20  # bytes of zeros a bomb's model.pt inflates to (from a few hundred kB)
ARCHIVE_GROWTH_MB, NETWORK_GROWTH_MB = 100, 250


def zip_bomb(path):
    original = read_mdlus(FIXTURES / "diffusion.mdlus")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("args.json", json.dumps({"__name__": original.class_name, "__module__": original.module,
                                                  "__args__": original.args}))
        archive.writestr("metadata.json", json.dumps(original.metadata))
        with archive.open("model.pt", "w") as stream:
            for _ in range(INFLATED >> 22):
                stream.write(bytes(1 << 22))
    return path


def tar_bomb(path):
    import io

    class Zeros(io.RawIOBase):
        def __init__(self, size):
            self.left = size

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("model.pt")
        info.size = INFLATED
        archive.addfile(info, Zeros(INFLATED))
    return path


def peak_growth_mb(path, kind: str = "diffusion") -> tuple[float, str]:
    """(how far the peak resident memory rose above the one after imports, MB; the error) of converting `path` in a
    fresh process."""
    # VmHWM, the peak of this process's own memory (ru_maxrss would keep the peak of the forked pytest across exec)
    script = textwrap.dedent(f"""
        from corrdiff.errors import CheckpointError
        from corrdiff.interop.convert import convert
        from tests.interop.physicsnemo_fixtures import stats
        status = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
        before = status("VmRSS")
        try:
            convert({str(path)!r}, {kind!r}, stats())
            message = "converted"
        except CheckpointError as err:
            message = str(err)
        print(max(status("VmHWM") - before, 0) / 1024)
        print(message)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=FIXTURES.parents[2])
    growth, message = done.stdout.strip().split("\n", 1)
    return float(growth), message


@pytest.mark.parametrize("make, name", [(zip_bomb, "zip"), (tar_bomb, "tar.gz")], ids=["zip", "tar.gz"])
def test_an_archive_that_inflates_is_refused_from_its_header(tmp_path, make, name):
    path = make(tmp_path / f"bomb.{name}")
    assert path.stat().st_size < INFLATED / 100
    expect_error(path, rf"model\.pt would inflate from \d+ to {INFLATED} bytes \(\d+×, more than the 20× of any "
                       r"weights file\); not read")
    growth, message = peak_growth_mb(path)
    assert "would inflate" in message and growth < ARCHIVE_GROWTH_MB, (growth, message)


def test_args_describing_a_far_larger_network_than_the_weights_are_refused_before_building_it(tmp_path):
    path = rewrite(tmp_path, "diffusion", args={"model_channels": 256})  # 32× the weights' width: ~1000× their count
    expect_error(path, r"args\.json describes a network of 105,893,890 parameters, but the file holds 106,998 "
                       r"weights; the arguments do not belong to these weights \(not built\)")
    for channels in (256, 2048):  # 420 MB and 27 GB if built
        growth, message = peak_growth_mb(rewrite(tmp_path, "diffusion", args={"model_channels": channels}))
        assert "not built" in message and growth < NETWORK_GROWTH_MB, (channels, growth, message)


def test_a_network_above_the_ceiling_is_refused_with_the_ceiling_stated(tmp_path):
    path = rewrite(tmp_path, "diffusion", args={"model_channels": 16384, "channel_mult": [1, 2, 2, 2]})
    expect_error(path, r"args\.json describes a network of [\d,]+ parameters, above the ceiling of 4,000,000,000; "
                       r"not built")


def test_an_image_above_the_ceiling_is_refused_before_its_grid_is_built(tmp_path):
    path = rewrite(tmp_path, "diffusion", args={"img_resolution": [100000, 100000]})
    expect_error(path, r"img_resolution \[100000, 100000\] is 10,000,000,000 points, above the ceiling of 67,108,864; "
                       r"not built")
