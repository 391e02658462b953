"""Training augmentation recipes (protocol.md §C.6) written for albumentations 2.x.

The reference code used albumentations 0.5; the 2.x equivalents used here are:
``ShiftScaleRotate(shift .03, scale 0, rotate ±3)`` -> ``Affine`` with the same parameters (what 2.x's
own ShiftScaleRotate builds), ``Flip`` (removed in 2.x) -> `RandomFlip`, and RITM's custom
``UniformRandomResize`` -> `UniformRandomResize`. Masks always use nearest-neighbour interpolation and are
padded with 0 (background), so instance ids survive unchanged.

Determinism: `augment_sample` reseeds the pipeline from the caller's generator, so a given
(seed, epoch, index) always yields the same augmentation.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check at import (offline machines)
import albumentations as A  # noqa: E402
from albumentations.augmentations.geometric import functional as AF  # noqa: E402

from iis.data.train.sample import TrainSample  # noqa: E402

__all__ = [
    "UniformRandomResize",
    "RandomFlip",
    "RandomRatioCrop",
    "aligned_augment",
    "sbd_augment",
    "cocolvis_augment",
    "val_augment",
    "augment_sample",
    "AUGMENTATIONS",
]


def _crop_hw(crop: int | tuple[int, int]) -> tuple[int, int]:
    hw = (crop, crop) if isinstance(crop, int) else tuple(crop)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"crop: expected an int or (height, width) of positive ints, got {crop!r}")
    return int(hw[0]), int(hw[1])


class UniformRandomResize(A.DualTransform):
    """Isotropic resize by ``s ~ U(scale_range)``; new size ``round(H*s) x round(W*s)`` (RITM transforms.py).

    Linear interpolation for the image, nearest for masks.
    """

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.9, 1.1),
        interpolation: int = cv2.INTER_LINEAR,
        mask_interpolation: int = cv2.INTER_NEAREST,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range: expected 0 < low <= high, got {scale_range!r}")
        self.scale_range = (float(lo), float(hi))
        self.interpolation = interpolation
        self.mask_interpolation = mask_interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        s = self.py_random.uniform(*self.scale_range)
        h, w = params["shape"][:2]
        return {"target_shape": (max(1, int(round(h * s))), max(1, int(round(w * s))))}

    def apply(self, img: np.ndarray, target_shape: tuple[int, int], **params: Any) -> np.ndarray:
        return AF.resize(img, target_shape, self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, target_shape: tuple[int, int], **params: Any) -> np.ndarray:
        return AF.resize(mask, target_shape, self.mask_interpolation)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale_range", "interpolation", "mask_interpolation")


class RandomFlip(A.DualTransform):
    """albumentations 0.5 ``Flip``: horizontal, vertical or both, chosen uniformly (applied with ``p``)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p=p)

    def get_params(self) -> dict[str, Any]:
        return {"d": self.py_random.randint(-1, 1)}  # cv2.flip code: -1 both, 0 vertical, 1 horizontal

    @staticmethod
    def _flip(x: np.ndarray, d: int) -> np.ndarray:
        axes = {-1: (0, 1), 0: (0,), 1: (1,)}[d]
        return np.ascontiguousarray(np.flip(x, axis=axes))

    def apply(self, img: np.ndarray, d: int = 1, **params: Any) -> np.ndarray:
        return self._flip(img, d)

    def apply_to_mask(self, mask: np.ndarray, d: int = 1, **params: Any) -> np.ndarray:
        return self._flip(mask, d)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


