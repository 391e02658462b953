"""NoIC vs the test-time GP noise eps^2 (GPCIS paper Table 1): smaller eps^2 -> fewer invalid clicks.

NoIC counts clicks whose own pixel is misclassified by the prediction right after them (GPCIS §5.1).
The GP posterior interpolates the click labels as eps^2 -> 0, so NoIC should fall with eps^2.

Usage:
    make train METHOD=gpcis EXP=tiny                      # a trained tiny GPCIS on synthetic data
    python benchmarks/gpcis_noic.py --ckpt runs/gpcis/tiny/latest/checkpoints/last.ckpt --datasets synthetic
"""

from __future__ import annotations

import argparse

from iis.core.predictor import ModelPredictor
from iis.core.protocol import get_protocol
from iis.data import get_dataset
from iis.eval.checkpoint import load_checkpoint_model
from iis.eval.runner import evaluate_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--datasets", default="synthetic")
    ap.add_argument("--data-root")
    ap.add_argument("--eps2", default="1e-1,1e-2,1e-3,1e-4,1e-5,1e-6,1e-7")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--protocol", default="plain", help="plain keeps the clicks at native resolution")
    args = ap.parse_args()
    model, meta = load_checkpoint_model(args.ckpt)
    if not hasattr(model, "test_eps2"):
        raise SystemExit(f"--ckpt {args.ckpt}: model {meta['model']['name']} has no GP head (test_eps2)")
    proto = get_protocol(args.protocol).with_options(max_clicks=args.max_clicks, target_iou=1.01)
    print(f"model {meta['model']['name']}, protocol {proto.name}, {args.max_clicks} clicks, no early stop")
    # NoIC as in the paper's Table 1: invalid clicks summed over the dataset (and per instance)
    print(f"{'dataset':10s} {'eps2':>8s} {'NoIC':>6s} {'/inst':>6s} {'clicks':>7s} {'NoC85':>6s} {'NoC90':>6s}")
    for name in args.datasets.split(","):
        ds = get_dataset(name, args.data_root)
        for eps2 in (float(e) for e in args.eps2.split(",")):
            model.test_eps2 = eps2
            r = evaluate_dataset(ModelPredictor(model, proto), ds, proto, limit=args.limit)
            s = r.summary
            total = sum(i.get("noic", 0) for i in r.instances)
            clicks = sum(len(i["clicks"]) for i in r.instances)
            print(f"{name:10s} {eps2:8.0e} {total:6d} {s['noic']:6.3f} {clicks:7d} "
                  f"{s['noc']['85']:6.2f} {s['noc']['90']:6.2f}")


if __name__ == "__main__":
    main()
