"""Predictors: how a list of clicks becomes a full-resolution probability map.

A *predictor* is anything with ``set_image(image)`` and ``predict(clicks) -> (H, W) float32`` in
[0, 1]. Training-free methods implement it directly; trainable models are wrapped by
:class:`ModelPredictor`, which reproduces the RITM/SimpleClick inference transforms exactly
(protocol.md §A.4): zoom-in on the previous prediction, optional square resize (ClickSEG), horizontal
flip TTA averaged on logits, sigmoid, paste-back into a zero canvas, soft previous mask fed back.
"""

from __future__ import annotations

import copy
import time
import weakref
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from .protocol import EvalProtocol, ZoomIn
from .types import Click

__all__ = ["Predictor", "ModelPredictor", "ZoomState", "PredictorState", "InstanceState"]


@runtime_checkable
class Predictor(Protocol):
    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, clicks: Sequence[Click]) -> np.ndarray: ...


Box = tuple[int, int, int, int]  # rmin, rmax, cmin, cmax (inclusive), RITM's convention


def _expand_box(box: Box, ratio: float, min_size: int | None) -> Box:
    rmin, rmax, cmin, cmax = box
    rc, cc = 0.5 * (rmin + rmax), 0.5 * (cmin + cmax)
    h, w = ratio * (rmax - rmin + 1), ratio * (cmax - cmin + 1)
    if min_size is not None:
        h, w = max(h, min_size), max(w, min_size)
    # Python's round (half to even) as in the reference
    return round(rc - 0.5 * h), round(rc + 0.5 * h), round(cc - 0.5 * w), round(cc + 0.5 * w)


def _seg_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    union = max(1e-6, max(a[1], b[1]) - min(a[0], b[0]) + 1)
    return inter / union


def _box_iou(a: Box, b: Box) -> float:
    return _seg_iou(a[:2], b[:2]) * _seg_iou(a[2:], b[2:])


class ZoomState:
    """RITM's ZoomIn with its per-instance state (object ROI, previous pasted probabilities).

    ``transform``/``inverse`` rebind ``roi``/``prev_probs``/``crop_size``/``active`` and never mutate
    the arrays in place, so a shallow copy (:meth:`snapshot`) is an exact, independent saved state.
    """

    def __init__(self, cfg: ZoomIn):
        self.cfg = cfg
        self.roi: Box | None = None
        self.prev_probs: np.ndarray | None = None  # (H, W) last pasted map
        self.crop_size: tuple[int, int] | None = None
        self.active = False

    def snapshot(self) -> "ZoomState":
        return copy.copy(self)

    def _current_roi(self, clicks: Sequence[Click], shape: tuple[int, int]) -> Box | None:
        if self.prev_probs is None:
            return None
        mask = self.prev_probs > self.cfg.prob_thresh
        if not mask.any():
            return None
        mask = mask.copy()
        for c in clicks:
            if c.positive:
                mask[int(c.y), int(c.x)] = True
        rows = np.flatnonzero(mask.any(1))
        cols = np.flatnonzero(mask.any(0))
        box = _expand_box((rows[0], rows[-1], cols[0], cols[-1]), self.cfg.expansion_ratio, self.cfg.min_crop_size)
        h, w = shape
        return (min(max(box[0], 0), h - 1), min(max(box[1], 0), h - 1),
                min(max(box[2], 0), w - 1), min(max(box[3], 0), w - 1))

    def _roi_still_valid(self, clicks: Sequence[Click]) -> bool:
        rmin, rmax, cmin, cmax = self.roi
        for c in clicks:
            if c.positive and (c.y < rmin or c.y >= rmax or c.x < cmin or c.x >= cmax):
                return False
        return True

    def transform(self, x: torch.Tensor, clicks: Sequence[Click]) -> tuple[torch.Tensor, list[Click]]:
        """Crop (and resize) ``x`` (1, C, H, W) to the object ROI; map clicks into the crop."""
        self.active = False
        if len(clicks) <= self.cfg.skip_clicks:
            return x, list(clicks)
        H, W = x.shape[-2:]
        roi = self._current_roi(clicks, (H, W))
        if roi is None:
            if self.cfg.skip_clicks >= 0:
                return x, list(clicks)
            roi = (0, H - 1, 0, W - 1)
        if (self.roi is None or self.cfg.always_update or not self._roi_still_valid(clicks)
                or _box_iou(roi, self.roi) < self.cfg.recompute_thresh_iou):
            self.roi = roi
        rmin, rmax, cmin, cmax = self.roi
        h, w = rmax - rmin + 1, cmax - cmin + 1
        ts = self.cfg.target_size
        if ts is None:
            nh, nw = h, w
        elif isinstance(ts, int):
            s = ts / max(h, w)
            nh, nw = int(round(h * s)), int(round(w * s))
        else:
            nh, nw = ts
        crop = x[:, :, rmin:rmax + 1, cmin:cmax + 1]
        if (nh, nw) != (h, w):
            crop = F.interpolate(crop, size=(nh, nw), mode="bilinear", align_corners=True)
        self.active = True
        tc = [Click(nw * (c.x - cmin) / w, nh * (c.y - rmin) / h, c.positive) for c in clicks]
        return crop, tc

    def inverse(self, probs: torch.Tensor, full_shape: tuple[int, int]) -> torch.Tensor:
        """Paste ``probs`` (1, 1, h, w) back into a zero canvas of the full image."""
        # As in the reference, a stored ROI is used even when this click's transform passed the
        # image through unchanged (e.g. an empty previous mask with skip_clicks >= 0).
        if self.roi is None:
            self.prev_probs = probs[0, 0].cpu().numpy()
            return probs
        rmin, rmax, cmin, cmax = self.roi
        probs = F.interpolate(probs, size=(rmax - rmin + 1, cmax - cmin + 1), mode="bilinear", align_corners=True)
        if self.prev_probs is not None:
            canvas = torch.zeros((1, 1, *full_shape), dtype=probs.dtype, device=probs.device)
            canvas[:, :, rmin:rmax + 1, cmin:cmax + 1] = probs
            probs = canvas
        self.prev_probs = probs[0, 0].cpu().numpy()
        return probs


