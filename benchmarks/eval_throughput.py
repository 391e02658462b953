"""Batched evaluation throughput on real GrabCut: instances/s for several ``--batch-size``, side by side.

Runs ``iis.eval.runner.evaluate_step`` (what ``iis-eval`` runs) on the first ``--limit`` GrabCut
instances for each batch size, in one process, and prints instances/s with the ratio to B = 1; it also
checks that every batch size produced the same clicks and IoUs (the records minus timings).

Random weights by default (``--weights`` to load some): most instances then run all clicks, which is
the worst case for throughput. Figures depend on the CPU, its load and the thread count.

Usage: python benchmarks/eval_throughput.py --data-root ../shared/data [--model simpleclick_vit_xtiny]
       [--batch-sizes 1,4,8] [--limit 16] [--max-clicks 20] [--threads N] [--precision bf16]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from iis.core.protocol import get_protocol
from iis.data import get_dataset
from iis.eval.loading import build_method
from iis.eval.runner import deterministic_record, evaluate_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT"))
    ap.add_argument("--dataset", default="grabcut")
    ap.add_argument("--model", default="simpleclick_vit_xtiny")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--protocol", default=None, help="preset (default: the model's own)")
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    built = build_method(a.model, weights=a.weights)
    proto = get_protocol(a.protocol or built.default_protocol).with_options(max_clicks=a.max_clicks)
    ds = get_dataset(a.dataset, a.data_root)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    sizes = [int(b) for b in a.batch_sizes.split(",")]
    n = min(a.limit, len(ds))
    print(f"{a.model} ({'weights ' + a.weights if a.weights else 'random weights'}), protocol {proto.name}, "
          f"{ds.name} first {n}, {a.max_clicks} clicks max, {a.precision}, device {a.device}, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    evaluate_step(built.obj, ds, proto, device=a.device, dtype=dtype, limit=2, batch_size=2)  # warm-up
    rows, ref = [], None
    for b in sizes:
        t0 = time.perf_counter()
        r = evaluate_step(built.obj, ds, proto, device=a.device, dtype=dtype, limit=n, batch_size=b)
        el = time.perf_counter() - t0
        recs = [deterministic_record(x) for x in r.instances]
        same = "reference" if ref is None else ("identical" if recs == ref else "DIFFERENT")
        ref = ref if ref is not None else recs
        clicks = sum(len(x["ious"]) for x in recs)
        rows.append((b, el, n / el, clicks / el, r.summary["noc"]["90"], same))
    base = rows[0][2]
    print(f"{'B':>3} {'seconds':>8} {'inst/s':>8} {'clicks/s':>9} {'x vs B=' + str(sizes[0]):>9}  NoC@90  records")
    for b, el, ips, cps, noc, same in rows:
        print(f"{b:>3} {el:>8.1f} {ips:>8.3f} {cps:>9.2f} {ips / base:>9.2f}  {noc:6.2f}  {same}")


if __name__ == "__main__":
    main()
