"""The public interactive API: ``iis.load`` -> :class:`Segmenter` -> :class:`Session` -> :class:`Prediction`.

One inference path: a session of a trainable model drives the very :class:`~iis.core.predictor.ModelPredictor`
that ``iis-eval`` builds (same protocol, zoom-in, flip TTA, previous soft mask, threshold), and a session of
a training-free method drives the method's own predictor, so a session and ``iis-eval`` give identical masks
for the same clicks (``tests/api``).

Threading: every predictor call of one :class:`Segmenter` (all its sessions) is serialised by one lock, so
sessions and ``Segmenter.predict`` may be called from any thread; for parallel throughput load one
Segmenter per worker process. Sessions are cheap (a model session holds its own ``ModelPredictor``
state; training-free sessions on the same image fork one prepared predictor from an LRU and share its
image-only state).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..core.predictor import ModelPredictor
from ..core.protocol import PRESETS, EvalProtocol, ZoomIn, get_protocol
from ..core.types import Click
from .cache import ImageStateCache, image_key
from .clicks import check_clicks
from .errors import (InvalidImageError, InvalidMaskError, NothingToUndoError, ProtocolOptionError,
                     UnknownMethodError, WeightsMismatchError)
from .prediction import Prediction

__all__ = ["load", "Segmenter", "Session", "check_rgb"]

_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".onnx")


def check_rgb(image: Any, name: str = "image") -> np.ndarray:
    """``image`` as a private ``uint8 (H, W, 3)`` copy, or one line saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"{name}: expected a numpy uint8 array (H, W, 3) RGB, got {type(image).__name__}")
    if image.ndim == 2:
        raise InvalidImageError(f"{name}: got a 2-D array {image.shape}; expected (H, W, 3) RGB "
                                "(for a gray image use np.repeat(image[..., None], 3, axis=2))")
    if image.ndim != 3 or image.shape[2] != 3:
        extra = " (RGBA? drop alpha with image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise InvalidImageError(f"{name}: got shape {image.shape}; expected (H, W, 3) RGB{extra}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"{name}: got dtype {image.dtype}; expected uint8 in 0..255 "
                                "(for floats in [0, 1] use (image * 255).round().astype(np.uint8))")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidImageError(f"{name}: got an empty image of shape {image.shape}")
    # a private copy: later edits of the caller's array cannot change a session. It stays writable for
    # torch.from_numpy (which warns on read-only arrays); Session.image exposes a read-only view of it
    return np.array(image, copy=True, order="C")


