"""The one interactive loop: click -> predict -> score, repeated.

``interactive_loop`` is generic over what a click, a prediction and a stop rule are; the evaluation
(``run_instances``: per-instance :class:`InstanceStep` state machines, one or many in flight, the
exact clicker, IoU; ``run_instance`` is one of them) and the iterative training simulation
(``iis.lightning.module``: a batch, the half-max random clicker, no IoU) both drive it.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

import numpy as np

from .clicker import get_clicker
from .metrics import invalid_click
from .metrics import iou as iou_fn
from .predictor import Predictor
from .protocol import EvalProtocol
from .types import Click

__all__ = ["interactive_loop", "run_instance", "run_instances", "InstanceResult", "InstanceStep", "EvalItem"]

S = TypeVar("S")


def interactive_loop(
    state: S,
    click: Callable[[S], S],
    predict: Callable[[S], S],
    rounds: int | None,
    stop: Callable[[S, int], bool] | None = None,
    predict_first: bool = False,
) -> S:
    """``rounds`` times (None: until ``stop``): add a click to ``state``, predict, and stop early when
    ``stop(state, k)``.

    ``state`` carries whatever the caller needs (clicks, previous prediction, IoU list...).
    Evaluation starts from an empty prediction, so it clicks first; iterative training starts from
    sampled clicks, so it predicts first (``predict_first``).
    """
    first, second = (predict, click) if predict_first else (click, predict)
    for k in (range(rounds) if rounds is not None else itertools.count()):
        state = second(first(state))
        if stop is not None and stop(state, k):
            break
    return state


@dataclass
class InstanceResult:
    id: str
    ious: list[float] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    noic: int = 0  # invalid clicks so far (iis.core.metrics.invalid_click, GPCIS §5.1)
    latency: float = 0.0  # seconds spent inside the predictor (its share of batched calls)
    wall: float = 0.0  # wall seconds of its rounds (its share when batched); not in to_json
    preds: list[np.ndarray] | None = None  # binary masks after each click, when requested

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ious": [round(float(v), 6) for v in self.ious],
            "clicks": [[float(c.x), float(c.y), bool(c.positive)] for c in self.clicks],
            "noic": self.noic,
            "latency": self.latency,
        }


class InstanceStep:
    """The per-instance state machine of the evaluation: click on the previous prediction, then
    :meth:`observe` the new probabilities (threshold, IoU, invalid click, early stop).

    Mirrors ``evaluate_sample`` of the reference (protocol.md §A.1): the prediction starts all False,
    each click is chosen on the previous binary prediction, and the run stops once IoU >=
    ``target_iou`` after at least ``min_clicks`` clicks, or after ``max_clicks``. A step never sees
    another instance, so any number of them can be driven in lockstep (:func:`run_instances`).
    """

    def __init__(self, image: np.ndarray, gt: np.ndarray, protocol: EvalProtocol, id: str = "",
                 keep_preds: bool = False, tag: Any = None):
        if image.shape[:2] != gt.shape:
            raise ValueError(f"{id or 'sample'}: image {image.shape[:2]} and mask {gt.shape} differ in size")
        self.image, self.gt, self.protocol, self.tag = image, gt, protocol, tag
        self.pred = np.zeros(gt.shape, bool)
        self.clicked = np.zeros(gt.shape, bool)
        self.res = InstanceResult(id, preds=[] if keep_preds else None)
        self.state: Any = None  # the predictor's per-instance state (ModelPredictor.new_state)
        self.done = False
        self._clicker = get_clicker(protocol.clicker)

    def click(self) -> list[Click]:
        c = self._clicker(self.gt, self.pred, self.clicked)
        self.clicked[int(c.y), int(c.x)] = True
        self.res.clicks.append(c)
        return self.res.clicks

    def observe(self, probs: np.ndarray) -> bool:
        """Score the prediction after the last click; returns (and sets) ``done``."""
        p = self.protocol
        self.pred = probs > p.threshold
        self.res.noic += int(invalid_click(self.res.clicks[-1], self.pred))
        self.res.ious.append(iou_fn(self.gt, self.pred, p.ignore_as_background))
        if self.res.preds is not None:
            self.res.preds.append(self.pred)
        k = len(self.res.ious)
        self.done = (self.res.ious[-1] >= p.target_iou and k >= p.min_clicks) or k >= p.max_clicks
        return self.done


@dataclass
class EvalItem:
    """One instance to evaluate: its image and mask, id, whether to keep masks, and a caller's tag."""

    image: np.ndarray
    gt: np.ndarray
    id: str = ""
    keep_preds: bool = False
    tag: Any = None


