"""Evaluate a predictor on a dataset under a protocol, resumably.

Per-instance results are appended to ``<out>/instances/<dataset>.jsonl``: a header line holding the
content identity of what produced them (:mod:`iis.eval.identity`, the protocol and the package
version), then one fsync'ed line per instance. An interrupted run resumes from the instances already
written; a stored identity that differs from the current one is refused, naming the field. The log
keeps every instance ever computed under that identity (a ``--limit`` run never drops the others);
the returned :class:`DatasetResult` holds the current selection only.

Instance records: ``{"id", "ious", "clicks", "noic", "timing": {"wall", "latency"}}``; everything but
``timing`` is a deterministic function of the identity, so two runs' records minus ``timing`` are
byte-identical. An instance whose sample the reader refused (:class:`InvalidSampleError`) is
``{"id", "skipped": reason}`` when ``skip_invalid`` is set, and is never counted in NoC/NoF/mIoU.

``iis-eval`` and the training callback both call :func:`evaluate_step`, so their numbers come from the
same code.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..core.errors import IISError, InvalidSampleError
from ..core.loop import EvalItem, InstanceResult, InstanceStep, run_instances
from ..core.metrics import summarize
from ..core.predictor import ModelPredictor, Predictor
from ..core.protocol import EvalProtocol
from .identity import dataset_identity, first_difference
from .io import atomic_write_bytes, dumps

__all__ = ["evaluate_dataset", "evaluate_step", "DatasetResult", "summarize_instances", "LOG_FORMAT",
           "deterministic_record"]

LOG_FORMAT = 2  # 1: header {"method", "protocol", "dataset"} (names only), "wall"/"latency" in each record


def deterministic_record(rec: dict[str, Any]) -> dict[str, Any]:
    """An instance record without its timings (the part two runs reproduce byte for byte)."""
    return {k: v for k, v in rec.items() if k != "timing"}


@dataclass
class DatasetResult:
    """Records of the current selection (scored and skipped), their summary, and the log's size.

    Attributes:
        instances: per-instance records as in the log (see module docstring), selection order.
        summary: :func:`summarize_instances` of ``instances`` (+ ``max_clicks``, ``selection``).
        identity: the header identity (None without a log).
        log_records: instances held by the log after this run (>= the selection; None without a log).
    """

    name: str
    protocol: EvalProtocol
    instances: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] | None = None
    log_records: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` entry: summary, protocol, identity, scored instances without timings,
        their timings apart, and the skipped instances (inside the summary)."""
        scored = [r for r in self.instances if "skipped" not in r]
        return {**self.summary, "protocol": self.protocol.to_dict(), "identity": self.identity,
                "log_records": self.log_records,
                "instances": [deterministic_record(r) for r in scored],
                "timings": [{"id": r["id"], **r.get("timing", {})} for r in scored]}


def summarize_instances(instances: Sequence[dict[str, Any]], protocol: EvalProtocol) -> dict[str, Any]:
    """Dataset numbers from per-instance records (also used after a DDP gather); skipped ones are
    listed, never counted."""
    scored = [r for r in instances if "skipped" not in r]
    ious = [r["ious"] for r in scored]
    s = summarize(ious, protocol.max_clicks,
                  elapsed=float(sum(r.get("timing", {}).get("wall", 0.0) for r in scored)),
                  latency=float(sum(r.get("timing", {}).get("latency", 0.0) for r in scored)))
    if protocol.early_stop and protocol.target_iou < 0.95:
        # runs stopped at target_iou never show whether they would reach 0.95 (protocol.md §A.7)
        s["noc"]["95"] = None
        s["nof"]["95"] = None
    s["noic"] = float(np.mean([r.get("noic", 0) for r in scored])) if scored else float("nan")
    s["miou_early_stopped"] = _held_curve(ious, protocol.max_clicks) if s["miou"] is None else None
    s["num_skipped"] = len(instances) - len(scored)
    s["skipped"] = [{"id": r["id"], "reason": r["skipped"]} for r in instances if "skipped" in r]
    return s


def _held_curve(all_ious: Sequence[Sequence[float]], k: int) -> list[float] | None:
    """mIoU-by-click with early-stopped runs held at their last IoU (for plots only, labelled so)."""
    if not all_ious:
        return None
    arr = np.array([list(x) + [x[-1]] * (k - len(x)) for x in all_ious], np.float64)
    return [float(v) for v in arr.mean(0)]


def _valid_record(rec: Any) -> bool:
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
        return False
    if "skipped" in rec:
        return isinstance(rec["skipped"], str)
    return isinstance(rec.get("ious"), list) and isinstance(rec.get("clicks"), list)


