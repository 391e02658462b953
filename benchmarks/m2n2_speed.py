"""M2N2 speed at DAVIS resolution (854x480): attention preparation and the per-click time split.

Each click adds one new Markov-map (chain, upsampling, flood fill, its threshold table) and
re-scores every click so far (paper §4.1 reports 0.6 s per click on an RTX 4090 with SD2).

``--compare`` runs the same clicks through three predictors on the same attention and prints them
side by side: ``old`` (as first written: step-by-step chain, scikit-image's public reconstruction for
the flood fill, NumPy's stable argsort in the threshold table, scores as a full product over all
candidates), ``stepwise`` and ``blocked`` (today's code with either chain; ``A^L`` is per image).

Examples::

    python benchmarks/m2n2_speed.py --attention affinity            # CPU, no weights
    python benchmarks/m2n2_speed.py --attention affinity --grid 40 --clicks 8 --threads 1 --compare
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
from iis.methods.m2n2 import predictor as _pred_mod
from iis.methods.m2n2 import segment as _seg_mod

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


def _select_full(table, same_values, other_values, map_max, max_area=0.4, prior=True, edge=True, pos=True,
                 neg=True):
    """select_threshold as first written (the "old" column): the product over every candidate."""
    t = table.thresholds
    m = len(t)
    if not (prior or edge or pos or neg) or m == 0:
        return 0.5, 0.0
    score = np.ones(m)
    if prior:
        score *= np.linspace(0.0, 1.0, m) < max_area
    if edge:
        score *= table.edge
    if pos and len(same_values):
        score *= np.searchsorted(np.sort(same_values), t, side="right") / len(same_values)
    if neg:
        bound = min(float(np.min(other_values)) if len(other_values) else map_max, map_max)
        score *= t < bound
    k = int(np.argmax(score))
    return float(t[k]), float(score[k])


def _flood_fill_public(values, point):
    """The flood fill as first written (the "old" column): scikit-image's public reconstruction."""
    from skimage.morphology import reconstruction

    x, y = point
    v = np.asarray(values, np.float32)
    cost = np.abs(v - v[y, x])
    seed = np.full_like(cost, cost.max())
    seed[y, x] = 0.0
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    return reconstruction(seed, cost, method="erosion", footprint=cross).astype(np.float32, copy=False)


