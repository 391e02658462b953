"""``iis-eval``: NoC tables for a method or checkpoint under an exact, recorded protocol.

Examples::

    iis-eval --method random_walker --datasets grabcut,berkeley --data-root ../shared/data
    iis-eval --ckpt runs/quickstart/latest/checkpoints/last.ckpt --datasets synthetic
    iis-eval --method m2n2 --method-arg sd2_path=/models/stable-diffusion-2 --datasets davis
    iis-eval --reproduce simpleclick_vit_base_cocolvis --weights cocolvis_vit_base.pth
    iis-eval --method simpleclick_vit_base --weights w.pth --datasets sbd --device cuda --devices 4

Bad input (an argument out of range or that does not apply to the method, a file of the wrong kind,
an invalid dataset instance without ``--skip-invalid``, an ``--out`` in use or holding results of
something else) prints one line ``iis-eval: error: ...`` and exits 2, before anything is written
where possible.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core.errors import IISError, InvalidSampleError

__all__ = ["main", "build_parser", "PATH_OPTIONS"]

# M2N2 model folders, and the methods whose attention source can use them (iis/methods/m2n2/predictor.py:
# m2n2_affinity/m2n2_effnet are weight-free, m2n2_dinov2 is fixed to DINOv2); elsewhere they would be ignored.
PATH_OPTIONS: dict[str, tuple[str, ...]] = {
    "sd2_path": ("m2n2", "attention_nn", "kl_nn", "m2n2_no_floodfill"),
    "dinov2_path": ("m2n2", "m2n2_dinov2", "attention_nn", "kl_nn", "m2n2_no_floodfill"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block (the usage is in --help)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _ranged(kind: Callable[[str], Any], ok: Callable[[Any], bool], expect: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expect}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expect}, got {text}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="iis-eval", description=__doc__.split("\n\n")[0],
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
    p.add_argument("--max-clicks", type=_ranged(int, lambda v: v >= 1, "an integer >= 1"),
                   help="clicks per instance (default 20)")
    p.add_argument("--target-iou", type=_ranged(float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
                   help="early-stop IoU (default 0.90); see --iou-analysis for no early stop")
    p.add_argument("--thresh", type=_ranged(float, lambda v: 0 < v < 1, "a number in (0, 1)"),
                   help="probability threshold (default: the protocol's)")
    p.add_argument("--no-flip", action="store_true", help="disable flip TTA (models only)")
    p.add_argument("--iou-analysis", action="store_true", help="no early stop: all clicks, mIoU@k curve, NoC@95")
    p.add_argument("--limit", type=_ranged(int, lambda v: v >= 1, "an integer >= 1"),
                   help="evaluate only the first N instances of each dataset")
    p.add_argument("--out", help="output folder (default: runs/eval/<method>_<protocol>)")
    p.add_argument("--overwrite", action="store_true", help="discard instances already written in --out")
    p.add_argument("--skip-invalid", action="store_true",
                   help="record instances the reader refuses (empty object, bad mask values, corrupt image) as "
                        "skipped, listed in the table and results.json, instead of stopping")
    p.add_argument("--vis", type=_ranged(int, lambda v: v >= 0, "an integer >= 0"), default=0, metavar="N",
                   help="write overlays of the first N instances")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:i")
    p.add_argument("--devices", type=_ranged(int, lambda v: v >= 1, "an integer >= 1"), default=1, metavar="N",
                   help="evaluate on N worker processes: N CPU shares (--device cpu) or GPUs cuda:0..N-1 "
                        "(--device cuda); instance i goes to rank i %% N, the numbers are those of one device")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="autocast dtype of a model (default fp32); "
                   "changes numbers, so it is part of the instance-log identity")
    p.add_argument("--channels-last", action="store_true", help="run the model in channels-last memory format "
                   "(models only; part of the log identity)")
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile (models only; part "
                   "of the log identity)")
    p.add_argument("--batch-size", type=_ranged(int, lambda v: v >= 1, "an integer >= 1"), default=1, metavar="B",
                   help="instances evaluated in lockstep, one model forward for all their crops (default 1); same "
                        "numbers as 1 on CPU; training-free methods run one at a time")
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
        k, sep, v = it.partition("=")
        if not sep or not k.isidentifier():
            raise IISError(f"--method-arg {it!r}: expected KEY=VALUE with KEY a Python identifier")
        if k in out:
            raise IISError(f"--method-arg {k}: given twice")
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
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad argument (2, its one line already printed)
        return e.code if isinstance(e.code, int) else 2
    if args.list:
        return _print_list()
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    from ..eval.distributed import WorkerError

    try:
        if args.reproduce:
            from ..eval.reproduce import run_reproduce

            return run_reproduce(args, _run)
        return _run(args)
    except InvalidSampleError as e:
        print(f"iis-eval: error: {e} (pass --skip-invalid to record such instances as skipped)", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # IISError is a ValueError; OSError: a file or folder the user named
        print(f"iis-eval: error: {e}", file=sys.stderr)
        return 2
    except WorkerError as e:  # --devices: a worker died or crashed (not bad input); its log is kept
        print(f"iis-eval: error: {e}", file=sys.stderr)
        return 1


def _method_kwargs(args) -> dict[str, Any]:
    kw = _parse_kv(args.method_arg)
    for key, val in (("sd2_path", args.sd2_path), ("dinov2_path", args.dinov2_path)):
        if val:
            if key in kw:
                raise IISError(f"--{key.replace('_', '-')}: also given as --method-arg {key}")
            kw[key] = val
    for key, methods in PATH_OPTIONS.items():
        if key in kw and args.method not in methods:
            opt = f"--{key.replace('_', '-')}" if getattr(args, key) else f"--method-arg {key}"
            raise IISError(f"{opt}: {args.method or 'a --ckpt'} does not use it (only {', '.join(methods)})")
    return kw


def _build(args):
    from ..eval.loading import build_method

    return build_method(args.method, ckpt=args.ckpt, weights=args.weights, kwargs=_method_kwargs(args))


def _check_args(args) -> None:
    """Refuse options that cannot apply, before anything is built or written."""
    from ..core.protocol import get_protocol
    from ..models.registry import list_predictors

    if args.iou_analysis and args.target_iou is not None:
        raise IISError("--target-iou: has no effect with --iou-analysis (no early stop); pass one of them")
    if args.method in list_predictors():  # training-free: no network, no weights, no model transforms
        for opt, given in (("--weights", args.weights), ("--precision", args.precision),
                           ("--no-flip", args.no_flip), ("--channels-last", args.channels_last),
                           ("--compile", args.compile)):
            if given:
                raise IISError(f"{opt}: {args.method} is a training-free method; {opt} applies to models only")
        if args.protocol:
            p = get_protocol(args.protocol)
            used = [n for n, on in (("flip TTA", p.flip), ("zoom-in", p.zoom_in), ("infer_size", p.infer_size)) if on]
            if used:
                raise IISError(f"--protocol {args.protocol}: its {', '.join(used)} apply to models only, not to "
                               f"the training-free {args.method}; use plain or m2n2")
    _check_device(args.device)
    if args.devices > 1:
        from ..eval.distributed import check_devices

        check_devices(args.devices, args.device)
    _check_inference(args)
    if args.out:
        _check_out(Path(args.out))


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise IISError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise IISError(f"--device {device}: no CUDA GPU is visible to torch here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise IISError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise IISError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise IISError(f"--device {device!r}: expected cpu, cuda or cuda:N")


def _check_inference(args) -> None:
    """Refuse a --precision the device cannot run and a --compile that cannot work here."""
    import shutil

    import torch

    dev = torch.device(args.device)
    if args.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
        if dev.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise IISError(f"--precision bf16: {torch.cuda.get_device_name(dev)} has no bfloat16 support; use fp16 or fp32")
        try:  # a one-layer probe: autocast support differs by device type and torch build
            with torch.no_grad(), torch.autocast(dev.type, dtype=dtype):
                torch.nn.Conv2d(3, 2, 3).to(dev)(torch.rand(1, 3, 8, 8, device=dev))
        except (RuntimeError, TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise IISError(f"--precision {args.precision}: not supported on {dev.type} by this torch ({first[:120]}); "
                           "use fp32" + (" or bf16" if args.precision == "fp16" else "")) from None
    if args.compile:
        if not hasattr(torch, "compile"):
            raise IISError("--compile: this torch has no torch.compile")
        if dev.type == "cpu" and not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")):
            raise IISError("--compile: torch.compile on CPU needs a C++ compiler (g++), none found on PATH")


def _check_out(out: Path) -> None:
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise IISError(f"--out {out}: {p} exists and is not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise IISError(f"--out {out}: folder {p} is not writable")
            return


def _write_overlay(vis_dir: Path, num: int, i: int, sample: Any, res: Any) -> None:
    # module level (not a closure) so that --devices workers can receive it
    if i < num and res.preds:
        import cv2

        from ..eval.report import overlay

        pic = overlay(sample.image, res.preds[-1], res.clicks, sample.gt)
        vis_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(vis_dir / f"{sample.id.replace('/', '_').replace('#', '_')}.png"), pic[..., ::-1])


def _below(num: int, i: int) -> bool:
    return i < num


def _device_pool(args, method):
    """``--devices N``: the worker pool that shards each dataset (iis/eval/distributed.py); None for one device."""
    if args.devices == 1:
        import contextlib

        return contextlib.nullcontext()
    from ..eval.distributed import DevicePool

    return DevicePool(method, args.devices, args.device)


def _run(args) -> int:
    import functools

    import torch
    from tqdm import tqdm

    from ..core.protocol import get_protocol
    from ..data import get_dataset
    from ..eval.identity import method_identity
    from ..eval.io import atomic_write_json, atomic_write_text, exclusive_lock, provenance
    from ..eval.report import plot_miou, results_table
    from ..eval.distributed import check_log_layout
    from ..eval.runner import evaluate_step

    _check_args(args)
    _method_kwargs(args)  # refuse bad --method-arg before the datasets are opened
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not names:
        raise IISError(f"--datasets {args.datasets!r}: expected comma-separated dataset names")
    if len(set(n.lower() for n in names)) < len(names):
        raise IISError(f"--datasets {args.datasets}: a dataset is named twice")
    datasets = [get_dataset(n, args.data_root) for n in names]  # fail fast on a bad name/folder
    for ds in datasets:
        if len(ds) == 0:
            raise IISError(f"dataset {ds.name}: no instances found in {getattr(ds, 'root', '?')}")
    built = _build(args)
    desc, note = built.desc, built.note
    base = get_protocol(args.protocol or built.default_protocol).with_options(
        max_clicks=args.max_clicks, target_iou=1.01 if args.iou_analysis else args.target_iou,
        threshold=args.thresh, flip=False if args.no_flip else None)
    precision = args.precision or "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    # hashes the ckpt/weights file once for the whole run; the inference options change numbers, so resume
    # refuses another setting (the batch size does not: it is not there)
    identity = method_identity(desc, precision, channels_last=args.channels_last, compile=args.compile)
    title = built.title
    out = Path(args.out or Path("runs") / "eval" / f"{title}_{base.name}")
    _check_out(out)
    results: dict[str, Any] = {**provenance(), "method": desc, "method_identity": identity,
                               "protocol": base.to_dict(), "argv": args.argv, "devices": args.devices,
                               "inference": {"precision": precision, "channels_last": args.channels_last,
                                             "compile": args.compile, "batch_size": args.batch_size,
                                             "batched": built.is_model and args.batch_size > 1},
                               "skip_invalid": args.skip_invalid, "datasets": {}}
    summaries = {}
    with exclusive_lock(out / ".iis-eval.lock"), _device_pool(args, built.obj) as pool:
        step = pool.evaluate_step if pool is not None else functools.partial(evaluate_step, built.obj)
        for ds in datasets:
            n = min(len(ds), args.limit) if args.limit else len(ds)
            bar = tqdm(total=n, desc=ds.name, unit="inst", disable=args.quiet, file=sys.stderr)
            on_instance = functools.partial(_write_overlay, out / "vis" / ds.name, args.vis)
            t0 = time.perf_counter()
            check_log_layout(out / "instances" / f"{ds.name}.jsonl", args.devices, args.overwrite)
            try:
                r = step(ds, base, device=args.device, dtype=dtype, limit=args.limit,
                         batch_size=args.batch_size, channels_last=args.channels_last, compile=args.compile,
                         desc=identity, info={"method": desc, "device": args.device},
                         log_path=out / "instances" / f"{ds.name}.jsonl", overwrite=args.overwrite,
                         skip_invalid=args.skip_invalid, progress=lambda k, bar=bar: bar.update(k - bar.n),
                         on_instance=on_instance,
                         keep_preds=functools.partial(_below, args.vis) if args.vis else None)
            except InvalidSampleError as e:
                raise InvalidSampleError(f"{ds.name} {e.sample_id}", e.reason) from None
            finally:
                bar.close()
            r.summary["run_seconds"] = time.perf_counter() - t0
            summaries[ds.name] = r.summary
            results["datasets"][ds.name] = r.to_json()
            atomic_write_json(out / "results.json", results)  # after each dataset: nothing is lost
        table = results_table(f"{title} (protocol {base.name})", summaries, note)
        print(table)
        atomic_write_text(out / "table.txt", table + "\n")
        plot_miou(summaries, out / "miou.png", f"{title} - protocol {base.name}")
    print(f"results: {out / 'results.json'}")
    empty = [name for name, s in summaries.items() if s["num_instances"] == 0]
    if empty:
        raise IISError(f"{', '.join(empty)}: every selected instance was skipped as invalid; no numbers to report "
                       f"(reasons in {out / 'results.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