class RandomRatioCrop(A.DualTransform):
    """FocalClick/GPCIS "aligned" crop (protocol.md §C.6): a window of ``r_h * H`` x ``r_w * W`` with
    ``r ~ N(mean, std)`` truncated to ``ratio_range`` per axis, at a uniform position (windows larger than
    the image are zero-padded), resized to ``size``. Upstream's ``x2 = y1 + W`` width bug is fixed: the
    window is ``[x1, x1 + w)``. Linear for the image, nearest for masks (upstream used bilinear on labels).
    """

    def __init__(self, size: tuple[int, int] = (256, 256), ratio_range: tuple[float, float] = (0.3, 1.3),
                 mean: float = 0.8, std: float = 0.4, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.size, self.ratio_range, self.mean, self.std = _crop_hw(size), tuple(ratio_range), mean, std

    def _ratio(self) -> float:
        lo, hi = self.ratio_range
        for _ in range(100):  # rejection sampling of the truncated normal
            r = self.py_random.gauss(self.mean, self.std)
            if lo <= r <= hi:
                return r
        return min(max(self.mean, lo), hi)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        ch, cw = max(1, round(self._ratio() * h)), max(1, round(self._ratio() * w))
        y0 = self.py_random.randint(min(0, h - ch), max(0, h - ch))
        x0 = self.py_random.randint(min(0, w - cw), max(0, w - cw))
        return {"window": (y0, x0, ch, cw)}

    @staticmethod
    def _cut(x: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
        y0, x0, ch, cw = window
        out = np.zeros((ch, cw, *x.shape[2:]), x.dtype)
        sy, sx = max(y0, 0), max(x0, 0)
        ey, ex = min(y0 + ch, x.shape[0]), min(x0 + cw, x.shape[1])
        out[sy - y0:ey - y0, sx - x0:ex - x0] = x[sy:ey, sx:ex]
        return out

    def apply(self, img: np.ndarray, window=(0, 0, 1, 1), **params: Any) -> np.ndarray:
        return AF.resize(self._cut(img, window), self.size, cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, window=(0, 0, 1, 1), **params: Any) -> np.ndarray:
        return AF.resize(self._cut(mask, window), self.size, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "ratio_range", "mean", "std")


def aligned_augment(crop: int | tuple[int, int] = (256, 256)) -> A.Compose:
    """FocalClick/GPCIS recipe: random-ratio crop resized to ``crop`` + vertical/horizontal flips (p 0.3 each)
    + the usual colour jitter."""
    return A.Compose([RandomRatioCrop(_crop_hw(crop)), A.VerticalFlip(p=0.3), A.HorizontalFlip(p=0.3), *_colour()])


def _pad_crop(crop_hw: tuple[int, int]) -> list[A.BasicTransform]:
    h, w = crop_hw
    return [
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        A.RandomCrop(h, w),
    ]


def _colour() -> list[A.BasicTransform]:
    return [
        A.RandomBrightnessContrast(brightness_limit=(-0.25, 0.25), contrast_limit=(-0.15, 0.4), p=0.75),
        A.RGBShift(r_shift_limit=10, g_shift_limit=10, b_shift_limit=10, p=0.75),
    ]


def sbd_augment(crop: int | tuple[int, int] = (320, 480), scale_range: tuple[float, float] = (0.75, 1.25)) -> A.Compose:
    """RITM/SimpleClick SBD training recipe (protocol.md §C.6 "SBD configs")."""
    return A.Compose(
        [
            UniformRandomResize(scale_range),
            RandomFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            # = ShiftScaleRotate(shift_limit=0.03, scale_limit=0, rotate_limit=(-3, 3), border_mode=0, p=0.75)
            A.Affine(
                scale=1.0,
                translate_percent={"x": (-0.03, 0.03), "y": (-0.03, 0.03)},
                rotate=(-3, 3),
                shear=0,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.75,
            ),
            *_pad_crop(_crop_hw(crop)),
            *_colour(),
        ]
    )


def cocolvis_augment(
    crop: int | tuple[int, int] = (448, 448), scale_range: tuple[float, float] = (0.75, 1.40)
) -> A.Compose:
    """RITM/SimpleClick COCO+LVIS training recipe (protocol.md §C.6 "C+L configs")."""
    return A.Compose(
        [UniformRandomResize(scale_range), A.HorizontalFlip(p=0.5), *_pad_crop(_crop_hw(crop)), *_colour()]
    )


def val_augment(crop: int | tuple[int, int] = (320, 480), scale_range: tuple[float, float] | None = None) -> A.Compose:
    """RITM validation recipe: pad + random crop, with ``UniformRandomResize(0.75, 1.25)`` first for SBD."""
    head = [UniformRandomResize(scale_range)] if scale_range is not None else []
    return A.Compose([*head, *_pad_crop(_crop_hw(crop))])


# name -> recipe builder(crop), for configs
AUGMENTATIONS: dict[str, Callable[..., A.Compose]] = {
    "sbd": sbd_augment,
    "cocolvis": cocolvis_augment,
    "val": val_augment,
    "sbd_val": lambda crop=(320, 480): val_augment(crop, (0.75, 1.25)),
    "aligned": aligned_augment,
}


def augment_sample(sample: TrainSample, augment: Callable[..., dict] | None, rng: np.random.Generator) -> TrainSample:
    """Applies one augmentation draw to the image and all object layers (and the ignore map) together.

    Args:
        sample: the source sample (left untouched).
        augment: an albumentations pipeline (or any callable ``(image=, mask=) -> {'image', 'mask'}``);
            ``None`` keeps the sample as is.
        rng: reseeds the pipeline (``set_random_seed``) so the draw is a function of the caller's stream.

    Returns:
        A new `TrainSample` whose objects of area 0 are forgotten (`TrainSample.sync`).
    """
    if augment is None:
        return sample.copy().sync()
    if hasattr(augment, "set_random_seed"):
        augment.set_random_seed(int(rng.integers(2**31 - 1)))
    masks = sample.layers
    if sample.ignore is not None:
        masks = np.concatenate([masks, sample.ignore[..., None].astype(np.int32)], axis=2)
    out = augment(image=sample.image, mask=masks)
    image, masks = np.ascontiguousarray(out["image"]), out["mask"]
    if masks.ndim == 2:
        masks = masks[..., None]
    if masks.shape[:2] != image.shape[:2]:
        raise ValueError(f"augment: image {image.shape[:2]} and mask {masks.shape[:2]} sizes differ after augmentation")
    ignore = None
    if sample.ignore is not None:
        ignore, masks = masks[..., -1] > 0, masks[..., :-1]
    layers = np.ascontiguousarray(masks, dtype=np.int32)
    return TrainSample(image, layers, dict(sample.parents), ignore, sample.id).sync()
