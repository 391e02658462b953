"""`TrainSample`: one training image with all its objects, as the training pipeline sees it.

Objects live in a stack of non-overlapping label layers, like RITM's ``DSample`` (protocol.md §C.1,
§C.3), but with object ids that are unique across layers, so one integer names one object everywhere.
A child (part) object may overlap its parent because they sit in different layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from iis.core.types import check_image

__all__ = ["TrainSample", "pack_masks"]


@dataclass
class TrainSample:
    """A multi-object training sample.

    Attributes:
        image: ``uint8 (H, W, 3)`` RGB.
        layers: ``int32 (H, W, L)`` label layers; a pixel value ``> 0`` is an object id, ``0`` is none.
            Ids are unique across layers. Pixels of ids missing from ``parents`` are erased by `sync`.
        parents: object id -> parent id (``None`` for root objects). Its keys are the live objects.
        ignore: optional ``bool (H, W)``: pixels with unknown label (target -1, never clicked).
        id: a readable identifier (image stem), for error messages and debugging.
    """

    image: np.ndarray
    layers: np.ndarray
    parents: dict[int, int | None]
    ignore: np.ndarray | None = None
    id: str = ""
    _areas: dict[int, int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_image(self.image, f"TrainSample({self.id}).image")
        if self.layers.ndim == 2:
            self.layers = self.layers[..., None]
        if self.layers.ndim != 3 or self.layers.shape[:2] != self.image.shape[:2]:
            raise ValueError(
                f"TrainSample({self.id}).layers: expected (H, W) or (H, W, L) matching image "
                f"{self.image.shape[:2]}, got {self.layers.shape}"
            )
        if self.layers.dtype != np.int32:
            self.layers = self.layers.astype(np.int32)
        if self.ignore is not None:
            if self.ignore.shape != self.image.shape[:2]:
                raise ValueError(
                    f"TrainSample({self.id}).ignore: expected shape {self.image.shape[:2]}, got {self.ignore.shape}"
                )
            self.ignore = self.ignore.astype(bool)
        for oid, parent in self.parents.items():
            if parent is not None and parent not in self.parents:
                raise ValueError(f"TrainSample({self.id}): object {oid} has unknown parent {parent}")

    @classmethod
    def from_instance_map(
        cls, image: np.ndarray, instances: np.ndarray, ignore: np.ndarray | None = None, id: str = ""
    ) -> TrainSample:
        """Builds a flat sample (every object a root) from an ``(H, W)`` instance-id map (0 = background)."""
        instances = np.asarray(instances).astype(np.int32)
        ids = [int(i) for i in np.unique(instances) if i > 0]
        return cls(image, instances, {i: None for i in ids}, ignore, id)

    # ----------------------------------------------------------------- queries
    @property
    def object_ids(self) -> list[int]:
        return sorted(self.parents)

    @property
    def root_ids(self) -> list[int]:
        return sorted(o for o, p in self.parents.items() if p is None)

    def __len__(self) -> int:
        return len(self.parents)

    def children(self, oid: int) -> list[int]:
        return sorted(o for o, p in self.parents.items() if p == oid)

    def object_mask(self, oid: int) -> np.ndarray:
        """``bool (H, W)`` mask of object ``oid``."""
        return (self.layers == oid).any(axis=2)

    def background_mask(self) -> np.ndarray:
        """``bool (H, W)``: no label in any layer and not ignored (RITM ``get_background_mask``)."""
        bg = (self.layers == 0).all(axis=2)
        if self.ignore is not None:
            bg &= ~self.ignore
        return bg

    def areas(self) -> dict[int, int]:
        if self._areas is None:
            self._areas = self._pixel_areas()
        return {o: self._areas.get(o, 0) for o in self.parents}

    def _pixel_areas(self) -> dict[int, int]:
        ids, counts = np.unique(self.layers, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts) if i > 0}

    # --------------------------------------------------------------- mutation
    def copy(self) -> TrainSample:
        ignore = None if self.ignore is None else self.ignore.copy()
        return TrainSample(self.image.copy(), self.layers.copy(), dict(self.parents), ignore, self.id)

    def remove_object(self, oid: int) -> None:
        """Forgets an object and re-parents its children to its parent (pixels stay, as in RITM)."""
        parent = self.parents.pop(oid)
        for child, p in self.parents.items():
            if p == oid:
                self.parents[child] = parent

    def remove_small_objects(self, min_area: int) -> None:
        """Drops objects whose area is below ``min_area`` pixels (RITM ``DSample.remove_small_objects``)."""
        for oid, area in self.areas().items():
            if area < min_area:
                self.remove_object(oid)

    def sync(self) -> TrainSample:
        """Recomputes areas after a geometric change: erases pixels of unknown ids and forgets objects of area 0.

        Mirrors RITM ``DSample.augment`` (`_compute_objects_areas` + ``remove_small_objects(1)``).
        """
        areas = self._pixel_areas()
        unknown = [i for i in areas if i not in self.parents]
        if unknown:
            self.layers[np.isin(self.layers, unknown)] = 0
        self._areas = {i: a for i, a in areas.items() if i in self.parents}
        self.remove_small_objects(1)
        return self


def pack_masks(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Packs possibly overlapping binary masks into non-overlapping label layers.

    Larger masks are placed first, each into the first layer where it overlaps nothing (the greedy rule
    of RITM's annotation converter, docs/protocol.md §C.3). Mask ``i`` gets id ``i + 1``.

    Returns:
        ``int32 (H, W, L)`` with ``L >= 1``.
    """
    layers: list[np.ndarray] = []
    order = sorted(range(len(masks)), key=lambda i: -int(np.count_nonzero(masks[i])))
    for i in order:
        m = np.asarray(masks[i]).astype(bool)
        if m.shape != tuple(shape):
            raise ValueError(f"mask {i}: expected shape {tuple(shape)}, got {m.shape}")
        for layer in layers:
            if not layer[m].any():
                layer[m] = i + 1
                break
        else:
            layer = np.zeros(shape, np.int32)
            layer[m] = i + 1
            layers.append(layer)
    if not layers:
        layers.append(np.zeros(shape, np.int32))
    return np.stack(layers, axis=2)
