"""The one interactive loop: click -> predict -> score, repeated.

``interactive_loop`` is generic over what a click, a prediction and a stop rule are; the evaluation
(``run_instance``: one image, the exact clicker, IoU) and the iterative training simulation
(``iis.lightning.module``: a batch, the half-max random clicker, no IoU) both drive it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np

from .clicker import get_clicker
from .metrics import invalid_click
from .metrics import iou as iou_fn
from .predictor import Predictor
from .protocol import EvalProtocol
from .types import Click

__all__ = ["interactive_loop", "run_instance", "InstanceResult"]

S = TypeVar("S")


def interactive_loop(
    state: S,
    click: Callable[[S], S],
    predict: Callable[[S], S],
    rounds: int,
    stop: Callable[[S, int], bool] | None = None,
    predict_first: bool = False,
) -> S:
    """``rounds`` times: add a click to ``state``, predict, and stop early when ``stop(state, k)``.

    ``state`` carries whatever the caller needs (clicks, previous prediction, IoU list...).
    Evaluation starts from an empty prediction, so it clicks first; iterative training starts from
    sampled clicks, so it predicts first (``predict_first``).
    """
    first, second = (predict, click) if predict_first else (click, predict)
    for k in range(rounds):
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
    latency: float = 0.0  # seconds spent inside predictor.predict (all clicks)
    preds: list[np.ndarray] | None = None  # binary masks after each click, when requested

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ious": [round(float(v), 6) for v in self.ious],
            "clicks": [[float(c.x), float(c.y), bool(c.positive)] for c in self.clicks],
            "noic": self.noic,
            "latency": self.latency,
        }


@dataclass
class _EvalState:
    pred: np.ndarray
    clicked: np.ndarray
    res: InstanceResult


def run_instance(predictor: Predictor, image: np.ndarray, gt: np.ndarray, protocol: EvalProtocol,
                 id: str = "", keep_preds: bool = False) -> InstanceResult:
    """Evaluate one instance with the protocol's clicker, threshold, click budget and early stop.

    Mirrors ``evaluate_sample`` of the reference (protocol.md §A.1): the prediction starts all
    False, each click is chosen on the previous binary prediction, and the run stops once
    IoU >= ``target_iou`` after at least ``min_clicks`` clicks.
    """
    if image.shape[:2] != gt.shape:
        raise ValueError(f"{id or 'sample'}: image {image.shape[:2]} and mask {gt.shape} differ in size")
    clicker = get_clicker(protocol.clicker)
    predictor.set_image(image)
    st = _EvalState(np.zeros(gt.shape, bool), np.zeros(gt.shape, bool), InstanceResult(id, preds=[] if keep_preds else None))

    def click(s: _EvalState) -> _EvalState:
        c = clicker(gt, s.pred, s.clicked)
        s.clicked[int(c.y), int(c.x)] = True
        s.res.clicks.append(c)
        return s

    def predict(s: _EvalState) -> _EvalState:
        t0 = time.perf_counter()
        probs = predictor.predict(s.res.clicks)
        s.res.latency += time.perf_counter() - t0
        s.pred = probs > protocol.threshold
        s.res.noic += int(invalid_click(s.res.clicks[-1], s.pred))
        s.res.ious.append(iou_fn(gt, s.pred, protocol.ignore_as_background))
        if keep_preds:
            s.res.preds.append(s.pred)
        return s

    def stop(s: _EvalState, k: int) -> bool:
        return s.res.ious[-1] >= protocol.target_iou and k + 1 >= protocol.min_clicks

    return interactive_loop(st, click, predict, protocol.max_clicks, stop).res
