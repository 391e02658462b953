"""Does a checkpoint respond to corrective clicks? A diagnostic for fine-tuned models (iis/methods/custom).

For each instance it runs the evaluation clicker (:func:`iis.core.clicker.next_click`) on the raw model at
full resolution (no zoom-in, no flip, threshold 0.49) and records, for every click after the first: the
predicted probability under a positive click (a model that uses the click puts it near 1) and the fraction
of pixels whose label changed. ``--no-prev`` feeds an empty previous mask, to see what the clicks alone do.

    python benchmarks/click_response.py OUT/checkpoints/last.ckpt --datasets grabcut --limit 6
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from iis.core.clicker import next_click
from iis.data.datasets import get_dataset
from iis.eval.checkpoint import load_checkpoint_model


def probe(model, sample, clicks: int, use_prev: bool, thresh: float = 0.49) -> dict:
    gt = sample.gt
    x = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 255
    pred = np.zeros(gt.shape, bool)
    prev = torch.zeros(1, 1, *gt.shape)
    rows, under_pos, changed, ious = [], [], [], []
    for k in range(clicks):
        c = next_click(gt, pred)
        rows.append([c.x, c.y, 1.0 if c.positive else 0.0])
        with torch.no_grad():
            prob = torch.sigmoid(model(x, torch.tensor([rows]), prev if use_prev else torch.zeros_like(prev)))
        new = prob[0, 0].numpy() > thresh
        if k:
            changed.append(float((new != pred).mean()))
            if c.positive:
                under_pos.append(float(prob[0, 0, int(c.y), int(c.x)]))
        pred, prev = new, prob
        ious.append(float((pred & (gt == 1)).sum() / max(1, (pred | (gt == 1)).sum())))
    return {"id": sample.id, "iou": ious, "under_pos": under_pos, "changed": changed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--datasets", default="grabcut")
    p.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT"))
    p.add_argument("--limit", type=int, default=6)
    p.add_argument("--clicks", type=int, default=8)
    a = p.parse_args(argv)
    if a.data_root is None:
        p.error("--data-root (or $IIS_DATA_ROOT) is required")
    model, _ = load_checkpoint_model(a.ckpt)
    model.eval()
    ds = get_dataset(a.datasets, a.data_root)
    for use_prev in (True, False):
        res = [probe(model, ds[i], a.clicks, use_prev) for i in range(min(a.limit, len(ds)))]
        print(f"previous mask {'fed' if use_prev else 'empty'}:")
        for r in res:
            print(f"  {r['id']}: IoU {' '.join(f'{v:.3f}' for v in r['iou'])}")
        pos = [v for r in res for v in r["under_pos"]]
        chg = [v for r in res for v in r["changed"]]
        under = (f"min {min(pos):.2f} / median {np.median(pos):.2f} / max {max(pos):.2f} ({len(pos)} clicks)"
                 if pos else "- (no positive click)")
        moved = f"median {100 * np.median(chg):.2f}% / max {100 * max(chg):.2f}%" if chg else "-"
        print(f"  clicks 2-{a.clicks}: probability under positive clicks {under}; pixels changed per click {moved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
