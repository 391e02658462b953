"""The image-state cache's memory bound (``iis.load(..., cache_bytes=)``, added for the server)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import iis
from iis.api.cache import ImageStateCache, state_nbytes


def test_state_nbytes_counts_nested_arrays_once():
    import torch

    @dataclasses.dataclass
    class Entry:
        m: np.ndarray

    a = np.zeros(1000, np.float32)  # 4000 bytes

    class P:
        pass

    p = P()
    p.image, p.same, p.t = a, a, torch.zeros(10, dtype=torch.float64)  # a counted once; tensor 80 bytes
    p.maps = {"k": Entry(np.zeros(5, np.uint8)), "l": [np.zeros(3, np.int16)]}
    assert state_nbytes(p) == 4000 + 80 + 5 + 6


def test_byte_bound_evicts_least_recently_used():
    c = ImageStateCache(maxsize=10, max_bytes=2500)
    for k in "abc":
        c.get(k, lambda: np.zeros(1000, np.uint8))
    assert len(c) == 2 and c.nbytes == 2000  # 'a' evicted: 3000 > 2500
    c.get("b", lambda: pytest.fail("b is cached"))
    c.get("d", lambda: np.zeros(1000, np.uint8))  # evicts 'c' (b was used more recently)
    assert c.get("b", lambda: None) is not None and len(c) == 2
    big = c.get("e", lambda: np.zeros(5000, np.uint8))  # larger than the bound alone: returned, not kept
    assert big.nbytes == 5000 and "e" not in c._d and len(c) == 2
    info = c.info()
    assert info["max_bytes"] == 2500 and info["nbytes"] == 2000
    with pytest.raises(ValueError, match="cache_bytes"):
        ImageStateCache(4, -1)


def test_load_passes_the_bound(rng):
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    clicks = [iis.Click(30, 20, True)]
    ref = iis.load("random_walker").predict(image, clicks)
    tiny = iis.load("random_walker", cache_bytes=16)
    assert np.array_equal(tiny.predict(image, clicks).mask, ref.mask)  # nothing kept, same answer
    assert tiny.cache_info()["size"] == 0 and tiny.cache_info()["max_bytes"] == 16
    roomy = iis.load("random_walker", cache_bytes=64 << 20)
    roomy.predict(image, clicks)
    roomy.predict(image, clicks)
    info = roomy.cache_info()
    assert info["size"] == 1 and info["hits"] == 1 and 0 < info["nbytes"] <= 64 << 20