def clicks_tensor(clicks: Sequence[Click], device: torch.device | str = "cpu") -> torch.Tensor:
    """Clicks -> float ``(1, N, 3)`` rows ``(x, y, label)``; N >= 1 (a padding row if no clicks)."""
    rows = [(c.x, c.y, 1.0 if c.positive else 0.0) for c in clicks] or [(-1.0, -1.0, -1.0)]
    return torch.tensor(rows, dtype=torch.float32, device=device)[None]


@dataclass(frozen=True)
class PredictorState:
    """A saved per-instance state of :class:`ModelPredictor` (see ``get_state``/``set_state``).

    Attributes:
        prev: ``(1, 1, H, W)`` soft previous mask fed to the model at the next click.
        zoom: the ZoomIn state (ROI, previous pasted map) or None without zoom-in.
    """

    prev: torch.Tensor
    zoom: ZoomState | None


@dataclass
class InstanceState:
    """One instance in flight in a :class:`ModelPredictor` (see ``new_state``/``predict_batch``).

    Attributes:
        image: ``(1, 3, H, W)`` float image in [0, 1] on the predictor's device.
        prev: ``(1, 1, H, W)`` soft previous mask fed to the model at the next click.
        zoom: the ZoomIn state or None without zoom-in.
    """

    image: torch.Tensor
    prev: torch.Tensor
    zoom: ZoomState | None


@dataclass
class _Prepared:
    x: torch.Tensor  # (1, 4, h, w) network input (image + prev), before flip
    pts: torch.Tensor  # (1, N, 3) clicks in input pixels
    pre_resize: tuple[int, int]


_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, Any]" = weakref.WeakKeyDictionary()


# forward sizes (min, max) of a torch model on CPU, where the convolution kernels depend on the batch size
# (see ModelPredictor); one policy for every caller
CPU_FORWARD_BATCH = (2, 15)