def _check_mask(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise InvalidMaskError(f"mask: expected a numpy array of shape {shape}, got {type(mask).__name__}")
    if mask.shape != shape:
        raise InvalidMaskError(f"mask: got shape {mask.shape}; expected the image's {shape} (H, W)")
    if mask.dtype == bool:
        return mask.astype(np.float32)
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise InvalidMaskError(f"mask: got dtype {mask.dtype}; expected bool, or numbers in [0, 1]")
    m = mask.astype(np.float32)
    lo, hi = (float(m.min()), float(m.max())) if m.size else (0.0, 0.0)
    if not (np.isfinite(m).all() and lo >= 0.0 and hi <= 1.0):
        raise InvalidMaskError(f"mask: values span [{lo}, {hi}]; expected bool, or probabilities in [0, 1] "
                               "(for a 0/255 PNG use mask > 127)")
    return m


def _fork(template: Any) -> Any:
    """A copy of a training-free predictor that shares its weights and image state (arrays, attention,
    upsampler) but owns its containers: dicts/lists/sets are copied, and dataclass values in dicts (e.g.
    M2N2's cached Markov-map entries with their ``used`` flags) too, so sessions never touch each other."""
    p = copy.copy(template)
    for k, v in list(vars(p).items()):
        if isinstance(v, dict):
            setattr(p, k, copy.copy(v))
            d = getattr(p, k)
            for kk, vv in list(d.items()):
                if dataclasses.is_dataclass(vv) and not isinstance(vv, type):
                    d[kk] = copy.copy(vv)
        elif isinstance(v, (list, set)):
            setattr(p, k, copy.copy(v))
    return p


def _resolve_protocol(base: EvalProtocol, *, dataset: str | None, threshold: float | None,
                      zoom_in: bool | ZoomIn | Mapping[str, Any] | None, flip: bool | None,
                      is_model: bool, name: str) -> EvalProtocol:
    if not is_model:
        for opt, val in (("flip", flip), ("zoom_in", zoom_in)):
            if val is not None:
                raise ProtocolOptionError(f"{opt}={val!r}: only trainable models use flip TTA and zoom-in; "
                                          f"{name!r} is a training-free method (threshold= applies)")
    proto = base.for_dataset(dataset or "")
    if threshold is not None:
        t = float(threshold)
        if not 0.0 <= t < 1.0:
            raise ProtocolOptionError(f"threshold={threshold!r}: expected a probability in [0, 1)")
        proto = dataclasses.replace(proto, threshold=t)
    if flip is not None:
        proto = dataclasses.replace(proto, flip=bool(flip))
    if zoom_in is not None:
        if zoom_in is False:
            z = None
        elif zoom_in is True:
            z = proto.zoom_in or ZoomIn()
        elif isinstance(zoom_in, ZoomIn):
            z = zoom_in
        elif isinstance(zoom_in, Mapping):
            try:
                z = dataclasses.replace(proto.zoom_in or ZoomIn(), **zoom_in)
            except TypeError as e:
                raise ProtocolOptionError(f"zoom_in={dict(zoom_in)!r}: {e}; expected fields of "
                                          f"iis.core.protocol.ZoomIn") from None
        else:
            raise ProtocolOptionError(f"zoom_in={zoom_in!r}: expected True, False, a ZoomIn or a dict of its fields")
        proto = dataclasses.replace(proto, zoom_in=z)
    return proto


def load(method: str | Path, *, weights: str | Path | None = None, device: str | torch.device = "cpu",
         protocol: str | EvalProtocol | None = None, dataset: str | None = None, threshold: float | None = None,
         zoom_in: bool | ZoomIn | Mapping[str, Any] | None = None, flip: bool | None = None,
         kwargs: Mapping[str, Any] | None = None, precision: str = "fp32", cache_size: int = 4,
         cache_bytes: int | None = None) -> "Segmenter":
    """Load an interactive segmenter.

    Args:
        method: a registered model name (``iis.list_models()``), a training-free method name
            (``iis.list_predictors()``: ``random_walker``, ``grabcut``, ``geodesic``, ``m2n2_*``), the path of a
            checkpoint written by ``iis-train``, or an ``.onnx`` file written by ``iis-export`` (run by
            :mod:`iis.runtime`).
        weights: state dict for a model name (as ``iis-eval --weights``; goes through
            :func:`iis.eval.loading.build_method`, so the same files load here as there). Without it a model
            is randomly initialised (smoke tests and timing only; ``Segmenter.note`` says so).
        device: ``cpu`` or ``cuda[:i]``.
        protocol: a preset name (``ritm``, ``simpleclick``, ``gpcis``, ``m2n2``, ``plain``) or an
            ``EvalProtocol``; default: the method's own (what ``iis-eval`` uses).
        dataset: resolve the preset's per-dataset overrides (e.g. ``"davis"``: 672² squash for SimpleClick).
        threshold, zoom_in, flip: overrides. ``zoom_in`` is False (off), True, a ``ZoomIn`` or a dict of
            ``ZoomIn`` fields to change; ``zoom_in``/``flip`` apply to models only.
        kwargs: builder keyword arguments (as ``iis-eval --method-arg``), e.g. ``{"sd2_path": ...}``.
        precision: ``fp32`` (default), ``bf16`` or ``fp16`` autocast for models (as ``iis-eval --precision``).
        cache_size: images whose image-only state (M2N2 attention, upsampler, Markov maps) is kept (LRU).
        cache_bytes: and at most this many bytes of their arrays (None: no bound beyond ``cache_size``).

    Raises:
        UnknownMethodError, WeightsMismatchError, ProtocolOptionError (all ``ValueError``),
        FileNotFoundError.
    """
    from ..eval.loading import build_method
    from ..models.registry import list_models, list_predictors

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, "bad")
    if dtype == "bad":
        raise ProtocolOptionError(f"precision={precision!r}: expected fp32, bf16 or fp16")
    name = str(method)
    path = Path(name)
    looks_like_file = path.suffix in _FILE_SUFFIXES or "/" in name or "\\" in name
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"weights {weights}: no such file")
    if looks_like_file or (path.is_file() and name not in list_models() + list_predictors()):
        if not path.is_file():
            raise FileNotFoundError(f"method {name}: no such file (expected a model name, an iis-train checkpoint "
                                    "or an .onnx file from iis-export)")
        if weights is not None:
            raise ProtocolOptionError(f"weights={str(weights)!r}: only for a model name; {name} is a file that "
                                      "carries its own weights")
        if path.suffix == ".onnx":
            from ..runtime import OnnxModel

            model = OnnxModel(path)
            base = protocol if isinstance(protocol, EvalProtocol) else get_protocol(protocol or model.default_protocol)
            proto = _resolve_protocol(base, dataset=dataset, threshold=threshold, zoom_in=zoom_in, flip=flip,
                                      is_model=True, name=name)
            return Segmenter(model, proto, name=path.name, device="cpu", desc={"onnx": str(path), **model.meta},
                             cache_size=cache_size, cache_bytes=cache_bytes)
        built = build_method(ckpt=path)
    else:
        models, preds = list_models(), list_predictors()
        if name not in models and name not in preds:
            import difflib

            close = difflib.get_close_matches(name, models + preds, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownMethodError(f"method {name!r}: unknown{hint}; expected a model ({', '.join(models)}), a "
                                     f"training-free method ({', '.join(preds)}), an iis-train checkpoint or an "
                                     ".onnx file")
        if weights is not None and name in preds:
            raise ProtocolOptionError(f"weights={str(weights)!r}: {name!r} is a training-free method without weights")
        built = build_method(name, weights=weights, kwargs=dict(kwargs or {}))  # refuses weights that do not fit
    if isinstance(protocol, EvalProtocol):
        base = protocol
    else:
        pname = protocol or built.default_protocol
        if pname not in PRESETS:
            raise ProtocolOptionError(f"protocol={pname!r}: unknown; expected one of {sorted(PRESETS)} or an "
                                      "EvalProtocol")
        base = get_protocol(pname)
    proto = _resolve_protocol(base, dataset=dataset, threshold=threshold, zoom_in=zoom_in, flip=flip,
                              is_model=built.is_model, name=built.title)
    obj = built.obj
    if not built.is_model and hasattr(obj, "to"):
        obj.to(device)  # as iis.eval.runner.evaluate_step does
    return Segmenter(obj, proto, name=built.title, device=device, desc=built.desc, note=built.note,
                     cache_size=cache_size, cache_bytes=cache_bytes, dtype=dtype, is_model=built.is_model)


class Segmenter:
    """A loaded method and its protocol. Build with :func:`iis.load`.

    Attributes:
        name: method / model name (or the ONNX file name).
        protocol: the ``EvalProtocol`` applied (threshold, zoom-in, flip, infer size).
        device: torch device of the model.
        desc: description as stored in ``iis-eval`` result files (method, weights, kwargs).
        note: e.g. the random-initialisation warning, or None.
        is_model: True for trainable models (run by ``ModelPredictor``), False for training-free methods.
    """

    def __init__(self, obj: Any, protocol: EvalProtocol, *, name: str, device: str | torch.device = "cpu",
                 desc: dict[str, Any] | None = None, note: str | None = None, cache_size: int = 4,
                 cache_bytes: int | None = None, dtype: torch.dtype | None = None, is_model: bool | None = None):
        self.name, self.protocol, self.device = name, protocol, torch.device(device)
        self.desc, self.note, self.dtype = dict(desc or {}), note, dtype
        self.is_model = bool(is_model) if is_model is not None else not hasattr(obj, "set_image")
        if self.is_model and isinstance(obj, torch.nn.Module):
            obj = obj.eval().to(self.device)
        self._obj = obj
        self._lock = threading.RLock()
        self._cache = ImageStateCache(cache_size, cache_bytes)

    def __repr__(self) -> str:
        kind = "model" if self.is_model else "training-free"
        return f"Segmenter({self.name!r}, {kind}, protocol={self.protocol.name!r}, device={str(self.device)!r})"

    # ------------------------------------------------------------------ predictors
    def _predictor_for(self, image: np.ndarray, key: str) -> Any:
        """A predictor of its own for one session, with the image set.

        Models: a new ``ModelPredictor`` over the shared model (``set_image`` is a tensor conversion).
        Training-free: a fork of the image's prepared predictor from the LRU, whose image-only stage
        (M2N2: attention + upsampler) is computed once per image. The per-click state (M2N2's Markov-map
        cache) stays per session: M2N2's maps depend in the last float bits on which clicks are computed
        together (one batched matrix product), and evaluation computes one new map per click, so sharing
        maps between sessions could change masks.
        """
        if self.is_model:
            p = ModelPredictor(self._obj, self.protocol, self.device, self.dtype)
            p.set_image(image)
            return p

        def build():
            p = _fork(self._obj)
            p.set_image(image)
            warm = getattr(p, "upsampler", None)  # M2N2's image stage: attention matrix + JBU range weights
            if callable(warm):
                warm()
            return p

        return _fork(self._cache.get(key, build))

    def prepare(self, image: np.ndarray) -> str:
        """Compute and cache the image-only state now (M2N2: attention and upsampler), so the first click
        of a later session on this image is fast; returns the image key. A no-op for models, which fuse
        clicks at the input and have no click-independent stage."""
        image = check_rgb(image)
        key = image_key(image)
        if not self.is_model:
            with self._lock:
                self._predictor_for(image, key)
        return key

    def cache_info(self) -> dict[str, int | None]:
        """Image-state LRU statistics (``size``, ``maxsize``, ``hits``, ``misses``, ``nbytes``, ``max_bytes``)."""
        return self._cache.info()

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------ API
    def session(self, image: np.ndarray) -> "Session":
        """A stateful interactive session on ``image`` (``uint8 (H, W, 3)`` RGB; copied)."""
        image = check_rgb(image)
        key = image_key(image)
        with self._lock:
            return Session(self, image, key, self._predictor_for(image, key))

    def predict(self, image: np.ndarray, clicks: Iterable[Click | Sequence[Any]], *,
                init_mask: np.ndarray | None = None) -> Prediction:
        """Stateless: the prediction after ``clicks`` (in order), exactly as a session gives it.

        The clicks are replayed one by one, as in evaluation: for models each prediction is the next
        click's previous mask and zoom source; for M2N2 each click computes one new Markov map (see
        ``_predictor_for``). The image-only state comes from the LRU. ``init_mask`` starts from a mask
        as :meth:`Session.set_mask` does.
        """
        sess = self.session(image)
        clicks = check_clicks(clicks, sess.shape)
        if init_mask is not None:
            sess.set_mask(init_mask)
        return sess.extend(clicks) if clicks else sess.prediction


class Session:
    """Interactive state on one image: the clicks so far, the predictor state after each, undo.

    Build with :meth:`Segmenter.session`. Every method either completes or, when it raises (a click
    outside the image, a wrong mask, nothing to undo), leaves the session exactly as it was.
    """

    def __init__(self, seg: Segmenter, image: np.ndarray, key: str, predictor: Any):
        self._seg, self.key, self._p = seg, key, predictor
        self.image = image.view()
        self.image.setflags(write=False)  # the session's own copy, read-only
        self._initial = predictor.get_state() if seg.is_model else None
        self._clicks: list[Click] = []
        self._history: list[tuple[Any, Prediction]] = []  # (predictor state, prediction) before each click
        self._pred = self._empty()

    def _empty(self) -> Prediction:
        return Prediction.from_prob(np.zeros(self.shape, np.float32), (), self._seg.protocol.threshold)

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

    @property
    def clicks(self) -> tuple[Click, ...]:
        return tuple(self._clicks)

    @property
    def prediction(self) -> Prediction:
        """The current prediction (all False before the first click; the mask after ``set_mask``)."""
        return self._pred

    def __len__(self) -> int:
        return len(self._clicks)

    def click(self, x: float, y: float, positive: bool = True) -> Prediction:
        """Add a click at column ``x``, row ``y`` (original pixels) and predict."""
        return self.extend([Click(x, y, positive)])

    def extend(self, clicks: Iterable[Click | Sequence[Any]]) -> Prediction:
        """Add several clicks, one prediction per click (all validated first; all or nothing)."""
        clicks = check_clicks(clicks, self.shape)
        thr = self._seg.protocol.threshold
        with self._seg._lock:
            saved = (list(self._clicks), list(self._history), self._pred,
                     self._p.get_state() if self._seg.is_model else None)
            try:
                for c in clicks:
                    state = self._p.get_state() if self._seg.is_model else None
                    seq = self._clicks + [c]
                    prob = self._p.predict(seq)
                    self._history.append((state, self._pred))
                    self._clicks, self._pred = seq, Prediction.from_prob(prob, seq, thr)
            except BaseException:
                self._clicks, self._history, self._pred = saved[0], saved[1], saved[2]
                if self._seg.is_model:
                    self._p.set_state(saved[3])
                raise
        return self._pred

    def undo(self) -> Prediction:
        """Take the last click back: the predictor state (previous mask, zoom ROI) and the prediction
        before it are restored exactly (saved, not recomputed)."""
        with self._seg._lock:
            if not self._clicks:
                raise NothingToUndoError("undo: no click to take back (the session has 0 clicks; "
                                         "reset() and set_mask() clear the history)")
            state, pred = self._history.pop()
            if self._seg.is_model:
                self._p.set_state(state)
            self._clicks.pop()
            self._pred = pred
        return pred

    def reset(self) -> Prediction:
        """Forget every click and any starting mask (back to an empty prediction)."""
        with self._seg._lock:
            if self._seg.is_model:
                self._p.set_state(self._initial)
            self._clicks, self._history, self._pred = [], [], self._empty()
        return self._pred

    def set_mask(self, mask: np.ndarray) -> Prediction:
        """Start from an existing mask (DAVIS-585 "from init"); clears the clicks and the undo history.

        ``mask``: ``(H, W)`` bool, or numbers in [0, 1] (a soft mask is kept soft).

        * Models: the mask becomes the previous-mask input of the next click (as a soft map) and, with
          zoom-in, the map the next ROI is computed from (as if the model had predicted it), exactly what
          the predictor's own previous prediction would be.
        * Training-free methods have no previous-mask input: the mask is the session's prediction until
          the next click, which is then predicted from the clicks alone.

        ``undo()`` after the first click returns to this mask; ``reset()`` forgets it.
        """
        m = _check_mask(mask, self.shape)
        with self._seg._lock:
            if self._seg.is_model:
                self._p.set_state(self._initial)
                self._p.set_prev_mask(m)
            self._clicks, self._history = [], []
            self._pred = Prediction.from_prob(m, (), self._seg.protocol.threshold)
        return self._pred
