"""``iis-convert``: the authors' released checkpoint in, an iis checkpoint out (``iis-eval --ckpt`` reads it alone).

Examples::

    iis-convert cocolvis_vit_base.pth simpleclick_vit_base_cocolvis.pth
    iis-convert GPCIS_Resnet50.pth gpcis_resnet50.pth --from official-gpcis --model gpcis_resnet50
    iis-eval --ckpt simpleclick_vit_base_cocolvis.pth --datasets grabcut,berkeley

The file is read without importing or running anything it names (the authors' config objects become
inert data), the family is detected from its key set, the model size from its shapes, and every
official tensor is either mapped or dropped from the family's named list of unused tensors; anything
else is an error naming the keys. The output records the model, the paper's protocol preset, the
source file's name and SHA-256 and the conversion report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iis-convert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("input", metavar="IN.pth", help="the authors' checkpoint (SimpleClick, AdaptiveClick, GPCIS, RITM)")
    p.add_argument("output", metavar="OUT.pth", help="iis checkpoint to write (atomically)")
    p.add_argument("--from", dest="family", default="auto",
                   help="auto (detect from the key set, default), official-simpleclick, official-adaptiveclick, "
                        "official-gpcis or official-ritm")
    p.add_argument("--model", help="expected iis model name (e.g. simpleclick_vit_base); checked against the size "
                                   "read from the file's shapes")
    p.add_argument("--quiet", action="store_true", help="print only errors and the output path")
    return p


def _print_report(conv, src: Path, dst: Path, quiet: bool) -> None:
    r = conv.report
    if not quiet:
        print(f"{src.name} (sha256 {conv.source['sha256'][:16]}...): {conv.family.name} -> {conv.model}"
              f"{' ' + str(conv.kwargs) if conv.kwargs else ''}, protocol {conv.protocol}")
        print(f"  mapped {r.mapped} tensors; dropped {len(r.dropped)} known-unused; reshaped {len(r.reshaped)}")
        by_reason: dict[str, list[str]] = {}
        for key, reason in r.dropped:
            if reason.startswith("second registration of "):  # one line for all aliases
                reason = "second registration of another key (the same tensor, checked equal)"
            by_reason.setdefault(reason, []).append(key)
        for reason, keys in by_reason.items():
            shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            print(f"  dropped  {shown}: {reason}")
        for key, old, new, how in r.reshaped:
            print(f"  reshaped {key} {old} -> {new}: {how}")
        for note in r.notes:
            print(f"  note: {note}")
        if conv.source.get("foreign_classes"):
            print(f"  pickled classes read as inert data: {', '.join(conv.source['foreign_classes'][:6])}"
                  f"{', ...' if len(conv.source['foreign_classes']) > 6 else ''}")
    print(f"wrote {dst}; evaluate with: iis-eval --ckpt {dst} --datasets grabcut,berkeley")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..convert import convert_file

    src, dst = Path(args.input), Path(args.output)
    try:
        if src.exists() and dst.exists() and src.resolve() == dst.resolve():
            raise ValueError(f"{dst}: the output would overwrite the input")
        conv = convert_file(src, dst, family=args.family, model=args.model)
    except (ValueError, FileNotFoundError) as e:  # IISError is a ValueError: one line, exit 2
        print(f"iis-convert: error: {e}", file=sys.stderr)
        return 2
    _print_report(conv, src, dst, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