def _run(pred: M2N2Predictor, img: np.ndarray, clicks: list[Click], device: str, attn=None) -> tuple[list, list]:
    pred.set_image(img)
    if attn is not None:  # share the prepared attention between the compared predictors
        pred._attn = attn
    pred.attention()  # per-image preparation, timed on its own
    pred.upsampler()
    walls, masks = [], []
    for k in range(1, len(clicks) + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        masks.append(pred.predict(clicks[:k]))
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
    return walls, masks


def _compare(a: argparse.Namespace, src, img: np.ndarray, clicks: list[Click]) -> None:
    kw = dict(jbu_stride=a.jbu_stride, jbu_max_shifts=a.jbu_max_shifts, chain_block=a.chain_block)
    cols, masks, attn = {}, {}, None
    for name in ("old", "stepwise", "blocked"):
        pred = M2N2Predictor(src, chain="stepwise" if name == "old" else name, **kw)
        saved = (_pred_mod.select_threshold, _pred_mod.flood_fill, _seg_mod.stable_argsort)
        if name == "old":
            _pred_mod.select_threshold, _pred_mod.flood_fill = _select_full, _flood_fill_public
            _seg_mod.stable_argsort = lambda v: np.argsort(v, kind="stable")
        try:
            walls, masks[name] = _run(pred, img, clicks, a.device, attn)
        finally:
            _pred_mod.select_threshold, _pred_mod.flood_fill, _seg_mod.stable_argsort = saved
        attn = pred._attn
        cols[name] = (pred.timings, walls)
    n = len(clicks)
    H, W = img.shape[:2]
    print(f"source={a.attention} grid={src.grid_hw} device={a.device} image={W}x{H} clicks={n} "
          f"jbu_offsets={len(pred._jbu.shifts)} threads={torch.get_num_threads()} block={a.chain_block}")
    print(f"{'':24}" + "".join(f"{k:>12}" for k in cols))
    print(f"{'A^L per image (s)':24}" + "".join(f"{tm.get('chain_power', 0.0):12.3f}" for tm, _ in cols.values()))
    for stage in ("chain", "upsample", "floodfill", "scoring"):
        print(f"{stage + ' / click (s)':24}" + "".join(f"{tm[stage] / n:12.3f}" for tm, _ in cols.values()))
    print(f"{'total wall / click (s)':24}" + "".join(f"{sum(w) / n:12.3f}" for _, w in cols.values()))
    same = [sum(int(np.array_equal(x, y)) for x, y in zip(masks["old"], masks[k])) for k in cols]
    print(f"{'masks equal to old':24}" + "".join(f"{s:>9d}/{n:<2d}" for s in same))
    print("paper (RTX 4090, SD2 at 854x480): 0.6 s per click")


def _chain_only(a: argparse.Namespace) -> None:
    """Stepwise vs blocked chain alone on a slowly mixing attention (lazy 4-neighbour walk on a
    side x side grid, doubly stochastic): chains that run for hundreds of steps, as SD2's do."""
    from iis.methods.m2n2.markov import markov_chain, markov_chain_blocked, transition_power

    side, dev = a.chain_only, torch.device(a.device)
    n = side * side
    idx = torch.arange(n, device=dev)
    y, x = idx // side, idx % side
    A = torch.zeros(n, n, device=dev)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ok = (y + dy >= 0) & (y + dy < side) & (x + dx >= 0) & (x + dx < side)
        A[idx[ok], (idx + dy * side + dx)[ok]] = 0.1
    A[idx, idx] = 1.0 - A.sum(1)
    start = torch.zeros(2, n, device=dev)
    start[0, 0] = 1.0
    start[1, (side // 2) * side + side // 3] = 1.0

    def timed(fn):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    ref, t_step = timed(lambda: markov_chain(A, start, linear_interpolation=False))
    P, t_pow = timed(lambda: transition_power(A, a.chain_block))
    new, t_blk = timed(lambda: markov_chain_blocked(A, start, linear_interpolation=False, power=P,
                                                    block=a.chain_block))
    d = (ref - new).abs()
    print(f"lazy walk {side}x{side} (N={n}) device={a.device} threads={torch.get_num_threads()} "
          f"2 chains, longest {int(ref[ref <= 1000].max())} steps, block={a.chain_block}")
    print(f"  stepwise chain        {t_step:8.3f} s")
    print(f"  blocked chain         {t_blk:8.3f} s   (+ A^{a.chain_block} once per image {t_pow:.3f} s)")
    print(f"  crossing steps differ at {int((d > 0).sum())} of {d.numel()} cells, by at most {int(d.max())}")


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
    ap.add_argument("--chain", default="auto", choices=["auto", "stepwise", "blocked"])
    ap.add_argument("--chain-block", type=int, default=32, help="steps per block of the blocked chain")
    ap.add_argument("--compare", action="store_true", help="old / stepwise / blocked side by side")
    ap.add_argument("--chain-only", type=int, default=None, metavar="SIDE",
                    help="time only the two chains on a slowly mixing SIDE x SIDE grid walk")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if a.chain_only:
        return _chain_only(a)
    if a.jbu_max_shifts is None and a.attention in ("affinity", "effnet") and a.device == "cpu":
        a.jbu_max_shifts = 128  # the CPU default of m2n2_affinity / m2n2_effnet

    img = _image(a.image)
    t0 = time.perf_counter()
    src = _source(a)
    load = time.perf_counter() - t0
    H, W = img.shape[:2]
    clicks = [Click(fx * (W - 1), fy * (H - 1), pos) for fx, fy, pos in _CLICKS[: a.clicks]]
    if a.compare:
        print(f"model load {load:.3f} s")
        return _compare(a, src, img, clicks)
    pred = M2N2Predictor(src, jbu_stride=a.jbu_stride, jbu_max_shifts=a.jbu_max_shifts, chain=a.chain,
                         chain_block=a.chain_block)
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    walls, _ = _run(pred, img, clicks, a.device)
    tm, n = pred.timings, len(clicks)
    print(f"source={a.attention} grid={src.grid_hw} device={a.device} image={W}x{H} clicks={n} "
          f"jbu_offsets={len(pred._jbu.shifts)} (stride {pred._jbu.stride}) threads={torch.get_num_threads()}")
    print(f"model load             {load:8.3f} s")
    print(f"attention preparation  {tm['attention']:8.3f} s  (forward + temperature + IPF, once per image)")
    print(f"JBU range weights      {tm['jbu_setup']:8.3f} s  (once per image)")
    print(f"chain                  {pred.chain_kind()}" + (f", A^{pred.chain_block} {tm['chain_power']:.3f} s (once per image)"
                                                           if pred.chain_kind() == "blocked" else ""))
    print("per click (mean over clicks):")
    for stage in ("chain", "upsample", "floodfill", "scoring"):
        print(f"  {stage:<20} {tm[stage] / n:8.3f} s")
    print(f"  {'total (wall)':<20} {sum(walls) / n:8.3f} s   first {walls[0]:.3f} s, last {walls[-1]:.3f} s")
    if a.device == "cuda":
        print(f"peak CUDA memory during clicks {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