class ModelPredictor:
    """Runs an interactive model under an :class:`EvalProtocol` (zoom-in, resize, flip TTA, prev mask).

    The model is called as ``model(image, clicks, prev_mask)`` with image ``(B, 3, h, w)`` in [0, 1],
    clicks ``(B, N, 3)`` rows ``(x, y, label)`` in input pixels and prev_mask ``(B, 1, h, w)`` or None
    (when ``model.with_prev_mask`` is False); it returns logits ``(B, 1, h', w')``.

    Two ways to drive it: ``set_image`` + ``predict`` (one instance, used by the API sessions) and
    ``new_state`` + ``predict_batch`` (many instances, one forward per input shape: batched
    evaluation, docs/protocol.md §A.12). ``predict`` is ``predict_batch`` of one, so
    both give the same numbers wherever the model's per-sample result does not depend on the batch.

    Args:
        dtype: autocast dtype (``torch.bfloat16``/``torch.float16``) or None for fp32.
        channels_last: run the model and its inputs in the channels-last memory format.
        compile: run the model through ``torch.compile`` (compiled once per model object).
        min_forward_batch, max_forward_batch: pad a forward of fewer samples with copies of the last
            one; split a larger one into near-equal chunks. PyTorch's CPU convolution dispatch picks
            other kernels for a batch of one (native instead of oneDNN for small inputs) and, with one
            intra-op thread, from 16 samples on (oneDNN instead of native for 1x1 convolutions), so a
            sample's logits would move by float rounding with the batch it shares. The default (None)
            is :data:`CPU_FORWARD_BATCH` = (2, 15) for a torch model on CPU, the range a sequential
            flip-TTA forward lies in, so batched and sequential runs, sessions and ``iis-eval`` are
            bit-identical (padding costs a second sample only where flip TTA is off); no limit elsewhere
            (GPUs, ONNX Runtime sessions).

    ``latency`` accumulates pure model time (CUDA-synchronised), next to the reference SPC.

    ``model`` may also be any callable with that signature and return (e.g. an ONNX Runtime session
    wrapped by :class:`iis.runtime.OnnxModel`), so a deployed model runs through these same transforms.
    """

    def __init__(self, model: torch.nn.Module, protocol: EvalProtocol, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, *, channels_last: bool = False, compile: bool = False,
                 min_forward_batch: int | None = None, max_forward_batch: int | None = None):
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        if isinstance(model, torch.nn.Module):
            model = model.eval().to(self.device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.protocol = protocol
        self.dtype = dtype
        self.with_prev_mask = bool(getattr(model, "with_prev_mask", True)) and protocol.prev_mask
        # clicks of several instances share one (B, N, 3) tensor padded with label -1 rows; a model whose
        # output moves (by rounding) with N gets one forward per click count instead
        self.pad_clicks = bool(getattr(model, "click_padding_exact", False))
        if min_forward_batch is None:  # the one policy of every path (iis-eval, callback, API, server)
            cpu_torch = self.device.type == "cpu" and isinstance(model, torch.nn.Module)
            min_forward_batch, max_forward_batch = (CPU_FORWARD_BATCH if cpu_torch else (1, None))
        self.min_forward_batch = max(1, int(min_forward_batch))
        self.max_forward_batch = max(self.min_forward_batch, int(max_forward_batch)) if max_forward_batch else None
        self._forward = self.model
        if compile:
            if not isinstance(model, torch.nn.Module):
                raise ValueError("compile: only a torch model can be compiled")
            if model not in _COMPILED:
                _COMPILED[model] = torch.compile(model, dynamic=None)
            self._forward = _COMPILED[model]
        self.latency = 0.0
        self._st: InstanceState | None = None

    # -- one instance (API sessions) -------------------------------------------------------------

    def new_state(self, image: np.ndarray) -> InstanceState:
        """A fresh per-instance state for ``image`` (uint8 ``(H, W, 3)``): empty previous mask, no ROI."""
        t = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
        return InstanceState(t, torch.zeros((1, 1, *image.shape[:2]), device=self.device),
                             ZoomState(self.protocol.zoom_in) if self.protocol.zoom_in is not None else None)

    def set_image(self, image: np.ndarray) -> None:
        self._st = self.new_state(image)

    @property
    def _image(self) -> torch.Tensor | None:
        return self._st.image if self._st is not None else None

    @property
    def _prev(self) -> torch.Tensor:
        return self._st.prev

    @property
    def _zoom(self) -> ZoomState | None:
        return self._st.zoom

    def get_state(self) -> PredictorState:
        """The per-instance state after the last ``predict`` (cheap: references, no copies of arrays).

        ``predict`` replaces ``prev`` and the zoom arrays instead of writing into them, so a saved state
        stays valid after later clicks and :meth:`set_state` restores the predictor exactly.
        """
        st = self._st
        return PredictorState(st.prev, st.zoom.snapshot() if st.zoom is not None else None)

    def set_state(self, state: PredictorState) -> None:
        self._st.prev = state.prev
        self._st.zoom = state.zoom.snapshot() if state.zoom is not None else None

    def set_prev_mask(self, mask: np.ndarray) -> None:
        """Start from an existing mask (DAVIS-585 "from init"): ``mask (H, W)`` in [0, 1] (bool or float)
        becomes the previous-mask input of the next click and, with zoom-in, the map its ROI is taken
        from (as if the predictor had produced it)."""
        prev = torch.from_numpy(np.array(mask, dtype=np.float32, copy=True)).to(self.device)[None, None]
        self._st.prev = prev
        if self._st.zoom is not None:
            self._st.zoom = ZoomState(self.protocol.zoom_in)
            self._st.zoom.prev_probs = prev[0, 0].cpu().numpy()

    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        return self.predict_batch([self._st], [clicks])[0]

    # -- many instances (batched evaluation) -------------------------------------------------------

    @torch.no_grad()
    def predict_batch(self, states: Sequence[InstanceState], clicks: Sequence[Sequence[Click]]) -> list[np.ndarray]:
        """Advance every ``states[i]`` by its ``clicks[i]``: per-instance zoom-in and resize, then one model
        forward per group of equal input shape (and click count, unless the model pads exactly), then
        per-instance flip average, sigmoid and paste-back. Returns the ``(H, W)`` probability maps."""
        prepared = [self._prepare(st, c) for st, c in zip(states, clicks)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prepared):
            key = tuple(p.x.shape[-2:]) + (() if self.pad_clicks else (p.pts.shape[1],))
            groups.setdefault(key, []).append(i)
        logits: list[torch.Tensor | None] = [None] * len(prepared)
        for members in groups.values():
            for i, lg in zip(members, self._forward_group([prepared[i] for i in members])):
                logits[i] = lg
        return [self._finish(st, p, lg) for st, p, lg in zip(states, prepared, logits)]

    def _prepare(self, st: InstanceState, clicks: Sequence[Click]) -> _Prepared:
        x = torch.cat([st.image, st.prev], 1)
        if st.zoom is not None:
            x, clicks = st.zoom.transform(x, clicks)
        pre_resize = tuple(x.shape[-2:])
        if self.protocol.infer_size:
            s = self.protocol.infer_size
            sh, sw = x.shape[-2:]
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=True)
            clicks = [Click(c.x * s / sw, c.y * s / sh, c.positive) for c in clicks]
        return _Prepared(x, clicks_tensor(clicks, self.device), pre_resize)

    def _forward_group(self, group: Sequence[_Prepared]) -> list[torch.Tensor]:
        """One forward for instances of equal input shape; each gets its ``(1 or 2, 1, h, w)`` logits
        (original, then flipped, as a sequential run computes them)."""
        n = len(group)
        N = max(p.pts.shape[1] for p in group)
        pts = torch.full((n, N, 3), -1.0, device=self.device)
        for i, p in enumerate(group):
            pts[i, :p.pts.shape[1]] = p.pts[0]
        x = torch.cat([p.x for p in group], 0)
        if self.protocol.flip:
            w = x.shape[-1]
            flipped = pts.clone()
            valid = flipped[..., 2] >= 0
            flipped[..., 0] = torch.where(valid, w - 1 - flipped[..., 0], flipped[..., 0])
            x = torch.cat([x, x.flip(-1)], 0)
            pts = torch.cat([pts, flipped], 0)
        out = self._run_chunked(x, pts)
        if self.protocol.flip:
            return [torch.stack([out[i], out[n + i]]) for i in range(n)]
        return [out[i:i + 1] for i in range(n)]

    def _run_chunked(self, x: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        """``_run`` within [min_forward_batch, max_forward_batch] samples per call (see the class doc)."""
        real = x.shape[0]
        if real < self.min_forward_batch:
            extra = self.min_forward_batch - real
            x = torch.cat([x, x[-1:].expand(extra, *x.shape[1:])], 0)
            pts = torch.cat([pts, pts[-1:].expand(extra, *pts.shape[1:])], 0)
            return self._run(x, pts)[:real]
        if self.max_forward_batch is None or real <= self.max_forward_batch:
            return self._run(x, pts)
        chunks = -(-real // self.max_forward_batch)
        bounds = [real * k // chunks for k in range(chunks + 1)]  # near-equal, each >= min_forward_batch
        return torch.cat([self._run(x[a:b], pts[a:b]) for a, b in zip(bounds, bounds[1:])], 0)

    def _finish(self, st: InstanceState, p: _Prepared, logits: torch.Tensor) -> np.ndarray:
        full = tuple(st.image.shape[-2:])
        if logits.shape[-2:] != p.x.shape[-2:]:
            logits = F.interpolate(logits, size=p.x.shape[-2:], mode="bilinear", align_corners=True)
        if self.protocol.flip:
            logits = 0.5 * (logits[:1] + logits[1:].flip(-1))
        probs = torch.sigmoid(logits)
        if self.protocol.infer_size:
            probs = F.interpolate(probs, size=p.pre_resize, mode="bilinear", align_corners=True)
        if st.zoom is not None:
            probs = st.zoom.inverse(probs, full)
        if probs.shape[-2:] != full:  # cannot happen with the reference transforms; guard anyway
            probs = F.interpolate(probs, size=full, mode="bilinear", align_corners=True)
        st.prev = probs
        return probs[0, 0].float().cpu().numpy()

    def _run(self, x: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        image, prev = x[:, :3], x[:, 3:]
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
            prev = prev.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self._forward(image, pts, prev if self.with_prev_mask else None)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.latency += time.perf_counter() - t0
        return out.float()
