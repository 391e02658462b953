"""M2N2 predictor (paper §3, docs/methods.md §2): attention -> Markov-maps -> scores -> truncated NN.

Registered names: ``m2n2`` (SD2, needs ``sd2_path``), ``m2n2_dinov2`` (``dinov2_path``),
``m2n2_affinity`` and ``m2n2_effnet`` (run without downloaded weights), and the paper's baselines
``attention_nn``, ``kl_nn`` and ``m2n2_no_floodfill`` (Table 3), which take ``attention=`` one of
``sd2``/``dinov2``/``affinity``/``effnet`` or a source object.
"""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from iis.core.types import Click, check_image
from iis.models.registry import register_predictor

from .attention import AffinityAttention, DinoV2Attention, EffNetAttention, SD2Attention
from .markov import (CHAINS, JointBilateralUpsampler, attention_distance, change_temperature, flood_fill, ipf,
                     kl_distance, markov_chain, markov_chain_blocked, start_states, transition_power)
from .segment import ThresholdTable, select_threshold, threshold_table, truncated_nn

__all__ = ["M2N2Predictor", "make_attention"]

# distance -> default row temperature: M2N2 0.65 (§4.1), Attention-NN 10 and KL-NN 2 (supp. §8)
_TEMPERATURE = {"markov": 0.65, "attention": 10.0, "kl": 2.0}


@dataclass
class _MapEntry:
    map: np.ndarray  # (H, W) float32, 0 = closest to the click, max 1
    table: ThresholdTable
    used: bool = True


