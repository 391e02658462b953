"""A small, thread-safe LRU of per-image state keyed by an image hash."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

__all__ = ["image_key", "ImageStateCache"]


def image_key(image: np.ndarray) -> str:
    """Content hash of an image (shape, dtype and bytes; BLAKE2b-128). Two arrays with the same pixels
    share a key whatever their memory layout; any changed pixel gives another key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.shape}|{image.dtype}".encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


class ImageStateCache:
    """``key -> state`` LRU holding at most ``maxsize`` entries (0 disables caching).

    ``get(key, build)`` returns the cached state or builds, stores and returns it. ``hits``/``misses``
    count lookups. Building runs outside the cache lock (a slow image stage does not block lookups of
    other images); two threads racing on the same new key may both build it, and the first stored wins.
    """

    def __init__(self, maxsize: int = 4):
        if maxsize < 0:
            raise ValueError(f"cache_size: expected >= 0 images, got {maxsize}")
        self.maxsize = int(maxsize)
        self._d: OrderedDict[str, Any] = OrderedDict()
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
        with self._lock:
            if key in self._d:
                return self._d[key]
            self._d[key] = value
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)

    def info(self) -> dict[str, int]:
        return {"size": len(self._d), "maxsize": self.maxsize, "hits": self.hits, "misses": self.misses}
