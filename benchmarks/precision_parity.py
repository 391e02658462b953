"""How far bf16/fp16 autocast moves the NoC protocol's numbers against fp32, on real GrabCut, on CPU.

The same model (random ``_test``/small weights with the logits scaled and centred, as in
tests/eval/test_batched.py, so masks are partial and follow the clicks; or ``--weights``) is evaluated
under its preset with ``--precision fp32`` and the other one, all clicks (no early stop). Printed: NoC at
several IoU targets for both, how many instances clicked differently (their sequences diverge from the
first click that differs), and the largest per-click IoU difference before that divergence.

Usage: python benchmarks/precision_parity.py --data-root ../shared/data [--model simpleclick_vit_test]
       [--precision bf16] [--limit 20] [--max-clicks 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from iis.core.metrics import summarize
from iis.core.protocol import get_protocol
from iis.data import get_dataset
from iis.eval.runner import evaluate_step
from iis.models.testing import Sharpened


def _noc(ious: list[list[float]], target: float, max_clicks: int) -> float:
    return float(np.mean([next((k + 1 for k, v in enumerate(x) if v >= target), max_clicks) for x in ious]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT"))
    ap.add_argument("--model", default="simpleclick_vit_test")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--max-clicks", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = Sharpened(a.model).eval()
    proto = get_protocol(model.default_protocol).with_options(max_clicks=a.max_clicks, target_iou=1.01)
    ds = get_dataset("grabcut", a.data_root)
    runs = {}
    for prec, dtype in (("fp32", None), (a.precision, torch.bfloat16 if a.precision == "bf16" else torch.float16)):
        r = evaluate_step(model, ds, proto, dtype=dtype, limit=a.limit, batch_size=a.batch_size)
        runs[prec] = r.instances
    ref, other = runs["fp32"], runs[a.precision]
    diverged, worst = 0, 0.0
    for x, y in zip(ref, other):
        same = [k for k in range(len(x["clicks"])) if x["clicks"][: k + 1] == y["clicks"][: k + 1]]
        n = len(same)
        diverged += int(n < len(x["clicks"]))
        if n:
            worst = max(worst, float(np.max(np.abs(np.subtract(x["ious"][:n], y["ious"][:n])))))
    print(f"{a.model} (random weights, logits sharpened), protocol {proto.name}, GrabCut first {len(ref)}, "
          f"{a.max_clicks} clicks, no early stop, CPU, torch {torch.__version__}")
    print(f"{'target':>7} {'NoC fp32':>9} {'NoC ' + a.precision:>9} {'delta':>7}")
    for t in (0.5, 0.7, 0.85, 0.9):
        f, o = _noc([x["ious"] for x in ref], t, a.max_clicks), _noc([x["ious"] for x in other], t, a.max_clicks)
        print(f"{t:>7.2f} {f:>9.2f} {o:>9.2f} {o - f:>+7.2f}")
    m32 = summarize([x["ious"] for x in ref], a.max_clicks)["miou"]
    mo = summarize([x["ious"] for x in other], a.max_clicks)["miou"]
    print(f"mIoU@{a.max_clicks}: fp32 {m32[-1]:.4f}, {a.precision} {mo[-1]:.4f}; instances whose clicks diverge: "
          f"{diverged}/{len(ref)}; largest per-click IoU difference before divergence: {worst:.2e}")


if __name__ == "__main__":
    main()
