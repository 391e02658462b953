"""The contract every trainable interactive model follows, and the click encodings they share.

``model(image, clicks, prev_mask) -> logits``:

* ``image``: ``(B, 3, H, W)`` float RGB in [0, 1] (models normalise internally, ImageNet mean/std);
* ``clicks``: ``(B, N, 3)`` float rows ``(x, y, label)`` in pixels of this input, label 1 positive,
  0 negative, -1 padding (see :mod:`iis.core.types`);
* ``prev_mask``: ``(B, 1, H, W)`` previous probability map in [0, 1], or None when the model has
  ``with_prev_mask = False``;
* returns logits ``(B, 1, H, W)`` at input resolution.

Models that need more than logits for their loss (deep supervision, auxiliary heads, GP terms)
additionally implement ``forward_train(image, clicks, prev_mask) -> dict`` whose ``"logits"`` entry
equals what ``forward`` returns; the method's LightningModule consumes the rest.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InteractiveModel", "disk_maps", "normalize_image", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def disk_maps(clicks: torch.Tensor, size: tuple[int, int], radius: float = 5.0) -> torch.Tensor:
    """Binary disk maps ``(B, 2, H, W)`` (positive, negative) of RITM's ``DistMaps(use_disks=True)``.

    A pixel (r, c) of the integer grid is 1 when ``(r - y)^2 + (c - x)^2 <= radius^2`` for some click
    of that sign (protocol.md §D.1, norm_radius 5). Padding rows (label < 0) are ignored.
    """
    B, N, _ = clicks.shape
    H, W = size
    dev = clicks.device
    ys = torch.arange(H, device=dev, dtype=torch.float32).view(1, 1, H, 1)
    xs = torch.arange(W, device=dev, dtype=torch.float32).view(1, 1, 1, W)
    out = torch.zeros(B, 2, H, W, device=dev)
    if N == 0:
        return out
    cx = clicks[..., 0].float().view(B, N, 1, 1)
    cy = clicks[..., 1].float().view(B, N, 1, 1)
    lab = clicks[..., 2]
    # separable: d2 = dy^2 + dx^2, computed per click and reduced with a min over clicks
    d2 = (ys - cy) ** 2 + (xs - cx) ** 2  # (B, N, H, W)
    inf = torch.tensor(float("inf"), device=dev)
    for ch, value in ((0, 1), (1, 0)):
        sel = (lab == value).view(B, N, 1, 1)
        m = torch.where(sel, d2, inf).amin(1)
        out[:, ch] = (m <= radius * radius).float()
    return out


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


class InteractiveModel(nn.Module):
    """Optional base class: documents the contract; subclasses implement ``forward``."""

    with_prev_mask: bool = True
    # Batched evaluation pads the click tensors of several instances to one length (label -1 rows);
    # True = a sample's logits are bit-identical with or without such padding rows (checked for every
    # family by tests/eval/test_batched.py), so instances with different click counts share a forward.
    click_padding_exact: bool = True

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward_train(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> dict:
        return {"logits": self(image, clicks, prev_mask)}
