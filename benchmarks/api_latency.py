"""Per-click latency of the public API with and without the image-state cache, side by side.

    python benchmarks/api_latency.py --data-root ../shared/data --images 3 --clicks 8

Three measurements, all on real GrabCut images with the protocol's own clicker choosing the clicks (the
clicks are recorded once per image from ``run_instance`` and replayed, so both columns see the same clicks):

1. Training-free methods with an image-only stage (M2N2: attention matrix and joint bilateral upsampler;
   classical methods: their per-image precomputation). "before" = no image-state cache (``cache_size=0``):
   every stateless request ``seg.predict(image, clicks[:k])`` (what a CVAT/Label Studio backend sends per
   click) and every new session rebuild the image stage; "after" = the default LRU keyed by the image
   hash. Both replay the clicks one by one (one new Markov map per click, as in evaluation). Reported: ms
   per request (mean over k = 1..clicks), and the first click of a new session on an image already seen.
2. Trainable models have no click-independent stage to cache (clicks are fused at the input, see README):
   a session costs one forward per click; a stateless request replays all k clicks (k forwards). Reported
   for ``--models`` (random weights; timing only).
3. The only image-only operation in the ViT models, the image patch embedding, as a share of the forward
   (``--vit``; SimpleClick ViT-B at 448², batch 2 as with flip TTA).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import iis  # noqa: E402
from iis.core.loop import run_instance  # noqa: E402
from iis.data import get_dataset  # noqa: E402


def _clicks(seg, sample, n):
    """The protocol clicker's clicks for this instance (recorded from run_instance, no early stop)."""
    proto = dataclasses.replace(seg.protocol, max_clicks=n, target_iou=1.01)
    if seg.is_model:
        from iis.core.predictor import ModelPredictor

        pred = ModelPredictor(seg._obj, proto, seg.device)
    else:
        pred = seg.session(sample.image)._p
    return run_instance(pred, sample.image, sample.gt, proto).clicks


def _ms(f) -> float:
    t0 = time.perf_counter()
    f()
    return 1e3 * (time.perf_counter() - t0)


def bench_training_free(name, samples, n_clicks):
    before, after = iis.load(name, cache_size=0), iis.load(name)
    rows = {"stateless": ([], []), "new session, 1st click": ([], [])}
    for s in samples:
        clicks = _clicks(after, s, n_clicks)
        after.clear_cache()
        for col, seg in enumerate((before, after)):
            for k in range(1, len(clicks) + 1):
                rows["stateless"][col].append(_ms(lambda: seg.predict(s.image, clicks[:k])))
            # a second user / a re-opened image: new session, first click
            rows["new session, 1st click"][col].append(_ms(lambda: seg.session(s.image).click(*clicks[0])))
        # masks identical with and without the cache
        a, b = before.predict(s.image, clicks), after.predict(s.image, clicks)
        assert np.array_equal(a.mask, b.mask), f"{name}: cache changed a mask"
    return {k: (statistics.mean(v[0]), statistics.mean(v[1])) for k, v in rows.items()}


def bench_model(name, samples, n_clicks):
    seg = iis.load(name)
    sess_ms, replay_ms = [], []
    for s in samples:
        clicks = _clicks(seg, s, n_clicks)
        sess = seg.session(s.image)
        sess_ms += [_ms(lambda c=c: sess.click(*c)) for c in clicks]
        replay_ms.append(_ms(lambda: seg.predict(s.image, clicks)))
    return statistics.mean(sess_ms), statistics.mean(replay_ms)


def bench_vit(repeats=3):
    m = iis.create_model("simpleclick_vit_base").eval()
    x = torch.rand(2, 3, 448, 448)
    c = torch.tensor([[[200.0, 200.0, 1.0]]] * 2)
    p = torch.zeros(2, 1, 448, 448)
    vit = m.encoder.backbone
    from iis.models.base import normalize_image

    with torch.no_grad():
        m(x, c, p)
        full = min(_ms(lambda: m(x, c, p)) for _ in range(repeats))
        embed = min(_ms(lambda: vit.patch_embed(normalize_image(x))) for _ in range(repeats))
    return full, embed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT"))
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--clicks", type=int, default=8)
    ap.add_argument("--methods", default="m2n2_affinity,m2n2_effnet,random_walker")
    ap.add_argument("--models", default="simpleclick_vit_test,ritm_hrnet_test")
    ap.add_argument("--vit", action="store_true", help="also time the ViT-B patch embedding share")
    args = ap.parse_args(argv)
    ds = get_dataset("grabcut", args.data_root)
    samples = [ds[i] for i in range(min(args.images, len(ds)))]
    print(f"GrabCut, {len(samples)} images, {args.clicks} clicks each, torch threads {torch.get_num_threads()}")
    print(f"\n{'method':<16} {'request':<24} {'before: no cache (ms)':>22} {'after: LRU (ms)':>16} {'speed-up':>9}")
    for name in [m for m in args.methods.split(",") if m]:
        try:
            res = bench_training_free(name, samples, args.clicks)
        except (ImportError, FileNotFoundError, ValueError) as e:
            print(f"{name:<16} skipped: {e}")
            continue
        for req, (b, a) in res.items():
            print(f"{name:<16} {req:<24} {b:>22.1f} {a:>16.1f} {b / a:>8.1f}x")
    print(f"\n{'model':<22} {'session ms/click':>17} {'stateless ms/request (replay of ' + str(args.clicks) + ')':>38}")
    for name in [m for m in args.models.split(",") if m]:
        s, r = bench_model(name, samples, args.clicks)
        print(f"{name:<22} {s:>17.1f} {r:>38.1f}")
    if args.vit:
        full, embed = bench_vit()
        print(f"\nsimpleclick_vit_base forward 2x448²: {full:.0f} ms; image patch embedding (the only "
              f"click-independent op): {embed:.1f} ms = {100 * embed / full:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