class M2N2Predictor:
    """Training-free click segmentation with per-click semantic distance maps.

    Args:
        attention: a source (see :mod:`.attention`): ``grid_hw`` and ``__call__(image) -> (N, N)``.
        distance: ``"markov"`` (M2N2), ``"attention"`` (Attention-NN) or ``"kl"`` (KL-NN).
        temperature: row temperature; None = 0.65 / 10 / 2 by ``distance``.
        ipf_iterations: IPF iterations (200, §2.3); None = 200 for Markov-maps, 0 for the baselines.
        clip_min: lower clip of the attention (KL-NN: 1e-5, supp. §8); None = 1e-5 for ``kl`` only.
        threshold, max_iterations, linear_interpolation: Markov chain (0.3, 1000, on; §2.4).
        chain: ``"stepwise"`` (one mat-vec per step, as the reference), ``"blocked"``
            (:func:`.markov.markov_chain_blocked`: the same maps up to float rounding, from
            ``A^chain_block`` computed once per image and batched steps) or ``"auto"`` (default):
            blocked where the attention lives on a GPU; on CPU stepwise until a chain of the image
            runs longer than 8 blocks, blocked from then on (the matrix power costs more than short
            chains save; README "Speed").
        chain_block: steps per block of the blocked chain (32).
        use_flood_fill: minimax flood fill from the click (§3.3).
        sigma_spatial, sigma_range: JBU (1.0 low-res cells, 0.1 RGB; §4.1).
        jbu_stride, jbu_max_shifts: JBU offset lattice (1 = reference; see JointBilateralUpsampler).
        max_area: size prior bound (0.4). score_*: switch single scores (Table 2).
        cache_size: Markov-maps kept between calls (20, §2.8).
    """

    # the paper's own protocol (M2N2 clicker, always 20 clicks, ignore = background; docs/protocol.md), as every
    # method defaults to the protocol its paper reports; `--protocol plain` compares with the classical rows
    default_protocol = "m2n2"

    def __init__(self, attention, distance: str = "markov", temperature: float | None = None,
                 ipf_iterations: int | None = None, clip_min: float | None = None, threshold: float = 0.3,
                 max_iterations: int = 1000, linear_interpolation: bool = True, chain: str = "auto",
                 chain_block: int = 32, use_flood_fill: bool = True,
                 sigma_spatial: float = 1.0, sigma_range: float = 0.1, jbu_stride: int = 1,
                 jbu_max_shifts: int | None = None, max_area: float = 0.4, score_prior: bool = True,
                 score_edge: bool = True, score_pos: bool = True, score_neg: bool = True, cache_size: int = 20):
        if distance not in _TEMPERATURE:
            raise ValueError(f"distance: expected one of {sorted(_TEMPERATURE)}, got {distance!r}")
        if not callable(attention) or not hasattr(attention, "grid_hw"):
            raise TypeError(f"attention: expected an attention source with grid_hw and __call__, got {type(attention)}")
        self.source, self.distance = attention, distance
        self.temperature = float(temperature if temperature is not None else _TEMPERATURE[distance])
        if ipf_iterations is None:
            ipf_iterations = 200 if distance == "markov" else 0
        self.ipf_iterations = int(ipf_iterations)
        self.clip_min = clip_min if clip_min is not None else (1e-5 if distance == "kl" else None)
        self.threshold, self.max_iterations = float(threshold), int(max_iterations)
        self.linear_interpolation, self.use_flood_fill = bool(linear_interpolation), bool(use_flood_fill)
        if chain not in (*CHAINS, "auto"):
            raise ValueError(f"chain: expected one of {[*CHAINS, 'auto']}, got {chain!r}")
        if int(chain_block) < 1:
            raise ValueError(f"chain_block: expected >= 1, got {chain_block}")
        self.chain, self.chain_block = chain, int(chain_block)
        self.sigma_spatial, self.sigma_range = float(sigma_spatial), float(sigma_range)
        self.jbu_stride, self.jbu_max_shifts = int(jbu_stride), jbu_max_shifts
        self.max_area = float(max_area)
        self.scores = dict(prior=bool(score_prior), edge=bool(score_edge), pos=bool(score_pos), neg=bool(score_neg))
        self.cache_size = int(cache_size)
        self.timings: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._image: np.ndarray | None = None

    # ------------------------------------------------------------------ state
    def set_image(self, image: np.ndarray) -> None:
        image = check_image(image)
        if self._image is not None and np.array_equal(self._image, image):
            return  # same image: keep the attention and Markov-map caches (§2.8)
        self._image = image.copy()
        self._attn: torch.Tensor | None = None
        self._power: torch.Tensor | None = None
        self._long_chains = False  # auto: a chain of this image ran long, so blocked pays off
        self._jbu: JointBilateralUpsampler | None = None
        self._cache: dict[tuple[int, int], _MapEntry] = {}

    def _tick(self, stage: str, t0: float, device: torch.device | None = None) -> float:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        self.timings[stage] += now - t0
        self.counts[stage] += 1
        return now

    def attention(self) -> torch.Tensor:
        """The processed attention matrix of the current image (temperature, clip, IPF), cached."""
        if self._image is None:
            raise RuntimeError("call set_image() before predict()")
        if self._attn is None:
            t0 = time.perf_counter()
            A = self.source(self._image).float()
            change_temperature(A, self.temperature)
            if self.clip_min is not None:
                A.clamp_(min=self.clip_min, max=1.0).div_(A.sum(1, keepdim=True))
            if self.ipf_iterations:
                ipf(A, self.ipf_iterations)
            self._attn = A
            self._tick("attention", t0, A.device)
        return self._attn

    def chain_kind(self) -> str:
        """The chain the next click runs: ``chain``, with ``"auto"`` resolved (see the class doc)."""
        if self.chain != "auto":
            return self.chain
        attn = getattr(self, "_attn", None)
        dev = attn.device if attn is not None else getattr(self.source, "device", "cpu")
        if torch.device(dev).type == "cuda" or getattr(self, "_long_chains", False):
            return "blocked"
        return "stepwise"

    def description(self) -> dict[str, Any]:
        """Settings that change the numbers (by float rounding only, for the chain) beyond the
        builder's keyword arguments, for result files."""
        rule = {"auto": "blocked on GPU, or on CPU after a chain longer than 8 blocks; else stepwise"}
        return {"distance": self.distance, "chain": self.chain, "chain_rule": rule.get(self.chain),
                "chain_block": self.chain_block}

    def power(self) -> torch.Tensor:
        """``A^chain_block`` of the current image for the blocked chain, cached."""
        if self._power is None:
            A = self.attention()
            t0 = time.perf_counter()
            self._power = transition_power(A, self.chain_block)
            self._tick("chain_power", t0, A.device)
        return self._power

    def upsampler(self) -> JointBilateralUpsampler:
        """The image's joint bilateral upsampler (range weights computed once per image), cached."""
        if self._jbu is None:
            A = self.attention()
            t0 = time.perf_counter()
            self._jbu = JointBilateralUpsampler(self._image, self.source.grid_hw, self.sigma_spatial,
                                                self.sigma_range, self.jbu_stride, self.jbu_max_shifts,
                                                device=A.device)
            self._tick("jbu_setup", t0, A.device)
        return self._jbu

    # ------------------------------------------------------------------ maps
    def distance_maps(self, points: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Normalised full-resolution distance maps (Markov-maps for M2N2) of integer ``(x, y)`` points."""
        A = self.attention()
        dev, (h, w), (H, W) = A.device, self.source.grid_hw, self._image.shape[:2]
        t0 = time.perf_counter()
        start = start_states(np.asarray(points), (H, W), (h, w), dev)
        if self.distance == "markov" and self.chain_kind() == "blocked":
            P = self.power()
            t0 = time.perf_counter()
            low = markov_chain_blocked(A, start, self.threshold, self.max_iterations, self.linear_interpolation,
                                       power=P, block=self.chain_block)
        elif self.distance == "markov":
            low = markov_chain(A, start, self.threshold, self.max_iterations, self.linear_interpolation)
            if self.chain == "auto" and float(low.max()) > 8 * self.chain_block:  # the steps it ran
                self._long_chains = True
        elif self.distance == "attention":
            low = attention_distance(A, start)
        else:
            low = kl_distance(A, start)
        t0 = self._tick("chain", t0, dev)
        jbu = self.upsampler()
        t0 = time.perf_counter()
        hi = jbu(low.view(-1, h, w))
        hi = hi / hi.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        hi = hi.cpu().numpy()
        t0 = self._tick("upsample", t0, dev)
        out = []
        for (x, y), m in zip(points, hi):
            if self.use_flood_fill:
                m = flood_fill(m, (x, y))
                m = m / max(float(m.max()), 1e-12)
            out.append(m.astype(np.float32, copy=False))
        if self.use_flood_fill:
            self._tick("floodfill", t0)
        return out

    def _entries(self, pts: list[tuple[int, int]]) -> list[_MapEntry]:
        # drop the maps the previous call did not use, then mark all unused (reference cache, §2.8)
        for key in [k for k, v in self._cache.items() if not v.used]:
            del self._cache[key]
        for v in self._cache.values():
            v.used = False
        need = [p for p in dict.fromkeys(pts) if p not in self._cache]
        fresh: dict[tuple[int, int], _MapEntry] = {}
        if need:
            for p, m in zip(need, self.distance_maps(need)):
                t0 = time.perf_counter()
                fresh[p] = _MapEntry(m, threshold_table(m))
                self._tick("scoring", t0)
                if len(self._cache) < self.cache_size:
                    self._cache[p] = fresh[p]
        entries = [self._cache.get(p) or fresh[p] for p in pts]
        for e in entries:
            e.used = True
        return entries

    # ------------------------------------------------------------------ predict
    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        """``(H, W)`` float32 mask in {0, 1} for all clicks so far."""
        if self._image is None:
            raise RuntimeError("call set_image() before predict()")
        H, W = self._image.shape[:2]
        if not clicks:
            return np.zeros((H, W), np.float32)
        # reference rounds the clicks to integer pixels
        pts = [(min(max(int(round(c.x)), 0), W - 1), min(max(int(round(c.y)), 0), H - 1)) for c in clicks]
        labels = np.array([bool(c.positive) for c in clicks])
        entries = self._entries(pts)
        t0 = time.perf_counter()
        xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        adjusted = np.empty((len(pts), H, W), np.float32)
        self.last_thresholds = []
        for i, e in enumerate(entries):
            vals = e.map[ys, xs]
            same = labels == labels[i]
            lam, _ = select_threshold(e.table, vals[same], vals[~same], float(e.map.max()), self.max_area,
                                      **self.scores)
            self.last_thresholds.append(lam)
            np.divide(e.map, max(lam, 1e-7), out=adjusted[i])
        mask = truncated_nn(adjusted, labels, np.stack([xs, ys], 1))
        self._tick("scoring", t0)
        return mask.astype(np.float32)


# ---------------------------------------------------------------------- registry
_PRED_ARGS = set(inspect.signature(M2N2Predictor.__init__).parameters) - {"self", "attention"}


def _split(kwargs: dict[str, Any]) -> tuple[dict, dict]:
    pred = {k: v for k, v in kwargs.items() if k in _PRED_ARGS}
    src = {k: v for k, v in kwargs.items() if k not in _PRED_ARGS}
    if isinstance(src.get("dtype"), str):
        src["dtype"] = getattr(torch, src["dtype"])
    return pred, src


# CPU sources: JBU on a coarser offset lattice (see JointBilateralUpsampler) keeps a click < 1 s
_CPU_JBU = {"jbu_max_shifts": 128}


def make_attention(attention: Any = None, sd2_path=None, dinov2_path=None, **kwargs):
    """An attention source from a name (``sd2``, ``dinov2``, ``affinity``, ``effnet``) or pass an object through.

    With ``attention=None`` the source follows the given path (``sd2_path`` first).
    """
    if attention is None:
        attention = "sd2" if sd2_path is not None else "dinov2" if dinov2_path is not None else None
        if attention is None:
            raise ValueError("attention: pass attention='affinity' or 'effnet', or sd2_path=/dinov2_path= "
                             "to a local model directory")
    if not isinstance(attention, str):
        return attention
    if attention == "sd2":
        if sd2_path is None:
            raise ValueError("sd2_path: the SD2 source needs a local stable-diffusion-2 directory (see README)")
        return SD2Attention.from_pretrained(sd2_path, **kwargs)
    if attention == "dinov2":
        if dinov2_path is None:
            raise ValueError("dinov2_path: the DINOv2 source needs a local dinov2-base directory (see README)")
        return DinoV2Attention.from_pretrained(dinov2_path, **kwargs)
    if attention == "affinity":
        return AffinityAttention(**kwargs)
    if attention == "effnet":
        return EffNetAttention(**kwargs)
    raise ValueError(f"attention: expected sd2, dinov2, affinity, effnet or a source object, got {attention!r}")


def _build(defaults: dict, attention=None, sd2_path=None, dinov2_path=None, **kwargs) -> M2N2Predictor:
    pred, src = _split(kwargs)
    source = make_attention(attention, sd2_path=sd2_path, dinov2_path=dinov2_path, **src)
    if isinstance(attention, str) and attention in ("affinity", "effnet"):
        defaults = {**_CPU_JBU, **defaults}
    return M2N2Predictor(source, **{**defaults, **pred})


@register_predictor("m2n2")
def m2n2(sd2_path=None, **kwargs) -> M2N2Predictor:
    """M2N2 with SD2 attention (paper default); ``sd2_path`` = local stable-diffusion-2 (768-v) folder."""
    attention = kwargs.pop("attention", None) or "sd2"
    if sd2_path is None and attention == "sd2":
        raise ValueError("sd2_path: m2n2 needs a local stable-diffusion-2 directory (see iis/methods/m2n2/README.md)")
    return _build({}, attention, sd2_path=sd2_path, **kwargs)


@register_predictor("m2n2_dinov2")
def m2n2_dinov2(dinov2_path=None, **kwargs) -> M2N2Predictor:
    """M2N2 with DINOv2 ViT-B/14 last-layer attention at resolution 80 (paper §13)."""
    return _build({}, "dinov2", dinov2_path=dinov2_path, **kwargs)


@register_predictor("m2n2_affinity")
def m2n2_affinity(**kwargs) -> M2N2Predictor:
    """M2N2 on the weight-free bilateral affinity attention (40x40 tokens)."""
    return _build({}, "affinity", **kwargs)


@register_predictor("m2n2_effnet")
def m2n2_effnet(**kwargs) -> M2N2Predictor:
    """M2N2 on EfficientNet-Lite0 (ImageNet) feature-similarity attention (40x40 tokens)."""
    return _build({}, "effnet", **kwargs)


@register_predictor("attention_nn")
def attention_nn(attention=None, **kwargs) -> M2N2Predictor:
    """Attention-NN baseline (paper Table 3): raw attention maps, T = 10, no Markov chain, no flood fill."""
    return _build({"distance": "attention", "use_flood_fill": False}, attention, **kwargs)


@register_predictor("kl_nn")
def kl_nn(attention=None, **kwargs) -> M2N2Predictor:
    """KL-NN baseline (paper Table 3): symmetric KL of attention maps, T = 2, clipped to 1e-5."""
    return _build({"distance": "kl", "use_flood_fill": False}, attention, **kwargs)


@register_predictor("m2n2_no_floodfill")
def m2n2_no_floodfill(attention=None, **kwargs) -> M2N2Predictor:
    """M2N2 without the flood fill (paper Table 3)."""
    return _build({"use_flood_fill": False}, attention, **kwargs)
