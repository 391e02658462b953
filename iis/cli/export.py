"""``iis-export``: export a trainable model (image, clicks, previous mask -> logits) and verify it.

    iis-export --method simpleclick_vit_base --weights w.pth --format onnx --out simpleclick.onnx
    iis-export --ckpt runs/x/checkpoints/last.ckpt --format torchscript --out model.pt --size 448

The export is checked before it is written: ONNX Runtime (CPU) or the traced TorchScript module against
PyTorch on random inputs (several click counts, batch 1 and 2), max |diff| printed per trial and required
<= 1e-4 x max |logit|. Exit 0 = written and verified, 1 = parity failed (nothing written), 2 = bad input or
an operator that cannot be exported (named in the message).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iis-export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--method", help="registered model name (iis-eval --list)")
    src.add_argument("--ckpt", help="checkpoint written by iis-train")
    p.add_argument("--weights", help="state dict for --method (as iis-eval --weights)")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model builder keyword argument (YAML value), repeatable")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", required=True, help="output file (.onnx / .pt)")
    p.add_argument("--size", type=int, default=None,
                   help="input side the export is traced at and, for the ViT families, fixed to (default: the "
                        "side the model's protocol feeds: 448 simpleclick, 384 gpcis; 448 otherwise)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check (not recommended)")
    return p


def _parse_kv(items: Sequence[str]) -> dict:
    import yaml

    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--method-arg {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def default_size(protocol_name: str) -> int:
    """The square side a protocol feeds the network (its squash size), else 448."""
    from ..core.protocol import PRESETS

    p = PRESETS.get(protocol_name)
    if p is not None and p.infer_size:
        return int(p.infer_size)
    ts = p.zoom_in.target_size if p is not None and p.zoom_in is not None else None
    if isinstance(ts, tuple) and ts[0] == ts[1]:
        return int(ts[0])
    return 448


def _run(args) -> int:
    from pathlib import Path

    from ..eval.loading import build_method
    from ..export import export_model

    out = Path(args.out)
    if not out.parent.is_dir():  # fail before a long export
        raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist")
    if args.opset < 17:
        raise ValueError(f"--opset {args.opset}: expected >= 17")

    built = build_method(args.method, ckpt=args.ckpt, weights=args.weights, kwargs=_parse_kv(args.method_arg))
    if not built.is_model:
        raise ValueError(f"--method {args.method!r}: a training-free method has no network to export; expected a "
                         "trainable model (iis-eval --list)")
    if built.note:
        print(built.note, file=sys.stderr)
    size = args.size or default_size(built.default_protocol)
    if size < 32:
        raise ValueError(f"--size {size}: expected >= 32 pixels")
    kw = {"size": size, "verify": not args.no_verify}
    if args.format == "onnx":
        kw["opset"] = args.opset
    rep = export_model(built.obj, args.out, args.format, **kw)
    shape = f"{size}x{size} fixed" if rep.input_size else "dynamic H, W"
    print(f"{rep.model}: {rep.format} -> {rep.path} ({shape}; batch and clicks dynamic; {rep.seconds:.1f} s)")
    if rep.custom_ops:
        print(f"non-standard operators (ONNX Runtime only): {', '.join(rep.custom_ops)}")
    if rep.checks:
        print(rep.table())
        print(f"parity: max |diff| / max |logit| = {rep.max_ratio:.2e} (required <= 1e-4): PASS")
    else:
        print("parity: not checked (--no-verify)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..export import ExportError

    try:
        return _run(args)
    except ExportError as e:
        if e.report is not None and e.report.checks:
            print(e.report.table(), file=sys.stderr)
            print(f"iis-export: error: {e}", file=sys.stderr)
            return 1
        print(f"iis-export: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"iis-export: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
