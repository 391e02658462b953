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
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from .protocol import EvalProtocol, ZoomIn
from .types import Click

__all__ = ["Predictor", "ModelPredictor", "ZoomState", "PredictorState"]


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


class ModelPredictor:
    """Runs an interactive model under an :class:`EvalProtocol` (zoom-in, resize, flip TTA, prev mask).

    The model is called as ``model(image, clicks, prev_mask)`` with image ``(B, 3, h, w)`` in [0, 1],
    clicks ``(B, N, 3)`` rows ``(x, y, label)`` in input pixels and prev_mask ``(B, 1, h, w)`` or None
    (when ``model.with_prev_mask`` is False); it returns logits ``(B, 1, h', w')``.

    ``latency`` accumulates pure model time (CUDA-synchronised), next to the reference SPC.

    ``model`` may also be any callable with that signature and return (e.g. an ONNX Runtime session
    wrapped by :class:`iis.runtime.OnnxModel`), so a deployed model runs through these same transforms.
    """

    def __init__(self, model: torch.nn.Module, protocol: EvalProtocol, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None):
        self.model = model.eval().to(device) if isinstance(model, torch.nn.Module) else model
        self.protocol = protocol
        self.device = torch.device(device)
        self.dtype = dtype
        self.with_prev_mask = bool(getattr(model, "with_prev_mask", True)) and protocol.prev_mask
        self.latency = 0.0
        self._image: torch.Tensor | None = None

    def set_image(self, image: np.ndarray) -> None:
        self._image = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
        self._prev = torch.zeros((1, 1, *image.shape[:2]), device=self.device)
        self._zoom = ZoomState(self.protocol.zoom_in) if self.protocol.zoom_in is not None else None

    def get_state(self) -> PredictorState:
        """The per-instance state after the last ``predict`` (cheap: references, no copies of arrays).

        ``predict`` replaces ``_prev`` and the zoom arrays instead of writing into them, so a saved state
        stays valid after later clicks and :meth:`set_state` restores the predictor exactly.
        """
        return PredictorState(self._prev, self._zoom.snapshot() if self._zoom is not None else None)

    def set_state(self, state: PredictorState) -> None:
        self._prev = state.prev
        self._zoom = state.zoom.snapshot() if state.zoom is not None else None

    def set_prev_mask(self, mask: np.ndarray) -> None:
        """Start from an existing mask (DAVIS-585 "from init"): ``mask (H, W)`` in [0, 1] (bool or float)
        becomes the previous-mask input of the next click and, with zoom-in, the map its ROI is taken
        from (as if the predictor had produced it)."""
        prev = torch.from_numpy(np.array(mask, dtype=np.float32, copy=True)).to(self.device)[None, None]
        self._prev = prev
        if self._zoom is not None:
            self._zoom = ZoomState(self.protocol.zoom_in)
            self._zoom.prev_probs = prev[0, 0].cpu().numpy()

    @torch.no_grad()
    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        full = self._image.shape[-2:]
        x = torch.cat([self._image, self._prev], 1)
        if self._zoom is not None:
            x, clicks = self._zoom.transform(x, clicks)
        pre_resize = x.shape[-2:]
        if self.protocol.infer_size:
            s = self.protocol.infer_size
            sh, sw = x.shape[-2:]
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=True)
            clicks = [Click(c.x * s / sw, c.y * s / sh, c.positive) for c in clicks]
        pts = clicks_tensor(clicks, self.device)
        if self.protocol.flip:
            w = x.shape[-1]
            x = torch.cat([x, x.flip(-1)], 0)
            flipped = pts.clone()
            valid = flipped[..., 2] >= 0
            flipped[..., 0] = torch.where(valid, w - 1 - flipped[..., 0], flipped[..., 0])
            pts = torch.cat([pts, flipped], 0)
        logits = self._run(x, pts)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
        if self.protocol.flip:
            logits = 0.5 * (logits[:1] + logits[1:].flip(-1))
        probs = torch.sigmoid(logits)
        if self.protocol.infer_size:
            probs = F.interpolate(probs, size=tuple(pre_resize), mode="bilinear", align_corners=True)
        if self._zoom is not None:
            probs = self._zoom.inverse(probs, tuple(full))
        if probs.shape[-2:] != full:  # cannot happen with the reference transforms; guard anyway
            probs = F.interpolate(probs, size=tuple(full), mode="bilinear", align_corners=True)
        self._prev = probs
        return probs[0, 0].float().cpu().numpy()

    def _run(self, x: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        image, prev = x[:, :3], x[:, 3:]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.model(image, pts, prev if self.with_prev_mask else None)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.latency += time.perf_counter() - t0
        return out.float()
