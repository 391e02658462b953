"""Export a trainable interactive model (image, clicks, previous mask -> logits) and verify the export.

The exported graph is the model's ``forward`` (:mod:`iis.models.base` contract), nothing else: the
protocol's transforms (zoom-in, resize, flip TTA, sigmoid, paste-back) stay in
:class:`~iis.core.predictor.ModelPredictor`, which :mod:`iis.runtime` runs over the ONNX file.

Signature of every exported graph:

* ``image``: float32 ``(B, 3, H, W)`` RGB in [0, 1]; ``B`` dynamic (flip TTA runs B = 2);
* ``clicks``: float32 ``(B, N, 3)`` rows ``(x, y, label)`` in input pixels, label 1 / 0 / -1 (padding);
  ``N`` dynamic (>= 1; an empty click list is one padding row);
* ``prev_mask``: float32 ``(B, 1, H, W)`` in [0, 1] (absent for models built with ``with_prev_mask=False``);
* output ``logits``: float32 ``(B, 1, H, W)``.

``H, W`` are fixed to ``size`` for the ViT families (SimpleClick, AdaptiveClick, CPlot: their protocols
always feed the squashed ``size x size`` crop) and dynamic for the convolutional ones (RITM, GPCIS), whose
RITM-style zoom-in feeds crops of varying shape.

Per family (measured, README "Export"): everything exports with the standard ONNX domain, opset 18,
except GPCIS, whose GP solve ``torch.linalg.inv_ex`` (``aten::linalg_inv_ex``) has no standard ONNX
operator: it is exported as ONNX Runtime's contrib operator ``com.microsoft::Inverse`` (float64), so that
file runs in ONNX Runtime only; ``--format torchscript`` is the fallback without a contrib operator.
AdaptiveClick's deformable attention is the ``F.grid_sample`` path (ONNX ``GridSample``, opset >= 16).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.errors import IISError

__all__ = ["ExportError", "ExportReport", "export_model", "export_onnx", "export_torchscript", "parity_check",
           "PARITY_RTOL", "is_fixed_size"]

PARITY_RTOL = 1e-4  # required: max |export - pytorch| <= 1e-4 * max |pytorch logit| (issue 14)
DEFAULT_OPSET = 18


class ExportError(IISError):
    """An export that cannot be made or does not match PyTorch (``report``: the failed checks, if any)."""

    def __init__(self, message: str, report: "ExportReport | None" = None):
        super().__init__(message)
        self.report = report


@dataclass
class ExportReport:
    """What an export produced and how closely it matches the PyTorch model.

    Attributes:
        path: the written file.
        format: ``onnx`` or ``torchscript``.
        model: registry name.
        input_size: ``(H, W)`` fixed by the export, or None (dynamic H, W).
        checks: one row per random trial: ``batch``, ``clicks``, ``size``, ``max_abs_diff``, ``max_abs_logit``,
            ``ratio`` (= diff / max logit).
        custom_ops: non-standard operators in the file (e.g. ``com.microsoft::Inverse``).
        seconds: export time.
    """

    path: Path
    format: str
    model: str
    input_size: tuple[int, int] | None
    checks: list[dict[str, Any]] = field(default_factory=list)
    custom_ops: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def max_ratio(self) -> float:
        return max((c["ratio"] for c in self.checks), default=float("nan"))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c["max_abs_diff"] <= PARITY_RTOL * c["max_abs_logit"] for c in self.checks)

    def table(self) -> str:
        rows = [f"{'batch':>5} {'clicks':>6} {'size':>9} {'max|diff|':>11} {'max|logit|':>11} {'ratio':>9}"]
        for c in self.checks:
            rows.append(f"{c['batch']:>5} {c['clicks']:>6} {'x'.join(map(str, c['size'])):>9} "
                        f"{c['max_abs_diff']:>11.3e} {c['max_abs_logit']:>11.3e} {c['ratio']:>9.2e}")
        return "\n".join(rows)


class _Exportable(nn.Module):
    """``forward(image, clicks[, prev_mask])`` of an interactive model (no prev input without one)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.with_prev_mask = bool(getattr(model, "with_prev_mask", True))

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None):
        return self.model(image, clicks, prev_mask if self.with_prev_mask else None)


