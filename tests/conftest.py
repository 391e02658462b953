"""Shared fixtures. Real benchmarks are found through $IIS_DATA_ROOT or ../shared/data (skip if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    for cand in (os.environ.get("IIS_DATA_ROOT"), ROOT.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding GrabCut/, Berkeley/, ssTEM/ in their standard layouts; skips the test if absent."""
    root = _data_root()
    if root is None:
        pytest.skip("real benchmarks not found (set IIS_DATA_ROOT or place them in ../shared/data)")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for the module: tiny tensors on a shared 2-core machine run far faster
    without OpenMP teams spinning up (and oversubscribing the other jobs' core)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
