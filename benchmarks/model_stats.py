"""Parameters and FLOPs of registered models at a given input size.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``, which counts every matmul and
convolution including the attention products ``q @ k^T`` and ``attn @ v`` (thop misses those, so the
published SimpleClick numbers are lower bounds, docs/protocol.md §F). Reported "GFLOPs" = 2 x MACs, the
convention of the papers. Elementwise ops, norms, softmax and GELU are not counted (as in thop).

Input: one ``1x3xSxS`` image with 2 clicks (one positive, one negative) and a previous mask when the
model takes one (protocol.md §F: "a single input of 1x4xSxS with 2 dummy points").

Usage::

    python benchmarks/model_stats.py simpleclick_vit_xtiny simpleclick_vit_base --size 448
    python benchmarks/model_stats.py 'simpleclick_*' --size 448 --device cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iis.models.registry import create_model, list_models  # noqa: E402


def _cpu_sdpa_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    # PyTorch registers no formula for the fused CPU attention kernel; it is the same cost as SDPA
    return sdpa_flop_count(q, k, v)


_CUSTOM = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _CUSTOM[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops


def model_stats(name: str, size: int | tuple[int, int], device: str = "meta", **kwargs) -> dict:
    """Params and forward FLOPs of ``create_model(name, **kwargs)`` on one input of ``size``.

    Args:
        name: registered model name.
        size: input side S or (H, W).
        device: "meta" (no memory, no compute; shapes only) or a real device such as "cpu"/"cuda".

    Returns:
        dict with ``params`` (all parameters), ``gflops`` (2 x GMACs) and ``by_module`` (top-level
        children -> GFLOPs).
    """
    H, W = (size, size) if isinstance(size, int) else size
    with torch.device(device):
        model = create_model(name, **kwargs).eval()
        image = torch.rand(1, 3, H, W)
        clicks = torch.tensor([[[W / 2, H / 2, 1.0], [W / 4, H / 4, 0.0]]])
        prev = torch.zeros(1, 1, H, W) if getattr(model, "with_prev_mask", True) else None
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False, depth=2, custom_mapping=_CUSTOM)
    with counter, torch.no_grad():
        model(image, clicks, prev)
    by_module = {k.split(".", 1)[1]: sum(v.values()) / 1e9 for k, v in counter.get_flop_counts().items()
                 if k.count(".") == 1}
    return {"params": params, "gflops": counter.get_total_flops() / 1e9, "by_module": by_module}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="registered model names or glob patterns")
    ap.add_argument("--size", type=int, nargs="+", default=[448], help="S (square) or H W")
    ap.add_argument("--device", default="meta", help="meta (fast, default), cpu or cuda; falls back to cpu")
    args = ap.parse_args(argv)
    size = args.size[0] if len(args.size) == 1 else tuple(args.size[:2])
    names = [n for pat in args.models for n in (list_models(pat) if any(c in pat for c in "*?[") else [pat])]
    print(f"{'model':32s} {'input':>9s} {'params (M)':>11s} {'GFLOPs':>9s}  by module (GFLOPs)")
    for name in names:
        try:
            s = model_stats(name, size, args.device)
        except (NotImplementedError, RuntimeError) as e:  # data-dependent ops cannot run on meta
            if args.device != "meta":
                raise
            print(f"# {name}: meta device failed ({type(e).__name__}); counting on cpu", file=sys.stderr)
            s = model_stats(name, size, "cpu")
        parts = ", ".join(f"{k} {v:.2f}" for k, v in s["by_module"].items())
        print(f"{name:32s} {str(size):>9s} {s['params'] / 1e6:11.2f} {s['gflops']:9.2f}  {parts}")


if __name__ == "__main__":
    main()