def _batch_api(predictor: Predictor, batch_size: int):
    """(start, predict_many, capacity): batching predictors (``new_state``/``predict_batch``) take up to
    ``batch_size`` instances at once; any other predictor holds one image at a time, so it runs one
    instance after the other, as it always did."""
    if hasattr(predictor, "predict_batch") and hasattr(predictor, "new_state"):
        return predictor.new_state, predictor.predict_batch, max(1, batch_size)

    def start(image: np.ndarray) -> None:
        predictor.set_image(image)

    def predict_one(states: list[Any], clicks: list[list[Click]]) -> list[np.ndarray]:
        return [predictor.predict(clicks[0])]

    return start, predict_one, 1


@dataclass
class _Schedule:
    active: list[InstanceStep] = field(default_factory=list)
    exhausted: bool = False
    t0: float = 0.0


def _map(pool: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return list(pool.map(fn, items)) if pool is not None and len(items) > 1 else [fn(x) for x in items]


def run_instances(predictor: Predictor, items: Iterable[EvalItem], protocol: EvalProtocol, *,
                  batch_size: int = 1, on_done: Callable[[InstanceStep], None] | None = None,
                  threads: int | None = None) -> None:
    """Evaluate ``items`` with up to ``batch_size`` instances in flight, in lockstep.

    Each round of :func:`interactive_loop` is: top the batch up from ``items`` (a finished instance is
    replaced at once), click on every active instance, ONE ``predict_batch`` for all of them (the
    predictor groups the model forwards by input shape), then score each; finished instances go to
    ``on_done`` (in finishing order; ``step.tag`` says which item it was). ``batch_size=1`` is the
    sequential evaluation. Clicker and IoU of a batch run in a thread pool (OpenCV's distance
    transform releases the GIL); each instance's numbers are computed exactly as alone.

    Timing: ``res.latency`` is the instance's share of the predictor calls it was part of, ``res.wall``
    its share of each round's wall time (the sum over instances is the elapsed time).
    """
    start, predict_many, cap = _batch_api(predictor, batch_size)
    source = iter(items)
    pool = None
    if cap > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=threads or min(cap, os.cpu_count() or 1))

    def click(s: _Schedule) -> _Schedule:
        s.t0 = time.perf_counter()
        while not s.exhausted and len(s.active) < cap:
            item = next(source, None)
            if item is None:
                s.exhausted = True
                break
            t = time.perf_counter()
            step = InstanceStep(item.image, item.gt, protocol, item.id, item.keep_preds, item.tag)
            step.state = start(item.image)
            step.res.wall += time.perf_counter() - t
            s.active.append(step)
            s.t0 = time.perf_counter()
        _map(pool, InstanceStep.click, s.active)
        return s

    def predict(s: _Schedule) -> _Schedule:
        if not s.active:
            return s
        t = time.perf_counter()
        probs = predict_many([a.state for a in s.active], [a.res.clicks for a in s.active])
        share = (time.perf_counter() - t) / len(s.active)
        _map(pool, lambda ap: ap[0].observe(ap[1]), list(zip(s.active, probs)))
        wall = (time.perf_counter() - s.t0) / len(s.active)
        for a in s.active:
            a.res.latency += share
            a.res.wall += wall
        finished = [a for a in s.active if a.done]
        s.active = [a for a in s.active if not a.done]
        for a in finished:
            a.state = None  # free the image tensors now
            if on_done is not None:
                on_done(a)
        return s

    try:
        interactive_loop(_Schedule(), click, predict, None, lambda s, k: s.exhausted and not s.active)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def run_instance(predictor: Predictor, image: np.ndarray, gt: np.ndarray, protocol: EvalProtocol,
                 id: str = "", keep_preds: bool = False) -> InstanceResult:
    """Evaluate one instance with the protocol's clicker, threshold, click budget and early stop
    (:class:`InstanceStep` driven by :func:`run_instances` with one instance)."""
    out: list[InstanceResult] = []
    run_instances(predictor, [EvalItem(image, gt, id, keep_preds)], protocol, on_done=lambda s: out.append(s.res))
    return out[0]
