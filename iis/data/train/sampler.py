"""Initial-click sampler for training: RITM's ``MultiPointSampler`` (protocol.md §C.4), in our click convention.

Every random draw comes from the ``numpy.random.Generator`` passed to the call, so the sampler holds no
state between samples (train and validation loaders never share a stream).

Output layout (kept from RITM because iterative training writes its extra clicks into the tail of each
block, docs/protocol.md §C.5): ``(2 * max_num_points, 3)`` float32 rows ``(x, y, label)``; rows
``[0, max_num_points)`` are positive slots (label 1), rows ``[max_num_points, 2 * max_num_points)`` negative
slots (label 0); unused rows are ``(-1, -1, -1)``. Coordinates are pixel indices (x = column, y = row).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from iis.core.types import PAD_LABEL
from iis.data.train.sample import TrainSample

__all__ = ["MultiPointSampler", "SampledTarget", "geometric_probs"]

_KERNEL = np.ones((3, 3), np.uint8)


def geometric_probs(n: int, gamma: float) -> np.ndarray:
    """``p_k ∝ gamma**k`` for ``k = 0..n-1`` (RITM ``generate_probs``)."""
    p = gamma ** np.arange(n, dtype=np.float64)
    return p / p.sum()


class SampledTarget(NamedTuple):
    """What the sampler draws for one sample.

    Attributes:
        points: float32 ``(2 * max_num_points, 3)`` rows ``(x, y, label)``, see the module docstring.
        mask: float32 ``(1, H, W)`` target: 1 object, 0 background, -1 ignore.
        object_ids: the selected object ids (two when objects were merged, none for an empty sample).
    """

    points: np.ndarray
    mask: np.ndarray
    object_ids: tuple[int, ...]


class MultiPointSampler:
    """Samples the target object(s) and the initial positive/negative clicks of one training sample.

    Defaults are the configuration of every RITM/SimpleClick iter-mask model and the remaining RITM
    defaults (protocol.md §C.4 table). Hierarchy sampling (``use_hierarchy``) and soft targets are not
    implemented: no published iter-mask config uses them. Differences from RITM that never matter for
    SBD / C+L (no ignore labels there): ignore pixels are excluded from every click region; the click
    ``order`` column (100, or 0 for a centre first click) is replaced by our label column.

    Args:
        max_num_points: slots per block (24).
        prob_gamma: geometric decay of the point-count distribution (0.8).
        merge_objects_prob: probability of merging several root objects when there are >= 2 (0.15).
        max_num_merged_objects: upper bound of the merged count (2).
        expand_ratio: border band width = ``ceil(expand_ratio * sqrt(area))`` dilations (0.1).
        positive_erode_prob / positive_erode_iters: erosion of each positive region (0.9, 3 iterations,
            kept only if more than 10 px survive).
        negative_bg_prob / negative_other_prob / negative_border_prob: per-negative strategy (0.1/0.4/0.5).
        first_click_center: draw each object's first positive from its interior ``DT > max(DT) / sfc_inner_k``
            (FocalClick configs; RITM defaults False).
        sfc_inner_k: interior factor (1.7).
    """

    def __init__(
        self,
        max_num_points: int = 24,
        prob_gamma: float = 0.8,
        merge_objects_prob: float = 0.15,
        max_num_merged_objects: int = 2,
        expand_ratio: float = 0.1,
        positive_erode_prob: float = 0.9,
        positive_erode_iters: int = 3,
        negative_bg_prob: float = 0.1,
        negative_other_prob: float = 0.4,
        negative_border_prob: float = 0.5,
        first_click_center: bool = False,
        sfc_inner_k: float = 1.7,
    ) -> None:
        if max_num_points < 1:
            raise ValueError(f"max_num_points: expected >= 1, got {max_num_points}")
        if max_num_merged_objects < 1:
            raise ValueError(f"max_num_merged_objects: expected >= 1, got {max_num_merged_objects}")
        neg = np.array([negative_bg_prob, negative_other_prob, negative_border_prob], np.float64)
        if (neg < 0).any() or not math.isclose(neg.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(f"negative_*_prob: expected non-negative probabilities summing to 1, got {neg.tolist()}")
        self.max_num_points = max_num_points
        self.prob_gamma = prob_gamma
        self.merge_objects_prob = merge_objects_prob
        self.max_num_merged_objects = max_num_merged_objects
        self.expand_ratio = expand_ratio
        self.positive_erode_prob = positive_erode_prob
        self.positive_erode_iters = positive_erode_iters
        self.neg_strategy_probs = neg / neg.sum()
        self.first_click_center = first_click_center
        self.sfc_inner_k = sfc_inner_k
        self._pos_probs = geometric_probs(max_num_points, prob_gamma)  # positives: 1 + Choice(0..N-1)
        self._neg_probs = geometric_probs(max_num_points + 1, prob_gamma)  # negatives: Choice(0..N)
        self._pos_cdf, self._neg_cdf = np.cumsum(self._pos_probs)[:-1], np.cumsum(self._neg_probs)[:-1]
        self._neg_cdf_strategy = np.cumsum(self.neg_strategy_probs)[:-1]

    @property
    def num_rows(self) -> int:
        return 2 * self.max_num_points

    def __call__(self, sample: TrainSample, rng: np.random.Generator) -> SampledTarget:
        """Draws the target and the initial clicks.

        Args:
            sample: the (augmented) sample; only its root objects can be targets (RITM ``root_objects``).
            rng: the generator of this item.
        """
        h, w = sample.layers.shape[:2]
        ignore = sample.ignore if sample.ignore is not None else np.zeros((h, w), bool)
        points = np.full((self.num_rows, 3), PAD_LABEL, np.float32)
        roots = sample.root_ids

        if not roots:  # empty crop: all-zero target, every negative strategy samples the background
            target = np.zeros((h, w), np.float32)
            target[ignore] = -1
            bg = sample.background_mask()
            self._write(points, self.max_num_points, self._negatives([bg, bg, bg], rng), 0)
            return SampledTarget(points, target[None], ())

        ids = self._choose_objects(roots, rng)
        obj_masks = [sample.object_mask(o) & ~ignore for o in ids]
        gt = np.logical_or.reduce(obj_masks)
        pos_masks = [self._positive_erosion(m, rng) for m in obj_masks]

        not_gt = ~gt & ~ignore
        border = self._border_mask(gt) & ~ignore
        if len(sample) <= len(ids):  # no other object: RITM falls back to the background
            other = not_gt
        else:
            other = ~sample.background_mask() & not_gt & ~ignore

        self._write(points, 0, self._positives(pos_masks, rng), 1)
        self._write(points, self.max_num_points, self._negatives([not_gt, other, border], rng), 0)

        target = gt.astype(np.float32)
        target[ignore] = -1
        return SampledTarget(points, target[None], tuple(ids))

    # ----------------------------------------------------------------- pieces
    def _choose_objects(self, roots: list[int], rng: np.random.Generator) -> list[int]:
        if len(roots) > 1 and rng.random() < self.merge_objects_prob:
            most = min(len(roots), self.max_num_merged_objects)
            k = int(rng.integers(2, most + 1)) if most >= 2 else 1
            return [int(i) for i in rng.choice(roots, size=k, replace=False)]
        return [roots[int(rng.integers(len(roots)))]]

    def _positive_erosion(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # RITM erodes unless random() > p; cv2's default border does not erode from the image edge.
        if rng.random() > self.positive_erode_prob:
            return mask
        eroded = cv2.erode(mask.astype(np.uint8), _KERNEL, iterations=self.positive_erode_iters).astype(bool)
        return eroded if eroded.sum() > 10 else mask

    def _border_mask(self, gt: np.ndarray) -> np.ndarray:
        iters = int(math.ceil(self.expand_ratio * math.sqrt(gt.sum())))
        expanded = cv2.dilate(gt.astype(np.uint8), _KERNEL, iterations=iters).astype(bool)
        return expanded & ~gt

    def _count(self, rng: np.random.Generator, negative: bool) -> int:
        # inverse-CDF draw from the geometric laws (same distribution as rng.choice(p=...), faster)
        if negative:
            return int(np.searchsorted(self._neg_cdf, rng.random(), side="right"))
        return 1 + int(np.searchsorted(self._pos_cdf, rng.random(), side="right"))

    def _first_candidates(self, mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask.astype(np.uint8), 1)
        dt = cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]
        return np.argwhere(dt > dt.max() / self.sfc_inner_k)

    def _positives(self, pos_masks: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """``(k, 2)`` (row, col) positives: one object -> 1 + Choice(0..N-1) points; merged -> §C.4 step 5."""
        cands = [np.argwhere(m) for m in pos_masks]
        keep = [i for i, c in enumerate(cands) if len(c)]
        if not keep:
            return np.zeros((0, 2), np.int64)

        def first(i: int) -> np.ndarray:
            c = self._first_candidates(pos_masks[i]) if self.first_click_center else cands[i]
            c = c if len(c) else cands[i]
            return c[rng.integers(len(c), size=1)]

        if len(keep) == 1:
            c = cands[keep[0]]
            return np.concatenate([first(keep[0]), c[rng.integers(len(c), size=self._count(rng, False) - 1)]])
        firsts = np.concatenate([first(i) for i in keep])
        # Union set: size from the negative-count law, each point on an object drawn with equal probability.
        n = self._count(rng, negative=True)
        owner = rng.integers(len(keep), size=n)
        union = np.zeros((n, 2), np.int64)
        for j, i in enumerate(keep):
            sel = owner == j
            union[sel] = cands[i][rng.integers(len(cands[i]), size=int(sel.sum()))]
        room = max(self.max_num_points - len(firsts), 0)
        if len(union) > room:
            union = union[np.sort(rng.choice(len(union), size=room, replace=False))]
        return np.concatenate([firsts, union])[: self.max_num_points]

    def _negatives(self, regions: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """``(k, 2)`` (row, col) negatives: Choice(0..N) points, each from a bg/other/border strategy draw."""
        n = self._count(rng, negative=True)
        strategy = np.searchsorted(self._neg_cdf_strategy, rng.random(n), side="right")
        pts = np.full((n, 2), -1, np.int64)
        for k in np.unique(strategy):
            sel = strategy == k
            c = np.argwhere(regions[k])
            if len(c):  # an empty strategy region yields no point (RITM skips it)
                pts[sel] = c[rng.integers(len(c), size=int(sel.sum()))]
        return pts[pts[:, 0] >= 0]

    @staticmethod
    def _write(points: np.ndarray, start: int, rc: np.ndarray, label: int) -> None:
        k = len(rc)
        points[start : start + k, 0] = rc[:, 1]
        points[start : start + k, 1] = rc[:, 0]
        points[start : start + k, 2] = label
