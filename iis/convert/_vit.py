"""Shared by the plain-ViT families (SimpleClick, AdaptiveClick): ViT size from shapes, ``pos_embed``."""

from __future__ import annotations

import math
from typing import Mapping

import torch

from .base import ConversionError
from ._mapping import count_indexed

__all__ = ["RELEASED_VITS", "vit_size", "drop_cls_row", "VIT_UNUSED"]

# the sizes the authors released (SimpleClick configs plainvit_{xtiny,base,large,huge}448_*), as
# (iis variant) -> (patch, embed dim, depth); docs/protocol.md §D.4 and docs/official-checkpoints.md
RELEASED_VITS = {"xtiny": (16, 160, 8), "base": (16, 768, 12), "large": (16, 1024, 24), "huge": (14, 1280, 32)}
_LABEL = {"xtiny": "ViT-xTiny", "base": "ViT-B", "large": "ViT-L", "huge": "ViT-H"}

# MAE/timm tensors the interactive forward never reads (docs/official-checkpoints.md, "Unused in the
# forward pass"; checked there by gradients)
VIT_UNUSED = {
    r"backbone\.cls_token": "class token: the interactive forward uses patch tokens only",
    r"backbone\.fc_norm\.(weight|bias)": "timm classification norm: never called by the interactive forward",
    r"backbone\.head\.(weight|bias)": "ImageNet 1000-class classifier of the timm ViT: never called",
}


def vit_size(shapes: Mapping[str, tuple[int, ...]], prefix: str, title: str,
             allowed: tuple[str, ...] = tuple(RELEASED_VITS)) -> tuple[str, int, bool]:
    """``(iis variant, img_size, with_prev_mask)`` of the ViT under ``prefix`` (e.g. ``"backbone."``).

    The patch embedding gives dim D and patch p, the block count the depth, ``pos_embed`` the token grid
    (``1 + s*s`` rows with the class-token row, as the authors store it) and so the training size s*p;
    the coordinate patch embedding's input channels say whether the previous mask is an input (3) or not (2).
    """
    pe = shapes.get(prefix + "patch_embed.proj.weight")
    pos = shapes.get(prefix + "pos_embed")
    coords = shapes.get("patch_embed_coords.proj.weight")
    if pe is None or len(pe) != 4 or pos is None or len(pos) != 3 or coords is None or len(coords) != 4:
        raise ConversionError(f"{title}: the ViT tensors {prefix}patch_embed.proj.weight, {prefix}pos_embed and "
                              "patch_embed_coords.proj.weight are missing or not 4-/3-dimensional")
    dim, patch, depth = pe[0], pe[2], count_indexed(shapes, prefix + "blocks.")
    variant = next((v for v, (p, d, n) in RELEASED_VITS.items() if (p, d, n) == (patch, dim, depth) and v in allowed),
                   None)
    if variant is None:
        sizes = ", ".join(f"{_LABEL[v]} {d}/{n}/{p}" for v, (p, d, n) in RELEASED_VITS.items() if v in allowed)
        raise ConversionError(f"{title}: a ViT with embed dim {dim}, depth {depth}, patch {patch} is not a released "
                              f"{title} size (dim/depth/patch: {sizes})")
    n = pos[1]
    s = math.isqrt(n - 1)
    if s * s != n - 1:
        s = math.isqrt(n)
        if s * s != n:
            raise ConversionError(f"{title}: {prefix}pos_embed has {n} rows; expected 1 + s*s (class-token row + "
                                  "an s x s grid)")
    if coords[1] not in (2, 3):
        raise ConversionError(f"{title}: patch_embed_coords.proj.weight has {coords[1]} input channels; expected 3 "
                              "(previous mask + 2 click maps) or 2 (click maps only)")
    return variant, s * patch, coords[1] == 3


def drop_cls_row(t: torch.Tensor, want: tuple[int, ...]) -> tuple[torch.Tensor, str]:
    """``pos_embed`` ``(1, 1 + s*s, D)`` -> ``(1, s*s, D)``: the authors' forward adds ``pos_embed[:, 1:]``."""
    if t.ndim == 3 and t.shape[1] == want[1] + 1 and t.shape[2] == want[2]:
        return t[:, 1:].clone(), "class-token row 0 removed (the authors' forward adds pos_embed[:, 1:])"
    raise ValueError(f"cannot turn {list(t.shape)} into {list(want)} by removing the class-token row")
