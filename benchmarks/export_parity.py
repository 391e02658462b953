"""Export parity of every trainable family: the README's Export table, one row per (family, format).

Each family's ``_test`` model (random weights, seed 0) is exported with the same check ``iis-export`` runs
(ONNX Runtime on CPU / the traced TorchScript module against PyTorch on random inputs) and the worst trial
is printed as a Markdown row. A family that fails to export gets its error in the row.

Usage: python benchmarks/export_parity.py [--size 64] [--families simpleclick,ritm] [--formats onnx,torchscript]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import iis
from iis.export import ExportError, export_model

FAMILIES = {"SimpleClick": "simpleclick_vit_test", "AdaptiveClick": "adaptiveclick_test", "CPlot": "cplot_test",
            "GPCIS": "gpcis_test", "RITM": "ritm_hrnet_test"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated family names")
    ap.add_argument("--formats", default="onnx,torchscript")
    args = ap.parse_args()
    print("| family (`_test` model) | format | H, W | max \\|diff\\| (worst trial) | max \\|logit\\| (same trial) "
          "| worst ratio | non-standard ops | export s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for fam in args.families.split(","):
            name = FAMILIES[fam]
            for fmt in args.formats.split(","):
                torch.manual_seed(0)
                model = iis.create_model(name).eval()
                out = Path(tmp) / f"{name}.{'onnx' if fmt == 'onnx' else 'pt'}"
                try:
                    r = export_model(model, out, fmt, size=args.size)
                except ExportError as e:
                    print(f"| {fam} (`{name}`) | {fmt} | | failed: {str(e).splitlines()[0][:80]} | | | | |", flush=True)
                    continue
                w = max(r.checks, key=lambda c: c["ratio"])
                hw = "dynamic" if r.input_size is None else f"{r.input_size[0]} fixed"
                print(f"| {fam} (`{name}`) | {fmt} | {hw} | {w['max_abs_diff']:.2e} | {w['max_abs_logit']:.2e} "
                      f"| {w['ratio']:.2e} | {', '.join(r.custom_ops) or 'none'} | {r.seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
