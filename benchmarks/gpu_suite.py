"""One prepared GPU run: per-click latency, batched-eval throughput, train-step throughput/MFU, a DDP fit.

Everything uses random weights and synthetic images (no download, no dataset: the GPU machine gets only
the repository tree), writes ONE JSON file and fits in 6 minutes on one GPU. Each section runs in its
own subprocess under a time box; a section that fails or runs out of time records its error and the
others still run.

Sections (``--sections``, default all):

* ``latency``: per-click model latency at each method's paper configuration: SimpleClick ViT-B (448
  squash + flip, preset ``simpleclick``), AdaptiveClick ViT-B and CPlot ViT-B (the same preset), GPCIS
  R50 (preset ``gpcis``: 384, no flip), RITM HRNet-18 (preset ``ritm``: longer side 400 + flip), and M2N2
  at 854x480 with a full-size random SD2 UNet (``SD2Attention.random_full_size``, fp16).
* ``batched_eval``: evaluation throughput (instances/s, ``evaluate_step`` as ``iis-eval --batch-size``)
  of simpleclick_vit_base for B = 1, 8, 32, fp32 and bf16.
* ``train_step``: simpleclick_vit_base at 448, bf16 autocast, AdamW: images/s and MFU (model FLOPs
  counted by ``torch.utils.flop_counter`` on one forward, x3 for forward + backward, over the device's
  dense bf16 peak; ``--peak-tflops`` when the device is not in the table).
* ``ddp_fit``: a 10-step single-GPU DDP (NCCL) ``iis-train fit`` in a subprocess (the quickstart recipe).

``--smoke`` runs the same code on CPU with tiny models and sizes in seconds (tests/test_gpu_suite.py
checks the JSON); its figures only show that the suite works.

Usage: python benchmarks/gpu_suite.py [--out runs/gpu_suite.json] [--smoke] [--sections latency,train_step]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("latency", "batched_eval", "train_step", "ddp_fit")
# seconds per section on the GPU (sum + start-ups < 6 min) and in --smoke
BUDGET = {"latency": 100, "batched_eval": 90, "train_step": 40, "ddp_fit": 60}
KILL_MARGIN = 10  # a section still running this long after its budget is killed
SMOKE_BUDGET = {"latency": 60, "batched_eval": 60, "train_step": 60, "ddp_fit": 120}
# dense (no sparsity) bf16 tensor peak, TFLOP/s, from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A6000": 155.0, "4090": 165.0,
                    "L4": 121.0, "A10": 125.0}


def _device(smoke: bool) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and not smoke else "cpu"


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _synthetic(n: int, size: tuple[int, int]):
    from iis.data import get_dataset

    return get_dataset("synthetic", num_samples=n, size=size, seed=0)


# --------------------------------------------------------------------------------------------- latency
def _model_latency(name: str, preset: str, device: str, smoke: bool, clicks: int, repeats: int) -> dict[str, Any]:
    from dataclasses import replace

    import torch

    from iis.core.loop import run_instance
    from iis.core.predictor import ModelPredictor
    from iis.core.protocol import get_protocol
    from iis.models.registry import create_model

    proto = get_protocol(preset).with_options(max_clicks=clicks, target_iou=1.01)
    size = (480, 640)
    if smoke:  # same preset logic at toy sizes
        size = (48, 64)
        if proto.zoom_in is not None:
            ts = proto.zoom_in.target_size
            proto = replace(proto, zoom_in=replace(proto.zoom_in, target_size=(32, 32) if isinstance(ts, tuple)
                                                   else (40 if isinstance(ts, int) else None), min_crop_size=20))
        if proto.infer_size:
            proto = replace(proto, infer_size=32)
    torch.manual_seed(0)
    model = create_model(name)
    ds = _synthetic(repeats + 1, size)
    pred = ModelPredictor(model, proto, device)
    s = ds[0]
    run_instance(pred, s.image, s.gt, proto)  # warm-up (cuDNN autotune, allocator)
    pred.latency = 0.0
    n_clicks, t0 = 0, time.perf_counter()
    for i in range(1, repeats + 1):
        s = ds[i]
        res = run_instance(pred, s.image, s.gt, proto)
        n_clicks += len(res.clicks)
    wall = time.perf_counter() - t0
    return {"model": name, "protocol": preset, "image": list(size), "clicks": n_clicks,
            "model_ms_per_click": 1e3 * pred.latency / n_clicks, "wall_ms_per_click": 1e3 * wall / n_clicks,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def _m2n2_latency(device: str, smoke: bool, clicks: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from iis.core.types import Click
    from iis.methods.m2n2 import AffinityAttention, M2N2Predictor, SD2Attention

    if smoke:
        source, hw, what = AffinityAttention(grid=12, device=device), (48, 80), "affinity grid 12 (smoke)"
    else:
        t = time.perf_counter()
        source = SD2Attention.random_full_size(device=device, dtype=torch.float16)
        what = f"SD2 768-v UNet + VAE, random weights, fp16 (built in {time.perf_counter() - t:.1f} s)"
        hw = (480, 854)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*hw, 3)).astype(np.uint8)
    pred = M2N2Predictor(source)
    _sync(device)
    t0 = time.perf_counter()
    pred.set_image(image)
    seq: list[Click] = []
    pred.predict([Click(hw[1] // 2, hw[0] // 2, True)])  # the first click includes the attention pass
    _sync(device)
    first = time.perf_counter() - t0
    times = []
    pts = [(0.2, 0.2, False), (0.6, 0.4, True), (0.8, 0.8, False), (0.4, 0.7, True), (0.3, 0.5, False)]
    seq = [Click(hw[1] // 2, hw[0] // 2, True)]
    for fx, fy, pos in pts[:max(1, clicks - 1)]:
        seq.append(Click(int(fx * hw[1]), int(fy * hw[0]), pos))
        t = time.perf_counter()
        pred.predict(seq)
        _sync(device)
        times.append(time.perf_counter() - t)
    return {"model": "m2n2", "attention": what, "image": [hw[1], hw[0]], "first_click_s": first,
            "ms_per_click": 1e3 * float(np.mean(times)), "clicks": len(times) + 1,
            "stages_s": {k: float(v) for k, v in pred.timings.items()}}


def section_latency(a: argparse.Namespace, left: Callable[[], float]) -> dict[str, Any]:
    device = _device(a.smoke)
    if a.smoke:
        methods = [("simpleclick_vit_test", "simpleclick"), ("adaptiveclick_test", "simpleclick"),
                   ("cplot_test", "simpleclick"), ("gpcis_test", "gpcis"), ("ritm_hrnet_test", "ritm")]
    else:
        methods = [("simpleclick_vit_base", "simpleclick"), ("adaptiveclick_vit_base", "simpleclick"),
                   ("cplot_vit_base", "simpleclick"), ("gpcis_resnet50", "gpcis"), ("ritm_hrnet18", "ritm")]
    out: dict[str, Any] = {"device": device, "methods": {}}
    for name, preset in methods:
        if left() < 15:
            out["methods"][name] = {"error": "skipped: section time box reached"}
            continue
        out["methods"][name] = _guard(lambda: _model_latency(name, preset, device, a.smoke, clicks=5 if a.smoke else 10,
                                                             repeats=1 if a.smoke else 3))
    out["methods"]["m2n2"] = (_guard(lambda: _m2n2_latency(device, a.smoke, clicks=3 if a.smoke else 5))
                              if left() > 20 else {"error": "skipped: section time box reached"})
    return out


# ---------------------------------------------------------------------------------------- batched eval
def section_batched_eval(a: argparse.Namespace, left: Callable[[], float]) -> dict[str, Any]:
    from dataclasses import replace

    import torch

    from iis.core.protocol import get_protocol
    from iis.eval.runner import evaluate_step
    from iis.models.registry import create_model

    device = _device(a.smoke)
    if a.smoke:
        name, size, sizes, clicks = "simpleclick_vit_test", (48, 64), (1, 2, 4), 3
        proto = get_protocol("simpleclick")
        proto = replace(proto, zoom_in=replace(proto.zoom_in, target_size=(32, 32)))
    else:
        name, size, sizes, clicks = "simpleclick_vit_base", (480, 640), (1, 8, 32), 20
        proto = get_protocol("simpleclick")
    proto = proto.with_options(max_clicks=clicks)
    torch.manual_seed(0)
    model = create_model(name)
    out: dict[str, Any] = {"device": device, "model": name, "protocol": proto.name, "image": list(size),
                           "max_clicks": clicks, "runs": []}
    warm = _synthetic(2, size)
    evaluate_step(model, warm, proto, device=device, batch_size=2)
    for precision in ("fp32", "bf16"):
        dtype = None if precision == "fp32" else torch.bfloat16
        for b in sizes:
            if left() < 10:
                out["runs"].append({"precision": precision, "batch_size": b, "error": "skipped: time box"})
                continue
            n = max(2 * b, 4 if a.smoke else 16)

            def run(b=b, n=n, dtype=dtype, precision=precision):
                ds = _synthetic(n, size)
                _sync(device)
                t0 = time.perf_counter()
                r = evaluate_step(model, ds, proto, device=device, dtype=dtype, batch_size=b)
                _sync(device)
                el = time.perf_counter() - t0
                return {"precision": precision, "batch_size": b, "instances": n, "seconds": el,
                        "instances_per_s": n / el, "clicks_per_s": sum(len(x["ious"]) for x in r.instances) / el,
                        "noc90": r.summary["noc"]["90"]}

            out["runs"].append(_guard(run))
    base = {r["precision"]: r["instances_per_s"] for r in out["runs"] if r.get("batch_size") == 1 and "error" not in r}
    for r in out["runs"]:
        if "error" not in r and r["precision"] in base:
            r["speedup_vs_b1"] = r["instances_per_s"] / base[r["precision"]]
    return out


# ------------------------------------------------------------------------------------------ train step
def _peak_tflops(device: str, a: argparse.Namespace) -> tuple[float | None, str]:
    import torch

    if a.peak_tflops:
        return a.peak_tflops, "--peak-tflops"
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, v in PEAK_BF16_TFLOPS.items():
            if key in name:
                return v, f"data sheet, {name} dense bf16"
        return None, f"unknown peak for {name} (pass --peak-tflops)"
    if a.smoke:
        return 1.0, "nominal 1 TFLOP/s (smoke run on CPU: the MFU figure is not meaningful)"
    return None, "no peak for a CPU"


def section_train_step(a: argparse.Namespace, left: Callable[[], float]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from iis.models.registry import create_model

    device = _device(a.smoke)
    name, size, batch, steps = (("simpleclick_vit_test", 64, 2, 3) if a.smoke else ("simpleclick_vit_base", 448, 32, 20))
    torch.manual_seed(0)
    kw = {} if a.smoke else {"img_size": size}
    model = create_model(name, **kw).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device="cpu").manual_seed(0)
    image = torch.rand(batch, 3, size, size, generator=g).to(device)
    prev = torch.rand(batch, 1, size, size, generator=g).to(device)
    target = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float().to(device)
    clicks = torch.tensor([[[size / 2, size / 2, 1.0], [size / 4, size / 4, 0.0]]] * batch, device=device)
    amp = dict(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)

    def step():
        with torch.autocast(**amp):
            logits = model(image, clicks, prev)
            loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        with torch.no_grad(), torch.autocast(**amp):
            model(image[:1], clicks[:1], prev[:1])
    fwd_flops = fc.get_total_flops()  # per image
    for _ in range(2):
        step()
    _sync(device)
    t0, done = time.perf_counter(), 0
    while done < steps and left() > 5:
        step()
        done += 1
    _sync(device)
    el = time.perf_counter() - t0
    ips = batch * done / el
    peak, src = _peak_tflops(device, a)
    achieved = 3 * fwd_flops * ips / 1e12  # forward + backward ~ 3x forward
    return {"device": device, "model": name, "image": size, "batch": batch, "steps": done, "precision": "bf16",
            "images_per_s": ips, "forward_gflops_per_image": fwd_flops / 1e9, "achieved_tflops": achieved,
            "peak_tflops": peak, "peak_source": src, "mfu": achieved / peak if peak else None,
            "max_memory_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None}


# ---------------------------------------------------------------------------------------------- DDP fit
def section_ddp_fit(a: argparse.Namespace, left: Callable[[], float]) -> dict[str, Any]:
    from iis.core.safe_load import safe_load

    device = _device(a.smoke)
    steps = 2 if a.smoke else 10
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "iis.cli.train", "fit", "--config", "experiments/quickstart.yaml",
               f"--trainer.default_root_dir={root}", "--trainer.strategy=ddp", "--trainer.devices=1",
               f"--trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", f"--trainer.max_steps={steps}",
               "--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
               "--data.batch_size=8", "--data.num_workers=0", f"--data.epoch_len={8 * steps}",
               "--trainer.callbacks=[]", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
               "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_top_k=0"]
        env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if device == "cpu":
            env["OMP_NUM_THREADS"] = "1"
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(10.0, left() - 3))
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"iis-train exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        ckpt = safe_load(root / "checkpoints" / "last.ckpt", what="checkpoint")
        backend = "nccl" if device == "cuda" else "gloo"
        return {"device": device, "backend": backend, "steps": int(ckpt.get("global_step", -1)), "wall_s": wall,
                "recipe": "experiments/quickstart.yaml (simpleclick_vit_nano, synthetic), batch 8",
                "command": " ".join(cmd[1:])}


# ------------------------------------------------------------------------------------------------ driver
def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as e:  # one failing method/run is recorded, the rest still run
        return {"error": f"{type(e).__name__}: {str(e).strip()[:500]}", "traceback": traceback.format_exc()[-1500:]}


def _run_section(name: str, a: argparse.Namespace) -> dict[str, Any]:
    """The section in a child process under its time box (a hang, a crash or a CUDA error stays there)."""
    budget = (SMOKE_BUDGET if a.smoke else BUDGET)[name]
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / f"{name}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--part", str(part),
               "--budget", str(budget)] + (["--smoke"] if a.smoke else []) + (
            ["--peak-tflops", str(a.peak_tflops)] if a.peak_tflops else []) + (
            ["--threads", str(a.threads)] if a.threads else [])
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=budget + KILL_MARGIN)
        except subprocess.TimeoutExpired:
            return {"error": f"time box: killed after {budget + KILL_MARGIN} s", "seconds": time.perf_counter() - t0}
        if part.is_file():
            out = json.loads(part.read_text())
        else:
            out = {"error": f"exited {proc.returncode} without a result: {proc.stderr.strip()[-800:]}"}
        out["seconds"] = time.perf_counter() - t0
        return out


def _child(a: argparse.Namespace) -> int:
    start = time.perf_counter()
    left = lambda: a.budget - (time.perf_counter() - start)  # noqa: E731
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    fn = globals()[f"section_{a.section}"]
    out = _guard(lambda: fn(a, left))
    Path(a.part).write_text(json.dumps(out, default=float))
    return 0


def _env() -> dict[str, Any]:
    import platform

    import torch

    import iis

    info: dict[str, Any] = {"iis": iis.__version__, "torch": torch.__version__, "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gb=p.total_memory / 2 ** 30, gpu_count=torch.cuda.device_count())
    else:
        info["gpu"] = None
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/gpu_suite.json", help="the JSON written (default runs/gpu_suite.json)")
    ap.add_argument("--smoke", action="store_true", help="tiny models on CPU in seconds (tests)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak for the MFU (default: table)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads in the sections")
    ap.add_argument("--section", help=argparse.SUPPRESS)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.smoke and a.threads is None:
        a.threads = 1  # tiny models: one intra-op thread beats an OpenMP team on a shared CPU
    if a.section:
        return _child(a)
    names = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad:
        print(f"gpu_suite: error: --sections {bad[0]!r}: expected some of {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    import torch

    if not a.smoke and not torch.cuda.is_available():
        print("gpu_suite: error: no CUDA GPU visible to torch; the full suite is for one GPU (use --smoke on CPU)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result: dict[str, Any] = {"suite": "iis gpu_suite", "smoke": a.smoke, "env": _env(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sections": {}}
    out = Path(a.out)
    for name in names:
        result["sections"][name] = _run_section(name, a)
        result["total_seconds"] = time.perf_counter() - t0
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1, default=float) + "\n")
        os.replace(tmp, out)  # after each section: a later crash loses nothing
        err = result["sections"][name].get("error")
        print(f"{name}: {'ERROR ' + err[:200] if err else 'ok'} ({result['sections'][name]['seconds']:.1f} s)",
              file=sys.stderr)
    print(f"gpu_suite: {out} ({result['total_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
