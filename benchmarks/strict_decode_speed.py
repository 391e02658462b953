"""Cost of strict decoding: ``iis.data.io.read_image`` / ``read_mask`` next to bare ``cv2.imread``.

``read_image`` reads the bytes once, lets Pillow decode them to the end (JPEGs at 1/8 scale) to catch
truncated files, then decodes the same bytes with OpenCV (the reference values). This prints the
median time per file of both paths over the real GrabCut/Berkeley/ssTEM files and over a generated
12-megapixel photo-sized JPEG, side by side, from one run.

    python benchmarks/strict_decode_speed.py --data-root ../shared/data --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from iis.data.io import read_image, read_mask


def _ms(fn, paths: list[Path], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        runs.append((time.perf_counter() - t0) / len(paths) * 1e3)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT", "../shared/data"))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    root = Path(a.data_root)
    sets = {
        "GrabCut images": sorted((root / "GrabCut" / "data_GT").iterdir()),
        "Berkeley images": sorted((root / "Berkeley" / "images").iterdir()),
        "ssTEM images (1024^2 TIFF)": sorted((root / "ssTEM" / "raw").iterdir()),
    }
    masks = {
        "GrabCut masks": sorted((root / "GrabCut" / "boundary_GT").iterdir()),
        "ssTEM masks": sorted((root / "ssTEM" / "mitochondria").iterdir()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jpg"
        rng = np.random.default_rng(0)
        img = cv2.resize(cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3)).astype(np.uint8), (0, 0), 3), (4000, 3000))
        cv2.imwrite(str(big), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        sets["generated 4000x3000 JPEG"] = [big]
        print(f"{'files':32s} {'n':>4s} {'cv2.imread ms':>14s} {'iis strict ms':>14s} {'ratio':>6s}")
        for name, paths in sets.items():
            base = _ms(lambda p: cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), paths, a.repeats)
            strict = _ms(read_image, paths, a.repeats)
            print(f"{name:32s} {len(paths):4d} {base:14.2f} {strict:14.2f} {strict / base:6.2f}")
        for name, paths in masks.items():
            base = _ms(lambda p: cv2.imread(str(p), cv2.IMREAD_COLOR), paths, a.repeats)
            strict = _ms(lambda p: read_mask(p).bgr, paths, a.repeats)
            print(f"{name:32s} {len(paths):4d} {base:14.2f} {strict:14.2f} {strict / base:6.2f}")


if __name__ == "__main__":
    main()
