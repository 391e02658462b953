"""Fixtures of the server tests (helpers in iis_serve_helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def grabcut_samples(data_root):
    """Two real GrabCut instances (image, gt) from the shared data."""
    from iis.data import get_dataset

    ds = get_dataset("grabcut", data_root)
    return [ds[0], ds[1]]
