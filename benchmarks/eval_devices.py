"""Evaluation throughput of ``iis-eval --devices N`` on CPU: instances/s for each N, side by side.

Each N runs the real console command (``python -m iis.cli.eval``) into its own temporary ``--out``
on real GrabCut, with the same model and protocol; throughput is the dataset's instances divided by
its ``run_seconds`` from ``results.json`` (worker start-up included, model build and imports not);
``inst/s w/o start`` divides by the busiest rank's summed instance times instead (start-up excluded).
``wall s`` is the whole command.
One device runs with torch's default threads (all cores) and again with 1 thread (``OMP_NUM_THREADS=1``,
what each worker has on 2 cores); N devices get cores // N threads each. The records of every run are
compared with those of the first (they must be identical).

Usage: python benchmarks/eval_devices.py --data-root ../shared/data [--devices 1,2] [--limit 16]
       [--max-clicks 5] [--method simpleclick_vit_test]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(devices: int, args: argparse.Namespace, out: Path, threads: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "iis.cli.eval", "--method", args.method, "--datasets", args.dataset,
           "--data-root", args.data_root, "--limit", str(args.limit), "--max-clicks", str(args.max_clicks),
           "--iou-analysis", "--quiet", "--out", str(out), "--devices", str(devices)]
    if args.weights:
        cmd += ["--weights", args.weights]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    d = json.loads((out / "results.json").read_text())["datasets"][args.dataset]
    label = f"{devices}" + (f" ({threads} thr)" if threads else "")
    # the busiest rank's summed instance wall times (instance i ran on rank i % devices): start-up excluded
    busy = max(sum(t["wall"] for t in d["timings"][r::devices]) for r in range(devices))
    return {"devices": label, "instances": d["num_instances"], "run_seconds": d["run_seconds"], "wall": wall,
            "busy": busy, "records": json.dumps(d["instances"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT"))
    ap.add_argument("--dataset", default="grabcut")
    ap.add_argument("--method", default="simpleclick_vit_test")
    ap.add_argument("--weights", help="weights for --method (default: its random init)")
    ap.add_argument("--devices", default="1,2", help="comma-separated device counts")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--max-clicks", type=int, default=5)
    args = ap.parse_args()
    if not args.data_root:
        raise SystemExit("eval_devices.py: pass --data-root or set IIS_DATA_ROOT")
    counts = [int(x) for x in args.devices.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        from iis.models.registry import create_model, list_models

        if not args.weights and args.method in list_models():  # fixed weights: a random init would differ
            import torch  # between the commands' processes

            torch.manual_seed(0)
            args.weights = str(Path(tmp) / "w.pth")
            torch.save(create_model(args.method).state_dict(), args.weights)
        rows = [run(n, args, Path(tmp) / f"d{n}") for n in counts]
        if 1 in counts and (os.cpu_count() or 1) > 1:  # one process on one core: what each worker has
            rows.insert(counts.index(1) + 1, run(1, args, Path(tmp) / "d1t1", threads=1))
    print(f"{args.method} on {args.dataset}: {args.limit} instances x {args.max_clicks} clicks (no early stop), "
          f"{os.cpu_count()} CPU cores")
    print(f"{'devices':>10} {'inst/s':>8} {'run s':>8} {'wall s':>8} {'speed-up':>9} {'inst/s w/o start':>17} "
          f"{'same records':>13}")
    base = rows[0]
    for r in rows:
        ips = r["instances"] / r["run_seconds"]
        up = ips / (base["instances"] / base["run_seconds"])
        print(f"{r['devices']:>10} {ips:>8.2f} {r['run_seconds']:>8.2f} {r['wall']:>8.2f} {up:>8.2f}x "
              f"{r['instances'] / r['busy']:>17.2f} {'yes' if r['records'] == base['records'] else 'NO':>13}")


if __name__ == "__main__":
    main()
