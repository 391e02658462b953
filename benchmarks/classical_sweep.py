"""Evaluate / tune the classical baselines on the real GrabCut and Berkeley sets.

Loads the data with ``iis.data.get_dataset`` (strict decoding, GrabCut/Berkeley mask rule), runs ``iis.core.loop.run_instance`` under the
``plain`` protocol (RITM clicker, threshold 0.49, 20 clicks, no flip/zoom) with early stop at
IoU 0.90, and prints NoC85/NoC90/NoF90 and the time per click (wall time inside ``predict`` and process CPU
time, which is less sensitive to other load on the machine) for every option combination.

Examples::

    # full evaluation of one method with its defaults
    python benchmarks/classical_sweep.py --method geodesic --dataset grabcut berkeley
    # grid search on an evenly spaced 20-instance subset of GrabCut
    python benchmarks/classical_sweep.py --method random_walker --limit 20 --grid beta=300,1000,3000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one process per core; no nested threading

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from iis.core.loop import run_instance  # noqa: E402
from iis.core.metrics import noc, nof  # noqa: E402
from iis.core.protocol import get_protocol  # noqa: E402
from iis.data import get_dataset  # noqa: E402
from iis.models.registry import create_predictor  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load(dataset: str, root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(id, image uint8 RGB, gt int8)]`` sorted by id, through the package's strict readers."""
    if dataset not in ("grabcut", "berkeley"):
        raise ValueError(f"--dataset: expected grabcut or berkeley, got {dataset!r}")
    ds = get_dataset(dataset, root)
    return sorted(((s.id, s.image, s.gt) for s in (ds[i] for i in range(len(ds)))), key=lambda t: t[0])


def _parse(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(value.lower(), value)


_DATA: list = []
_CFG: dict = {}


def _run_one(i: int):
    cv2.setNumThreads(1)
    stem, image, gt = _DATA[i]
    pred = create_predictor(_CFG["method"], **_CFG["opts"])
    proto = get_protocol("plain").with_options(target_iou=0.90)
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_instance(pred, image, gt, proto, stem)
    return stem, res.ious, time.perf_counter() - t0, res.latency, time.process_time() - c0


def evaluate(method: str, opts: dict, data: list, workers: int) -> dict:
    global _DATA, _CFG
    _DATA, _CFG = data, {"method": method, "opts": opts}
    t0 = time.perf_counter()
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            rows = pool.map(_run_one, range(len(data)), chunksize=1)
    else:
        rows = [_run_one(i) for i in range(len(data))]
    ious = [r[1] for r in rows]
    n_clicks = sum(len(x) for x in ious)
    return {
        "method": method, "opts": opts, "n": len(rows),
        "noc85": noc(ious, 0.85, 20), "noc90": noc(ious, 0.90, 20), "nof90": nof(ious, 0.90, 20),
        "sec_per_click": sum(r[3] for r in rows) / max(n_clicks, 1),  # wall time inside predict()
        "cpu_per_click": sum(r[4] for r in rows) / max(n_clicks, 1),  # process CPU time, clicker included
        "wall": time.perf_counter() - t0,
        "per_instance": {r[0]: [round(v, 4) for v in r[1]] for r in rows},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True, help="random_walker | grabcut | geodesic")
    ap.add_argument("--dataset", nargs="+", default=["grabcut"], help="grabcut and/or berkeley")
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get("IIS_DATA_ROOT", DEFAULT_ROOT)))
    ap.add_argument("--limit", type=int, default=None, help="evenly spaced subset of this many instances")
    ap.add_argument("--opt", action="append", default=[], help="fixed builder option key=value")
    ap.add_argument("--grid", action="append", default=[], help="swept option key=v1,v2,...")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="append one JSON line per run here")
    args = ap.parse_args(argv)

    fixed = dict(kv.split("=", 1) for kv in args.opt)
    fixed = {k: _parse(v) for k, v in fixed.items()}
    keys = [kv.split("=", 1)[0] for kv in args.grid]
    values = [[_parse(v) for v in kv.split("=", 1)[1].split(",")] for kv in args.grid]
    for ds in args.dataset:
        data = load(ds, args.data_root)
        if args.limit and args.limit < len(data):
            idx = np.linspace(0, len(data) - 1, args.limit).round().astype(int)
            data = [data[i] for i in idx]
        for combo in itertools.product(*values) if values else [()]:
            opts = {**fixed, **dict(zip(keys, combo))}
            r = evaluate(args.method, opts, data, args.workers)
            r["dataset"] = ds
            print(f"{ds:9s} n={r['n']:3d} NoC85 {r['noc85']:5.2f} NoC90 {r['noc90']:5.2f} NoF90 {r['nof90']:3d} "
                  f"{r['sec_per_click']:.3f}s/click (cpu {r['cpu_per_click']:.3f}s) wall {r['wall']:6.1f}s  {args.method} {opts}", flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    sys.exit(main())
