"""``iis-eval``: NoC tables for a method or checkpoint under an exact, recorded protocol.

Examples::

    iis-eval --method random_walker --datasets grabcut,berkeley --data-root ../shared/data
    iis-eval --ckpt runs/train/quickstart/checkpoints/last.ckpt --datasets synthetic
    iis-eval --method m2n2 --method-arg sd2_path=/models/stable-diffusion-2 --datasets davis
    iis-eval --reproduce simpleclick_vit_base_cocolvis --weights cocolvis_vit_base.pth
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iis-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--method", help="registered method or model name (see --list)")
    src.add_argument("--ckpt", help="checkpoint written by iis-train (model + protocol are read from it)")
    src.add_argument("--list", action="store_true", help="list methods, models, datasets and protocols")
    src.add_argument("--reproduce", metavar="NAME", help="reproduction manifest (see --list): evaluate --weights on "
                     "the paper's datasets under its protocol; print measured vs published NoC85/NoC90")
    p.add_argument("--datasets", default="synthetic", help="comma-separated dataset names (default: synthetic)")
    p.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT"),
                   help="folder holding GrabCut/, Berkeley/, DAVIS/, ... (default: $IIS_DATA_ROOT)")
    p.add_argument("--protocol", help="preset: ritm, simpleclick, gpcis, m2n2, plain (default: the method's own)")
    p.add_argument("--max-clicks", type=int, help="clicks per instance (default 20)")
    p.add_argument("--target-iou", type=float, help="early-stop IoU (default 0.90)")
    p.add_argument("--thresh", type=float, help="probability threshold (default: the protocol's)")
    p.add_argument("--no-flip", action="store_true", help="disable flip TTA")
    p.add_argument("--iou-analysis", action="store_true", help="no early stop: all clicks, mIoU@k curve, NoC@95")
    p.add_argument("--limit", type=int, help="evaluate only the first N instances of each dataset")
    p.add_argument("--out", help="output folder (default: runs/eval/<method>_<protocol>)")
    p.add_argument("--overwrite", action="store_true", help="discard instances already written in --out")
    p.add_argument("--vis", type=int, default=0, metavar="N", help="write overlays of the first N instances")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--weights", help="state dict to load into --method MODEL (e.g. converted weights)")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the method/model builder (repeatable)")
    p.add_argument("--sd2-path", help="local stable-diffusion-2 folder (M2N2); same as --method-arg sd2_path=...")
    p.add_argument("--dinov2-path", help="local DINOv2 folder (M2N2 DINOv2 variant)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _parse_kv(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"iis-eval: --method-arg {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def _print_list() -> int:
    from ..core.protocol import PRESETS
    from ..data import list_datasets
    from ..models.registry import list_models, list_predictors

    print("training-free methods:", ", ".join(list_predictors()))
    print("models:", ", ".join(list_models()))
    print("datasets:", ", ".join(list_datasets()))
    print("protocols:", ", ".join(PRESETS))
    from ..eval.reproduce import list_lines

    print("reproduction manifests (--reproduce NAME --weights FILE):")
    print("\n".join(list_lines()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        return _print_list()
    try:
        if args.reproduce:
            from ..eval.reproduce import run_reproduce

            return run_reproduce(args, _run)
        return _run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"iis-eval: error: {e}", file=sys.stderr)
        return 2


def _build(args):
    from ..eval.loading import build_method

    kw = _parse_kv(args.method_arg)
    if args.sd2_path:
        kw["sd2_path"] = args.sd2_path
    if args.dinov2_path:
        kw["dinov2_path"] = args.dinov2_path
    return build_method(args.method, ckpt=args.ckpt, weights=args.weights, kwargs=kw)


def _run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..core.protocol import get_protocol
    from ..data import get_dataset
    from ..eval.io import atomic_write_json, provenance
    from ..eval.report import overlay, plot_miou, results_table
    from ..eval.runner import evaluate_step

    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    datasets = [get_dataset(n, args.data_root) for n in names]  # fail fast on a bad name/folder
    built = _build(args)
    desc, note = built.desc, built.note
    base = get_protocol(args.protocol or built.default_protocol).with_options(
        max_clicks=args.max_clicks, target_iou=1.01 if args.iou_analysis else args.target_iou,
        threshold=args.thresh, flip=False if args.no_flip else None)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    title = built.title
    out = Path(args.out or Path("runs") / "eval" / f"{title}_{base.name}")
    results: dict[str, Any] = {**provenance(), "method": desc, "protocol": base.to_dict(),
                               "argv": sys.argv[1:], "datasets": {}}
    summaries = {}
    for ds in datasets:
        n = min(len(ds), args.limit) if args.limit else len(ds)
        bar = tqdm(total=n, desc=ds.name, unit="inst", disable=args.quiet, file=sys.stderr)
        vis_dir = out / "vis" / ds.name

        def on_instance(i, sample, res, vis_dir=vis_dir):
            if args.vis and i < args.vis and res.preds:
                import cv2

                pic = overlay(sample.image, res.preds[-1], res.clicks, sample.gt)
                vis_dir.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(vis_dir / f"{sample.id.replace('/', '_').replace('#', '_')}.png"), pic[..., ::-1])

        t0 = time.perf_counter()
        r = evaluate_step(built.obj, ds, base, device=args.device, dtype=dtype, limit=args.limit, desc=desc,
                          log_path=out / "instances" / f"{ds.name}.jsonl",
                          overwrite=args.overwrite, progress=lambda k, bar=bar: bar.update(k - bar.n),
                          on_instance=on_instance, keep_preds=(lambda i: i < args.vis) if args.vis else None)
        bar.close()
        r.summary["run_seconds"] = time.perf_counter() - t0
        summaries[ds.name] = r.summary
        results["datasets"][ds.name] = r.to_json()
        atomic_write_json(out / "results.json", results)  # after each dataset: nothing is lost
    table = results_table(f"{title} (protocol {base.name})", summaries, note)
    print(table)
    (out / "table.txt").write_text(table + "\n")
    plot_miou(summaries, out / "miou.png", f"{title} - protocol {base.name}")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
