"""SimpleFPN (ViTDet-style simple feature pyramid) from a single plain-ViT map, as in SimpleClick.

Layout and channel rules follow docs/protocol.md §D.4; the ``nn.Sequential`` indices match SimpleClick's
``neck.down_{4,8,16,32}.{idx}`` state-dict keys so a converter can copy them one to one.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SimpleFPN"]


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, c)  # GN with one group (protocol.md §D.4)


class SimpleFPN(nn.Module):
    """Four maps at strides 4, 8, 16, 32 from the stride-p ViT map ``(B, D, h, w)``.

    Args:
        in_dim: ViT width D.
        out_dims: channels of the four levels [1/4, 1/8, 1/16, 1/32] (relative to the patch stride).
    """

    def __init__(self, in_dim: int, out_dims: list[int] | tuple[int, ...]):
        super().__init__()
        if len(out_dims) != 4:
            raise ValueError(f"out_dims must have 4 entries, got {list(out_dims)}")
        self.out_dims = list(out_dims)
        o0, o1, o2, o3 = out_dims
        c4 = max(2 * o0, in_dim // 2)
        self.down_4 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c4, 2, stride=2), _gn(c4), nn.GELU(),
            nn.ConvTranspose2d(c4, c4 // 2, 2, stride=2), _gn(c4 // 2),
            nn.Conv2d(c4 // 2, o0, 1), _gn(o0), nn.GELU())
        c8 = max(o1, in_dim // 2)
        self.down_8 = nn.Sequential(
            nn.ConvTranspose2d(in_dim, c8, 2, stride=2), _gn(c8),
            nn.Conv2d(c8, o1, 1), _gn(o1), nn.GELU())
        self.down_16 = nn.Sequential(nn.Conv2d(in_dim, o2, 1), _gn(o2), nn.GELU())
        c32 = max(o3, 2 * in_dim)
        self.down_32 = nn.Sequential(
            nn.Conv2d(in_dim, c32, 2, stride=2), _gn(c32),
            nn.Conv2d(c32, o3, 1), _gn(o3), nn.GELU())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, D, h, w)`` -> ``[(B, o0, 4h, 4w), (B, o1, 2h, 2w), (B, o2, h, w), (B, o3, h/2, w/2)]``.

        The 1/32 level floors odd sizes (stride-2 conv).
        """
        return [self.down_4(x), self.down_8(x), self.down_16(x), self.down_32(x)]