def _read_log(path: Path, identity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Records of an existing log whose header matches ``identity``, by id.

    A torn last line (no newline: the run was killed while writing it) is dropped, so that instance is
    redone; any other unreadable line means the file was damaged or edited, and is an error.
    """
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text:
        return {}
    lines = text.split("\n")  # the last item is "" when the file ends with a newline
    again = "delete it, pass --overwrite or choose another --out"
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict) or not isinstance(head.get("header"), dict):
        raise IISError(f"{path}:1: not an iis instance log (no header line); {again}")
    stored = head["header"].get("identity")
    if not isinstance(stored, dict) or stored.get("format") != LOG_FORMAT:
        raise IISError(f"{path}: written by an older iis-eval (log format "
                       f"{(stored or {}).get('format', 1)}, no content identity); {again}")
    diff = first_difference(stored, identity)
    if diff:
        n = sum(1 for ln in lines[1:] if ln.strip())
        raise IISError(f"{path}: resume refused, {diff}; pass --overwrite to discard its {n} stored instance(s), "
                       "or choose another --out")
    body = lines[1:]
    records: dict[str, dict[str, Any]] = {}
    for no, ln in enumerate(body, 2):
        last = no == len(lines)
        if last and not ln:
            break
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            rec = None
        if not _valid_record(rec):
            if last:
                break  # torn tail of a killed run: that instance is simply redone
            raise IISError(f"{path}:{no}: not an instance record ({ln[:60]!r}); the log is damaged; {again}")
        records[rec["id"]] = rec
    return records


def evaluate_dataset(
    predictor: Predictor,
    dataset: Any,
    protocol: EvalProtocol,
    *,
    method: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    log_path: str | Path | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    indices: Iterable[int] | None = None,
    skip_invalid: bool = False,
    progress: Callable[[int], None] | None = None,
    on_instance: Callable[[int, Any, InstanceResult], None] | None = None,
    keep_preds: Callable[[int], bool] | None = None,
    batch_size: int = 1,
) -> DatasetResult:
    """Run every instance of ``dataset`` (or ``indices``, or the first ``limit``) through ``protocol``.

    Args:
        predictor: see :class:`iis.core.predictor.Predictor`.
        dataset: an ``iis.data`` evaluation dataset (``len``, ``[i] -> Sample``, ``ids()``, ``name``).
        protocol: the protocol already resolved for this dataset (``EvalProtocol.for_dataset``).
        method: content identity of the method (:func:`iis.eval.identity.method_identity`), stored in
            the log header; resume refuses a mismatch.
        info: recorded in the header but not compared (paths, device...).
        log_path: JSONL file for per-instance results and resume; None keeps everything in memory.
            The caller holds the lock on its folder (``iis.eval.io.exclusive_lock``).
        skip_invalid: record an instance whose ``dataset[i]`` raises :class:`InvalidSampleError` as
            skipped (with its reason) instead of stopping with that error.
        progress: called with the number of instances finished (including resumed ones) for a bar.
        on_instance: called after each scored instance with (index, sample, result), e.g. for overlays.
        keep_preds: whether to keep the binary masks of instance ``i`` for ``on_instance``.
        batch_size: instances in flight at once (:func:`iis.core.loop.run_instances`); they may finish
            out of order: the log holds them in finishing order (keyed by id), the result in index order.
            Predictors without ``predict_batch`` run one at a time whatever this says.

    Raises:
        InvalidSampleError: an invalid sample without ``skip_invalid`` (also one stored as skipped
            by an earlier ``skip_invalid`` run); instances written so far stay in the log.
        IISError: the log's stored identity differs, or the log is damaged.
    """
    name = getattr(dataset, "name", "dataset")
    idx = list(indices) if indices is not None else list(range(len(dataset)))
    if limit is not None:
        idx = idx[:limit]
    done: dict[str, dict[str, Any]] = {}
    identity = None
    fh = None
    if log_path is not None:
        import iis

        log_path = Path(log_path)
        identity = json.loads(dumps({"format": LOG_FORMAT, "iis_version": iis.__version__, "method": method or {},
                                     "protocol": protocol.to_dict(), "dataset": dataset_identity(dataset)}))
        if overwrite:
            log_path.unlink(missing_ok=True)
        done = _read_log(log_path, identity)
        # rewrite header + good records (dropping a torn tail), then append
        atomic_write_bytes(log_path, "".join(dumps(x) + "\n" for x in [
            {"header": {"identity": identity, "info": info or {}}}, *done.values()]).encode())
        fh = open(log_path, "a", encoding="utf-8")
    ids = dataset.ids() if hasattr(dataset, "ids") else None
    by_pos: dict[int, dict[str, Any]] = {}  # position in idx -> record; instances may finish out of order

    def write(rec: dict[str, Any]) -> None:
        done[rec["id"]] = rec
        if fh is not None:
            fh.write(dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def finished(n: int, rec: dict[str, Any]) -> None:
        by_pos[n] = rec
        if progress:
            progress(len(by_pos))

    def items() -> Iterable[EvalItem]:
        """The instances still to compute, decoded lazily as the batch has room; stored and invalid ones
        are recorded on the way."""
        for n, i in enumerate(idx):
            sid = ids[i] if ids is not None else None
            rec = done.get(sid) if sid is not None else None
            if rec is not None:
                if "skipped" in rec and not skip_invalid:
                    raise InvalidSampleError(rec["id"], f"{rec['skipped']} (stored in {log_path} by a --skip-invalid run)")
                finished(n, rec)
                continue
            t0 = time.perf_counter()  # wall time includes decoding, as the reference's SPC does
            try:
                sample = dataset[i]
            except InvalidSampleError as e:
                if not skip_invalid:
                    raise
                rec = {"id": sid if sid is not None else e.sample_id, "skipped": e.reason}
                write(rec)
                finished(n, rec)
                continue
            yield EvalItem(sample.image, sample.gt, sample.id, bool(keep_preds and keep_preds(i)),
                           (n, i, sample, time.perf_counter() - t0))

    def on_done(step: InstanceStep) -> None:
        n, i, sample, decode = step.tag
        res = step.res
        rec = res.to_json()
        rec["timing"] = {"wall": decode + res.wall, "latency": rec.pop("latency")}
        write(rec)
        finished(n, rec)
        if on_instance:
            on_instance(i, sample, res)

    try:
        run_instances(predictor, items(), protocol, batch_size=batch_size, on_done=on_done)
    finally:
        if fh is not None:
            fh.close()
    records = [by_pos[n] for n in sorted(by_pos)]
    return DatasetResult(name, protocol, records, summarize_instances(records, protocol), identity,
                         len(done) if log_path is not None else None)


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
    batch_size: int = 1,
    channels_last: bool = False,
    compile: bool = False,
    **kwargs: Any,
) -> DatasetResult:
    """The one evaluation step of ``iis-eval`` and the training callback: resolve the protocol for
    ``dataset``, build the predictor, evaluate this rank's share, gather, summarise.

    Args:
        method: an interactive model (``nn.Module``, wrapped in :class:`ModelPredictor`) or a
            training-free predictor.
        base: the protocol before per-dataset overrides.
        limit: only the first ``limit`` instances (>= 1; None = all).
        rank, world_size: instance ``i`` is evaluated by rank ``i % world_size``.
        gather: merges the ranks' per-instance records (each instance once); None = single process.
        batch_size: instances in flight at once (one model forward per input shape for all of them);
            numbers do not depend on it on CPU (see ``ModelPredictor.min_forward_batch``).
        channels_last, compile: inference options of :class:`ModelPredictor` (models only).
        **kwargs: passed to :func:`evaluate_dataset` (method identity as ``desc``, ``log_path``,
            ``skip_invalid``...).
    """
    import torch

    if limit is not None and limit < 1:
        raise ValueError(f"limit: expected >= 1 or None, got {limit}")
    proto = base.for_dataset(getattr(dataset, "name", "dataset"))
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if isinstance(method, torch.nn.Module):
        # forward sizes follow ModelPredictor's one policy (on CPU within 2..15 samples, so that sequential,
        # batched and API sessions compute each instance alike)
        predictor = ModelPredictor(method, proto, device, dtype, channels_last=channels_last, compile=compile)
    else:
        if channels_last or compile:
            raise ValueError("channels_last/compile: apply to models only, not to a training-free predictor")
        predictor = method
        if hasattr(predictor, "to"):
            predictor.to(device)
    total = len(dataset)
    n = min(total, limit) if limit else total
    desc = kwargs.pop("desc", None)
    r = evaluate_dataset(predictor, dataset, proto, method=desc, indices=range(rank, n, world_size),
                         batch_size=batch_size, **kwargs)
    if gather is not None:
        r.instances = gather(r.instances)
        r.summary = summarize_instances(r.instances, proto)
    r.summary["max_clicks"] = proto.max_clicks
    r.summary["selection"] = {"limit": limit, "instances": n, "dataset_instances": total}
    return r
