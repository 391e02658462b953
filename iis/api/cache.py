"""A small, thread-safe LRU of per-image state keyed by an image hash, bounded in entries and bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

__all__ = ["image_key", "ImageStateCache", "state_nbytes"]


def image_key(image: np.ndarray) -> str:
    """Content hash of an image (shape, dtype and bytes; BLAKE2b-128). Two arrays with the same pixels
    share a key whatever their memory layout; any changed pixel gives another key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.shape}|{image.dtype}".encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def state_nbytes(obj: Any, _depth: int = 0, _seen: set[int] | None = None) -> int:
    """Bytes held by the arrays of a cached state: numpy arrays and torch tensors found in the object's
    attributes, dicts, lists, tuples and dataclasses, three levels deep (what a prepared predictor holds:
    its image, attention matrix, upsampler weights). Shared arrays are counted once."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen or _depth > 3:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if type(obj).__module__.startswith("torch") and hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        return int(obj.element_size() * obj.nelement())
    if isinstance(obj, dict):
        items: Any = obj.values()
    elif isinstance(obj, (list, tuple, set)):
        items = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).values()
    else:
        return 0
    return sum(state_nbytes(v, _depth + 1, seen) for v in items)


class ImageStateCache:
    """``key -> state`` LRU holding at most ``maxsize`` entries (0 disables caching) and, when ``max_bytes``
    is set, at most that many bytes of arrays (measured by :func:`state_nbytes` when an entry is stored;
    a state larger than ``max_bytes`` alone is returned but not kept).

    ``get(key, build)`` returns the cached state or builds, stores and returns it. ``hits``/``misses``
    count lookups. Building runs outside the cache lock (a slow image stage does not block lookups of
    other images); two threads racing on the same new key may both build it, and the first stored wins.
    """

    def __init__(self, maxsize: int = 4, max_bytes: int | None = None):
        if maxsize < 0:
            raise ValueError(f"cache_size: expected >= 0 images, got {maxsize}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"cache_bytes: expected >= 0 bytes or None (no bound), got {max_bytes}")
        self.maxsize = int(maxsize)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self._d: OrderedDict[str, Any] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                self.hits += 1
                return self._d[key]
            self.misses += 1
        value = build()
        if self.maxsize == 0:
            return value
        nbytes = state_nbytes(value) if self.max_bytes is not None else 0
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return value
        with self._lock:
            if key in self._d:
                return self._d[key]
            self._d[key], self._sizes[key] = value, nbytes
            while len(self._d) > self.maxsize or (self.max_bytes is not None and self.nbytes > self.max_bytes):
                old, _ = self._d.popitem(last=False)
                self._sizes.pop(old, None)
        return value

    @property
    def nbytes(self) -> int:
        """Bytes of the cached states (0 unless ``max_bytes`` is set: sizes are measured only then)."""
        return sum(self._sizes.values())

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._sizes.clear()

    def __len__(self) -> int:
        return len(self._d)

    def info(self) -> dict[str, int | None]:
        return {"size": len(self._d), "maxsize": self.maxsize, "hits": self.hits, "misses": self.misses,
                "nbytes": self.nbytes, "max_bytes": self.max_bytes}
