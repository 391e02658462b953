"""The demo's bundled sample image: a synthetic scene from :mod:`iis.data.synthetic` (generated, so it may
be shipped), with the point a first click on its target object should go to.

    python -m iis.serve.sample        # rewrites iis/serve/static/sample.png and sample.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["make_sample", "write_sample", "SEED", "SIZE"]

SEED, SIZE = 16, (300, 400)  # three overlapping shapes on a striped background (picked by eye)


def make_sample() -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """``(image uint8 (H, W, 3), target mask bool (H, W), (x, y))``: the click is the target's pixel
    farthest from its boundary (where the simulated first click of the protocol goes)."""
    from ..data.synthetic import SyntheticDataset

    s = SyntheticDataset(num_samples=1, size=SIZE, seed=SEED)[0]
    target = s.gt == 1
    dt = ndimage.distance_transform_edt(np.pad(target, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return s.image, target, (int(x), int(y))


def write_sample(folder: str | Path) -> tuple[Path, Path]:
    image, target, (x, y) = make_sample()
    folder = Path(folder)
    png, meta = folder / "sample.png", folder / "sample.json"
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    assert ok
    png.write_bytes(buf.tobytes())
    meta.write_text(json.dumps({"source": f"iis.data.synthetic.SyntheticDataset(num_samples=1, size={SIZE}, "
                                          f"seed={SEED})[0]",
                                "width": int(image.shape[1]), "height": int(image.shape[0]),
                                "target_click": [x, y], "target_area": int(target.sum())}, indent=1) + "\n")
    return png, meta


if __name__ == "__main__":
    for p in write_sample(Path(__file__).parent / "static"):
        print(f"wrote {p}")
    sys.exit(0)
