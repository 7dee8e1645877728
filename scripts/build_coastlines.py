"""Build `src/corrdiff/evaluation/coastlines.npz`, the coastline the report's maps draw (offline, no cartopy).

Source: the 30″ (≈1 km) GLOBE land/ocean mask shipped in the `global-land-mask` wheel on PyPI (MIT; the
mask comes from NOAA's GLOBE elevation data). It is averaged over 4 × 4 cells (2′, ≈3.7 km) into a land
fraction, the 0.5 contour of that fraction is the coastline, which is simplified (Douglas–Peucker, 0.01°)
and stored as int16 centi-degrees, delta-encoded per line: about 200 kB.

    pip download --no-deps global-land-mask==1.0.0 -d /tmp/glm
    python scripts/build_coastlines.py /tmp/glm/global_land_mask-1.0.0-py3-none-any.whl

Run once by a maintainer; the package only reads the result (`corrdiff.evaluation.coastlines`).
"""

import argparse
import io
import zipfile
from pathlib import Path

import contourpy
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "corrdiff" / "evaluation" / "coastlines.npz"
MEMBER = "global_land_mask/globe_combined_mask_compressed.npz"
BLOCK = 4  # 30″ cells averaged per side: 2′ resolution
TOLERANCE_DEG = 0.01  # Douglas–Peucker tolerance, about 1 km


def land_fraction(ocean: np.ndarray, block: int) -> np.ndarray:
    """Fraction of land (1 − ocean) in block × block cells; (ny / block, nx / block) float32."""
    ny, nx = ocean.shape
    land = np.zeros((ny // block, nx // block), np.float32)
    for i in range(block):
        for j in range(block):
            land += ~ocean[i::block, j::block]
    return land / block**2


def simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas–Peucker simplification of a (n, 2) polyline, end points kept (iterative, not recursive)."""
    keep = np.zeros(len(points), bool)
    keep[[0, -1]] = True
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        if b <= a + 1:
            continue
        chord, offsets = points[b] - points[a], points[a + 1 : b] - points[a]
        length = np.hypot(*chord)
        distance = (np.abs(chord[0] * offsets[:, 1] - chord[1] * offsets[:, 0]) / length if length > 0
                    else np.hypot(offsets[:, 0], offsets[:, 1]))
        k = int(np.argmax(distance))
        if distance[k] > tolerance:
            middle = a + 1 + k
            keep[middle] = True
            stack += [(a, middle), (middle, b)]
    return points[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="global_land_mask-1.0.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as wheel, np.load(io.BytesIO(wheel.read(MEMBER))) as source:
        ocean = source["mask"]  # (21600, 43200), True over water, rows from 90°N, columns from 180°W
    land = land_fraction(ocean, BLOCK)
    step = 180.0 / land.shape[0]
    lat = 90.0 - step * (np.arange(land.shape[0]) + 0.5)
    lon = -180.0 + step * (np.arange(land.shape[1]) + 0.5)
    lines, _ = contourpy.contour_generator(lon, lat, land, line_type="SeparateCode").lines(0.5)
    packed = []
    for line in lines:
        if len(line) < 3:
            continue
        centi = np.round(simplify(np.asarray(line), TOLERANCE_DEG) * 100).astype(np.int32)
        centi = centi[np.r_[True, (np.diff(centi, axis=0) != 0).any(axis=1)]]  # repeats after rounding
        if len(centi) >= 2:
            packed.append(centi)
    np.savez_compressed(
        args.out,
        counts=np.array([len(p) for p in packed], np.int32),
        first=np.concatenate([p[:1] for p in packed]).astype(np.int16),
        delta=np.concatenate([np.diff(p, axis=0) for p in packed]).astype(np.int16),
        source=np.array("GLOBE land mask (NOAA) via the global-land-mask 1.0.0 wheel (MIT); 2′ land fraction, "
                        "0.5 contour, Douglas-Peucker 0.01°; lon, lat in 1/100 degree, delta-encoded per line"),
    )
    print(f"{args.out}: {len(packed)} lines, {sum(len(p) for p in packed)} points, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
