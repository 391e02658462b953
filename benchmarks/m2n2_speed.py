"""M2N2 speed at DAVIS resolution (854x480): attention preparation and the per-click time split.

Each click adds one new Markov-map (chain, upsampling, flood fill, its threshold table) and
re-scores every click so far (paper §4.1 reports 0.6 s per click on an RTX 4090 with SD2).

Examples::

    python benchmarks/m2n2_speed.py --attention affinity            # CPU, no weights
    python benchmarks/m2n2_speed.py --attention effnet --grid 64
    python benchmarks/m2n2_speed.py --attention sd2-random --device cuda   # full-size SD2, random weights
    python benchmarks/m2n2_speed.py --attention sd2 --sd2-path /models/stable-diffusion-2 --device cuda
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from iis.core.types import Click
from iis.data.io import read_image
from iis.methods.m2n2 import AffinityAttention, DinoV2Attention, EffNetAttention, M2N2Predictor, SD2Attention

DAVIS_HW = (480, 854)
_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "GrabCut" / "data_GT" / "124080.jpg"
# (x, y) as fractions of the image, alternating labels: a typical corrective sequence
_CLICKS = [(0.5, 0.5, True), (0.15, 0.2, False), (0.55, 0.35, True), (0.85, 0.8, False), (0.45, 0.7, True),
           (0.3, 0.5, False), (0.6, 0.6, True), (0.9, 0.2, False)]


def _image(path: str | None) -> np.ndarray:
    p = Path(path) if path else _DATA
    if p.is_file():
        img = read_image(p)
    else:  # smooth synthetic scene when the benchmark images are absent
        rng = np.random.default_rng(0)
        img = cv2.GaussianBlur(rng.integers(0, 256, (60, 107, 3)).astype(np.uint8), (0, 0), 3)
    return cv2.resize(img, DAVIS_HW[::-1], interpolation=cv2.INTER_LINEAR)


def _source(a: argparse.Namespace):
    dtype = torch.float16 if a.device == "cuda" else torch.float32
    if a.attention == "affinity":
        return AffinityAttention(grid=a.grid, device=a.device)
    if a.attention == "effnet":
        return EffNetAttention(grid=a.grid, device=a.device)
    if a.attention == "sd2":
        return SD2Attention.from_pretrained(a.sd2_path, resolution=a.resolution or 128, device=a.device, dtype=dtype)
    if a.attention == "sd2-random":
        return SD2Attention.random_full_size(resolution=a.resolution or 128, device=a.device, dtype=dtype)
    if a.attention == "dinov2":
        return DinoV2Attention.from_pretrained(a.dinov2_path, resolution=a.resolution or 80, device=a.device,
                                               dtype=dtype)
    raise ValueError(f"--attention: unknown source {a.attention!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", default="affinity", choices=["affinity", "effnet", "sd2", "sd2-random", "dinov2"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--grid", type=int, default=48, help="token grid of the affinity/effnet sources")
    ap.add_argument("--resolution", type=int, default=None, help="attention resolution of sd2 (128) / dinov2 (80)")
    ap.add_argument("--sd2-path", default=None)
    ap.add_argument("--dinov2-path", default=None)
    ap.add_argument("--image", default=None, help="image file (resized to 854x480); default a GrabCut image")
    ap.add_argument("--clicks", type=int, default=5, help=f"number of clicks (<= {len(_CLICKS)})")
    ap.add_argument("--jbu-stride", type=int, default=1, help="JBU offset lattice (1 = reference)")
    ap.add_argument("--jbu-max-shifts", type=int, default=None,
                    help="coarsen the JBU lattice to at most this many offsets")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if a.jbu_max_shifts is None and a.attention in ("affinity", "effnet") and a.device == "cpu":
        a.jbu_max_shifts = 128  # the CPU default of m2n2_affinity / m2n2_effnet

    img = _image(a.image)
    t0 = time.perf_counter()
    src = _source(a)
    load = time.perf_counter() - t0
    pred = M2N2Predictor(src, jbu_stride=a.jbu_stride, jbu_max_shifts=a.jbu_max_shifts)
    H, W = img.shape[:2]
    clicks = [Click(fx * (W - 1), fy * (H - 1), pos) for fx, fy, pos in _CLICKS[: a.clicks]]
    pred.set_image(img)
    pred.attention()  # per-image preparation, timed on its own
    pred.upsampler()
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    walls = []
    for k in range(1, len(clicks) + 1):
        t0 = time.perf_counter()
        pred.predict(clicks[:k])
        walls.append(time.perf_counter() - t0)
    tm, n = pred.timings, len(clicks)
    print(f"source={a.attention} grid={src.grid_hw} device={a.device} image={W}x{H} clicks={n} "
          f"jbu_offsets={len(pred._jbu.shifts)} (stride {pred._jbu.stride}) threads={torch.get_num_threads()}")
    print(f"model load             {load:8.3f} s")
    print(f"attention preparation  {tm['attention']:8.3f} s  (forward + temperature + IPF, once per image)")
    print(f"JBU range weights      {tm['jbu_setup']:8.3f} s  (once per image)")
    print("per click (mean over clicks):")
    for stage in ("chain", "upsample", "floodfill", "scoring"):
        print(f"  {stage:<20} {tm[stage] / n:8.3f} s")
    print(f"  {'total (wall)':<20} {sum(walls) / n:8.3f} s   first {walls[0]:.3f} s, last {walls[-1]:.3f} s")
    if a.device == "cuda":
        print(f"peak CUDA memory during clicks {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