def is_fixed_size(model: nn.Module) -> bool:
    """ViT families (a SimpleClick encoder: windowed attention, position embedding on the token grid) are
    exported at one input size; the convolutional families with dynamic H, W."""
    enc = getattr(model, "encoder", None)
    return enc is not None and hasattr(enc, "padded_size")


def _inputs(model: nn.Module, batch: int, n: int, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    H, W = size
    image = torch.rand(batch, 3, H, W, generator=g)
    # clicks in distinct pixels (sub-pixel offsets kept), as a session's clicks are: two clicks read at one
    # pixel make GPCIS's kernel matrix singular up to its 1e-7 jitter, and any two solvers then disagree
    cells = torch.stack([torch.randperm(H * W, generator=g)[:n] for _ in range(batch)])
    frac = torch.rand(batch, n, 2, generator=g) * 0.999
    xy = torch.stack([cells % W, cells // W], -1).float() + frac
    xy = torch.minimum(xy, torch.tensor([W - 1.0, H - 1.0]))
    lab = torch.randint(0, 2, (batch, n, 1), generator=g).float()
    lab[:, 0] = 1.0  # a first positive click, as in every session
    clicks = torch.cat([xy, lab], -1)
    if n >= 3:
        clicks[-1, -1] = -1.0  # one padding row (how a batch pads unequal click counts)
    prev = torch.rand(batch, 1, H, W, generator=g)
    return image, clicks, prev


def _trials(size: tuple[int, int], fixed: bool) -> list[tuple[int, int, tuple[int, int]]]:
    """(batch, clicks, size) of the parity trials: several click counts, both batch sizes; for dynamic
    H, W also a non-square and a larger input."""
    h, w = size
    out = [(1, 1, size), (2, 3, size), (2, 8, size), (1, 20, size)]
    if not fixed:
        out += [(2, 5, (h + 32, max(w - 24, 32))), (1, 2, (max(h // 2, 32), w + 40))]
    return out


def parity_check(run: Callable[..., torch.Tensor | np.ndarray], model: nn.Module, size: tuple[int, int],
                 fixed: bool, seed: int = 0) -> list[dict[str, Any]]:
    """Compare ``run(image, clicks, prev)`` with the PyTorch model on random inputs."""
    wrapped = _Exportable(model).eval()
    rows = []
    for i, (b, n, sz) in enumerate(_trials(size, fixed)):
        image, clicks, prev = _inputs(model, b, n, sz, seed + i)
        with torch.no_grad():
            ref = wrapped(image, clicks, prev).float().numpy()
            out = run(image, clicks, prev)
        out = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        if out.shape != ref.shape:
            raise ExportError(f"parity: export returned shape {out.shape}, PyTorch {ref.shape} "
                              f"(batch {b}, {n} clicks, {sz[0]}x{sz[1]})")
        diff, scale = float(np.abs(out - ref).max()), float(np.abs(ref).max())
        rows.append({"batch": b, "clicks": n, "size": list(sz), "max_abs_diff": diff, "max_abs_logit": scale,
                     "ratio": diff / scale if scale > 0 else float("inf")})
    return rows


def _metadata(model: nn.Module, fmt: str, input_size: tuple[int, int] | None, opset: int | None,
              custom_ops: list[str]) -> dict[str, Any]:
    from .. import __version__

    return {"model": getattr(model, "iis_spec", {"name": type(model).__name__, "kwargs": {}}),
            "protocol": getattr(model, "default_protocol", "ritm"), "input_size": list(input_size) if input_size else None,
            "with_prev_mask": bool(getattr(model, "with_prev_mask", True)), "format": fmt, "opset": opset,
            "custom_ops": custom_ops, "iis_version": __version__,
            "signature": "image (B,3,H,W) [0,1], clicks (B,N,3) (x,y,label 1/0/-1), prev_mask (B,1,H,W) -> logits (B,1,H,W)"}


def _custom_table() -> tuple[dict, list[str]]:
    """``aten::linalg_inv_ex`` (GPCIS's GP solve) -> ONNX Runtime's ``com.microsoft::Inverse``."""
    import onnx
    import onnxscript
    from onnxscript import opset18 as op

    msft = onnxscript.values.Opset("com.microsoft", 1)
    schema = onnx.defs.OpSchema(
        "Inverse", "com.microsoft", 1,
        inputs=[onnx.defs.OpSchema.FormalParameter("X", "T")],
        outputs=[onnx.defs.OpSchema.FormalParameter("Y", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(double)", "tensor(float16)"], "")])
    inverse = onnxscript.values.Op(msft, "Inverse", schema)

    def linalg_inv_ex(A):
        # info (0 = success) is only read by GPHead's retry loop, which export skips
        info = op.ConstantOfShape(op.Shape(A, start=0, end=-2),
                                  value=onnxscript.ir.tensor([0], dtype=onnxscript.ir.DataType.INT32))
        return inverse(A), info

    return {torch.ops.aten.linalg_inv_ex.default: linalg_inv_ex}, ["com.microsoft::Inverse"]


_OP_RE = re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)'")


def _blocked_op(exc: BaseException) -> str | None:
    text = str(exc)
    cur: BaseException | None = exc
    while cur is not None:
        text += "\n" + str(cur)
        cur = cur.__cause__ or cur.__context__
    m = _OP_RE.search(text)
    return m.group(1).replace("aten.", "aten::") if m else None


def _atomic_dir(out: Path):
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist")
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def _publish(tmp: Path, out: Path) -> None:
    """Move every file of ``tmp`` (the model and any external-data file) next to ``out``, then drop tmp."""
    for f in sorted(tmp.iterdir()):
        os.replace(f, out.parent / f.name)
    tmp.rmdir()


def export_onnx(model: nn.Module, out: str | Path, *, size: int = 448, opset: int = DEFAULT_OPSET,
                fixed_size: bool | None = None, verify: bool = True) -> ExportReport:
    """Export ``model`` to ONNX, check it with ONNX Runtime (CPU) against PyTorch, then write ``out``.

    The file is written only when the parity check passes (``max |diff| <= 1e-4 * max |logit|`` on every
    trial); otherwise :class:`ExportError` says by how much it failed.
    """
    import onnxruntime as ort

    if opset < 17:
        raise ExportError(f"--opset {opset}: expected >= 17")
    out = Path(out)
    model = model.eval().float().cpu()
    fixed = is_fixed_size(model) if fixed_size is None else fixed_size
    name = getattr(model, "iis_spec", {}).get("name", type(model).__name__)
    wrapped = _Exportable(model).eval()
    args = _inputs(model, 2, 3, (size, size), 1234)
    if not wrapped.with_prev_mask:
        args = args[:2]
    B, N = torch.export.Dim("B", min=1, max=16), torch.export.Dim("N", min=1, max=1024)
    if fixed:
        hw: dict[int, Any] = {}
    else:
        hw = {2: torch.export.Dim("H", min=32, max=4096), 3: torch.export.Dim("W", min=32, max=4096)}
    shapes = {"image": {0: B, **hw}, "clicks": {0: B, 1: N}}
    if wrapped.with_prev_mask:
        shapes["prev_mask"] = {0: B, **hw}
    table, _ = _custom_table()
    t0 = time.perf_counter()
    import warnings

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation/rename chatter, not about this model
            prog = torch.onnx.export(wrapped, args, dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                                     input_names=list(shapes), output_names=["logits"],
                                     custom_translation_table=table, verbose=False)
    except Exception as e:  # noqa: BLE001 - report the operator that blocks it, in one line
        op = _blocked_op(e)
        if op:
            raise ExportError(f"{name}: operator {op} has no ONNX translation; --format torchscript exports "
                              f"this model") from None
        first = next((ln for ln in str(e).splitlines() if "Exception summary" not in ln and ln.strip()), "")
        raise ExportError(f"{name}: ONNX export failed ({type(e).__name__}: {first[:300]}); --format torchscript "
                          "exports this model") from None
    seconds = time.perf_counter() - t0
    tmp = _atomic_dir(out)
    try:
        prog.save(str(tmp / out.name))
        custom = _custom_ops(tmp / out.name)
        meta = _metadata(model, "onnx", (size, size) if fixed else None, opset, custom)
        _write_metadata(tmp / out.name, meta)
        report = ExportReport(out, "onnx", name, (size, size) if fixed else None, custom_ops=custom, seconds=seconds)
        if verify:
            sess = ort.InferenceSession(str(tmp / out.name), providers=["CPUExecutionProvider"])
            inputs = [i.name for i in sess.get_inputs()]

            def run(image, clicks, prev):
                feeds = {"image": image.numpy(), "clicks": clicks.numpy()}
                if "prev_mask" in inputs:
                    feeds["prev_mask"] = prev.numpy()
                return sess.run(["logits"], feeds)[0]

            report.checks = parity_check(run, model, (size, size), fixed)
            if not report.passed:
                raise ExportError(f"{name}: ONNX Runtime differs from PyTorch by up to {report.max_ratio:.2e} x "
                                  f"max|logit| (required <= {PARITY_RTOL:g}); nothing written", report)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _custom_ops(path: Path) -> list[str]:
    """Operators of ``path`` outside the standard ONNX domain (``domain::op``), functions included."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    nodes = list(m.graph.node) + [n for f in m.functions for n in f.node]
    local = {f.domain for f in m.functions}  # the exporter's own function library, not operators
    return sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in ("", "ai.onnx") and n.domain not in local})


def _write_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=f"iis.{k}", value=json.dumps(v))
    onnx.save(m, str(path))  # external data (large models) stays in its file beside, referenced by name


def export_torchscript(model: nn.Module, out: str | Path, *, size: int = 448, verify: bool = True) -> ExportReport:
    """Trace ``model`` with TorchScript (batch and click count dynamic, H = W = ``size`` fixed), check the
    traced module against eager PyTorch, then write ``out`` (``torch.jit.load`` reads it; the iis metadata
    is the extra file ``iis.json``)."""
    import warnings

    out = Path(out)
    model = model.eval().float().cpu()
    name = getattr(model, "iis_spec", {}).get("name", type(model).__name__)
    wrapped = _Exportable(model).eval()
    args = _inputs(model, 2, 3, (size, size), 1234)
    if not wrapped.with_prev_mask:
        args = args[:2]
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints (sizes fixed to `size`, intended)
        try:
            traced = torch.jit.trace(wrapped, args, check_trace=False)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{name}: TorchScript tracing failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300]})") from None
    seconds = time.perf_counter() - t0
    report = ExportReport(out, "torchscript", name, (size, size), seconds=seconds)
    if verify:
        def run(image, clicks, prev):
            with torch.no_grad():
                return traced(image, clicks, prev) if wrapped.with_prev_mask else traced(image, clicks)

        report.checks = parity_check(run, model, (size, size), True)
        if not report.passed:
            raise ExportError(f"{name}: TorchScript differs from PyTorch by up to {report.max_ratio:.2e} x max|logit| "
                              f"(required <= {PARITY_RTOL:g}); nothing written", report)
    tmp = _atomic_dir(out)
    try:
        meta = json.dumps(_metadata(model, "torchscript", (size, size), None, []))
        torch.jit.save(traced, str(tmp / out.name), _extra_files={"iis.json": meta})
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def export_model(model: nn.Module, out: str | Path, fmt: str = "onnx", **kw: Any) -> ExportReport:
    if fmt == "onnx":
        return export_onnx(model, out, **kw)
    if fmt == "torchscript":
        kw.pop("opset", None)
        kw.pop("fixed_size", None)
        return export_torchscript(model, out, **kw)
    raise ExportError(f"--format {fmt!r}: expected onnx or torchscript")
