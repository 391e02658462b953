"""Fixtures shared by tests/api and tests/export (imported by their conftest.py): a real GrabCut instance
and `_test` models with saved (sharpened) weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import iis


def sharpened_weights(name: str, path: Path, gain: float = 300.0, seed: int = 0) -> Path:
    """Random `_test` weights whose last 1-channel conv is scaled, so that the untrained model's
    masks are partial and change with the clicks (zoom ROIs then come from real masks)."""
    torch.manual_seed(seed)
    m = iis.create_model(name).eval()
    last = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d) and mod.out_channels == 1][-1]
    with torch.no_grad():
        for n, p in m.named_parameters():  # RITM-style click stems start at |scale| 0.05: let clicks matter
            if n.startswith("maps_transform.") and n.endswith(".scale"):
                p.fill_(5.0)
        last.weight.mul_(gain)
        last.bias.zero_()
        # centre the logits (median over a random image) so that models whose features are all positive
        # (e.g. after a ReLU) do not predict one class everywhere
        g = torch.Generator().manual_seed(seed)
        image = torch.rand(1, 3, 96, 96, generator=g)
        clicks = torch.tensor([[[48.0, 48.0, 1.0]]])
        prev = torch.zeros(1, 1, 96, 96) if getattr(m, "with_prev_mask", True) else None
        last.bias.fill_(-float(m(image, clicks, prev).median()))
    torch.save(m.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def grabcut_full(data_root):
    from iis.data import get_dataset

    return get_dataset("grabcut", data_root)[0]


@pytest.fixture(scope="session")
def grabcut_sample(grabcut_full):
    """The first real GrabCut instance at a third of its size (160 x 107): fast on a CPU, still a real
    photo and a real object mask."""
    import cv2

    from iis.core.types import Sample

    h, w = grabcut_full.gt.shape
    size = (w // 3, h // 3)
    image = cv2.resize(grabcut_full.image, size, interpolation=cv2.INTER_AREA)
    ys, xs = np.arange(size[1]) * 3 + 1, np.arange(size[0]) * 3 + 1
    gt = np.ascontiguousarray(grabcut_full.gt[ys][:, xs])
    return Sample(image, gt, grabcut_full.id + "@1/3")


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def simpleclick_weights(weights_dir) -> Path:
    return sharpened_weights("simpleclick_vit_test", weights_dir / "simpleclick_vit_test.pth")


@pytest.fixture(scope="session")
def ritm_weights(weights_dir) -> Path:
    return sharpened_weights("ritm_hrnet_test", weights_dir / "ritm_hrnet_test.pth")


@pytest.fixture
def small_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((48, 64, 3), 40, np.uint8)
    img[12:36, 16:44] = 200
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
