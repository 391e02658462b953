"""Evaluate a predictor on a dataset under a protocol, resumably.

Per-instance results are appended to ``<out>/<dataset>.jsonl`` (one fsync'ed line each, after a
header line holding the method and protocol), so an interrupted run resumes from the instances
already written; the dataset summary is computed from those lines. ``iis-eval`` and the training
callback both call :func:`evaluate_dataset`, so their numbers come from the same code.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..core.loop import InstanceResult, run_instance
from ..core.metrics import summarize
from ..core.predictor import ModelPredictor, Predictor
from ..core.protocol import EvalProtocol

__all__ = ["evaluate_dataset", "evaluate_step", "DatasetResult", "summarize_instances"]


@dataclass
class DatasetResult:
    name: str
    protocol: EvalProtocol
    instances: list[dict[str, Any]] = field(default_factory=list)  # InstanceResult.to_json() + "wall"
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.summary, "protocol": self.protocol.to_dict(), "instances": self.instances}


def summarize_instances(instances: Sequence[dict[str, Any]], protocol: EvalProtocol) -> dict[str, Any]:
    """Dataset numbers from per-instance records (also used after a DDP gather)."""
    ious = [r["ious"] for r in instances]
    s = summarize(ious, protocol.max_clicks,
                  elapsed=float(sum(r.get("wall", 0.0) for r in instances)),
                  latency=float(sum(r.get("latency", 0.0) for r in instances)))
    if protocol.early_stop and protocol.target_iou < 0.95:
        # runs stopped at target_iou never show whether they would reach 0.95 (protocol.md §A.7)
        s["noc"]["95"] = None
        s["nof"]["95"] = None
    s["noic"] = float(np.mean([r.get("noic", 0) for r in instances])) if instances else float("nan")
    s["miou_early_stopped"] = _held_curve(ious, protocol.max_clicks) if s["miou"] is None else None
    return s


def _held_curve(all_ious: Sequence[Sequence[float]], k: int) -> list[float] | None:
    """mIoU-by-click with early-stopped runs held at their last IoU (for plots only, labelled so)."""
    if not all_ious:
        return None
    arr = np.array([list(x) + [x[-1]] * (k - len(x)) for x in all_ious], np.float64)
    return [float(v) for v in arr.mean(0)]


def _read_jsonl(path: Path, header: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    if not lines:
        return []
    try:
        old = json.loads(lines[0])
    except json.JSONDecodeError:
        raise ValueError(f"{path}: not an iis instance log (bad header); delete it or pick another --out") from None
    if old.get("header") != header:
        raise ValueError(f"{path}: was written with a different method/protocol; pass --overwrite or another --out "
                         f"(stored: {json.dumps(old.get('header'))[:300]})")
    out = []
    for ln in lines[1:]:
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            break  # a torn last line from a killed run: that instance is simply redone
    return out


def evaluate_dataset(
    predictor: Predictor,
    dataset: Any,
    protocol: EvalProtocol,
    *,
    method: dict[str, Any] | None = None,
    log_path: str | Path | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    indices: Iterable[int] | None = None,
    progress: Callable[[int], None] | None = None,
    on_instance: Callable[[int, Any, InstanceResult], None] | None = None,
    keep_preds: Callable[[int], bool] | None = None,
) -> DatasetResult:
    """Run every instance of ``dataset`` (or ``indices``, or the first ``limit``) through ``protocol``.

    Args:
        predictor: see :class:`iis.core.predictor.Predictor`.
        dataset: an ``iis.data`` evaluation dataset (``len``, ``[i] -> Sample``, ``ids()``, ``name``).
        protocol: the protocol already resolved for this dataset (``EvalProtocol.for_dataset``).
        method: description of the method, stored in the log header (resume refuses a mismatch).
        log_path: JSONL file for per-instance results and resume; None keeps everything in memory.
        progress: called with the number of instances finished (including resumed ones) for a bar.
        on_instance: called after each instance with (index, sample, result), e.g. for overlays.
        keep_preds: whether to keep the binary masks of instance ``i`` for ``on_instance``.
    """
    name = getattr(dataset, "name", "dataset")
    idx = list(indices) if indices is not None else list(range(len(dataset)))
    if limit is not None:
        idx = idx[:limit]
    header = {"method": method or {}, "protocol": protocol.to_dict(), "dataset": name}
    done: dict[str, dict[str, Any]] = {}
    fh = None
    if log_path is not None:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            log_path.unlink(missing_ok=True)
        done = {r["id"]: r for r in _read_jsonl(log_path, header)}
        # rewrite header + good lines, dropping a torn tail, then append
        tmp = log_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(x) + "\n" for x in [{"header": header}, *done.values()]))
        os.replace(tmp, log_path)
        fh = open(log_path, "a")
    ids = dataset.ids() if hasattr(dataset, "ids") else None
    records: list[dict[str, Any]] = []
    try:
        for n, i in enumerate(idx):
            sid = ids[i] if ids is not None else None
            if sid is not None and sid in done:
                records.append(done[sid])
                if progress:
                    progress(n + 1)
                continue
            t0 = time.perf_counter()  # wall time includes decoding, as the reference's SPC does
            sample = dataset[i]
            res = run_instance(predictor, sample.image, sample.gt, protocol, id=sample.id,
                               keep_preds=bool(keep_preds and keep_preds(i)))
            rec = {**res.to_json(), "wall": time.perf_counter() - t0}
            records.append(rec)
            if fh is not None:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            if on_instance:
                on_instance(i, sample, res)
            if progress:
                progress(n + 1)
    finally:
        if fh is not None:
            fh.close()
    return DatasetResult(name, protocol, records, summarize_instances(records, protocol))


def evaluate_step(
    method: Any,
    dataset: Any,
    base: EvalProtocol,
    *,
    device: str = "cpu",
    dtype: Any = None,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    **kwargs: Any,
) -> DatasetResult:
    """The one evaluation step of ``iis-eval`` and the training callback: resolve the protocol for
    ``dataset``, build the predictor, evaluate this rank's share, gather, summarise.

    Args:
        method: an interactive model (``nn.Module``, wrapped in :class:`ModelPredictor`) or a
            training-free predictor.
        base: the protocol before per-dataset overrides.
        limit: only the first ``limit`` instances.
        rank, world_size: instance ``i`` is evaluated by rank ``i % world_size``.
        gather: merges the ranks' per-instance records (each instance once); None = single process.
        **kwargs: passed to :func:`evaluate_dataset` (``method`` description as ``desc``, ``log_path``...).
    """
    import torch

    proto = base.for_dataset(getattr(dataset, "name", "dataset"))
    if isinstance(method, torch.nn.Module):
        predictor = ModelPredictor(method, proto, device, dtype)
    else:
        predictor = method
        if hasattr(predictor, "to"):
            predictor.to(device)
    n = min(len(dataset), limit) if limit else len(dataset)
    desc = kwargs.pop("desc", None)
    r = evaluate_dataset(predictor, dataset, proto, method=desc, indices=range(rank, n, world_size), **kwargs)
    if gather is not None:
        r.instances = gather(r.instances)
        r.summary = summarize_instances(r.instances, proto)
    r.summary["max_clicks"] = proto.max_clicks
    return r
