"""The SimpleClick encoder (Liu et al., ICCV 2023): plain ViT with a click patch embedding + SimpleFPN.

Shared by SimpleClick, AdaptiveClick and CPlot (each puts its own decoder on top), so it lives here and not
in one method's folder. Architecture and variant table: docs/protocol.md §D.1-D.4.

Input sizes that are not multiples of the patch size are zero-padded at the bottom/right (after ImageNet
normalisation, click maps and previous mask padded with 0) to the next multiple; features cover the padded
canvas (:meth:`SimpleClickEncoder.padded_size`) and the decoders crop their upsampled logits back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import disk_maps, normalize_image
from .fpn import SimpleFPN
from .vit import PatchEmbed, VisionTransformer, default_global_blocks, load_mae_checkpoint

__all__ = ["VARIANTS", "ViTVariant", "SimpleClickEncoder", "build_simpleclick_encoder", "CLICK_RADIUS",
           "check_inputs"]

CLICK_RADIUS = 5  # disk radius in input pixels (protocol.md §D.1, norm_radius=5)


@dataclass(frozen=True)
class ViTVariant:
    patch: int
    dim: int
    depth: int
    heads: int
    out_dims: tuple[int, int, int, int]
    head_channels: int
    window: int | None = None  # tokens per window side; None -> 224 // patch (SimpleClick)
    global_blocks: tuple[int, ...] | None = None  # None -> default_global_blocks(depth)


# docs/protocol.md §D.4 table; "test" is ours: tiny, windows of 2 tokens so 64px inputs give 2x2 windows and
# global attention at blocks 2 and 4 (the depth/4 rule would make every block of depth 4 global)
VARIANTS: dict[str, ViTVariant] = {
    "test": ViTVariant(16, 32, 4, 2, (8, 16, 24, 32), 16, window=2, global_blocks=(1, 3)),
    # ours: patch 8 so a 96 px synthetic image still has 12x12 tokens; learns in minutes on a CPU (quickstart)
    "nano": ViTVariant(8, 64, 4, 4, (32, 48, 64, 96), 32, window=6, global_blocks=(1, 3)),
    "xtiny": ViTVariant(16, 160, 8, 4, (96, 192, 288, 384), 128),
    "base": ViTVariant(16, 768, 12, 12, (128, 256, 512, 1024), 256),
    "large": ViTVariant(16, 1024, 24, 16, (192, 384, 768, 1536), 256),
    "huge": ViTVariant(14, 1280, 32, 16, (240, 480, 960, 1920), 256),
}


def check_inputs(image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W) float in [0, 1], got shape {tuple(image.shape)}")
    B, _, H, W = image.shape
    if clicks.ndim != 3 or clicks.shape[0] != B or clicks.shape[2] != 3:
        raise ValueError(f"clicks must be (B={B}, N, 3) rows (x, y, label), got shape {tuple(clicks.shape)}")
    if prev_mask is not None and tuple(prev_mask.shape) != (B, 1, H, W):
        raise ValueError(f"prev_mask must be (B, 1, H, W) = {(B, 1, H, W)} or None, got {tuple(prev_mask.shape)}")


class SimpleClickEncoder(nn.Module):
    """Image + clicks (+ previous mask) -> 4-level pyramid.

    ``coords = cat(prev_mask, pos_disks, neg_disks)`` (radius 5, input resolution; 2 channels without a
    previous mask) goes through its own patch embedding, which is added to the image patch tokens; then
    the position embedding, the windowed ViT and the SimpleFPN (protocol.md §D.2-D.4).

    Attributes:
        embed_dim: ViT width D.
        out_dims: channels of the 4 pyramid levels.
        patch_size: patch side p.
        with_prev_mask: whether the previous mask is a coordinate channel.
    """

    def __init__(self, backbone: VisionTransformer, out_dims: list[int], with_prev_mask: bool = True):
        super().__init__()
        self.backbone = backbone
        self.embed_dim = backbone.embed_dim
        self.patch_size = backbone.patch_size
        self.out_dims = list(out_dims)
        self.with_prev_mask = with_prev_mask
        # default PyTorch init, no pre-training (protocol.md §D.3)
        self.patch_embed_coords = PatchEmbed(3 if with_prev_mask else 2, self.embed_dim, self.patch_size)
        self.neck = SimpleFPN(self.embed_dim, self.out_dims)

    def padded_size(self, H: int, W: int) -> tuple[int, int]:
        """Canvas size the features cover: ``(H, W)`` rounded up to multiples of the patch size."""
        p = self.patch_size
        return -(-H // p) * p, -(-W // p) * p

    def forward_tokens(self, image: torch.Tensor, clicks: torch.Tensor,
                       prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ViT output map before the FPN.

        Args:
            image: ``(B, 3, H, W)`` RGB in [0, 1].
            clicks: ``(B, N, 3)`` rows ``(x, y, label)`` in input pixels (label 1/0, -1 padding).
            prev_mask: ``(B, 1, H, W)`` previous probabilities; None means zeros. Ignored when
                ``with_prev_mask`` is False.

        Returns:
            ``(B, D, ceil(H/p), ceil(W/p))``.
        """
        check_inputs(image, clicks, prev_mask)
        B, _, H, W = image.shape
        maps = disk_maps(clicks, (H, W), radius=CLICK_RADIUS).to(image.dtype)
        if self.with_prev_mask:
            prev = image.new_zeros(B, 1, H, W) if prev_mask is None else prev_mask.to(image.dtype)
            maps = torch.cat([prev, maps], dim=1)
        x = normalize_image(image)
        Hp, Wp = self.padded_size(H, W)
        if (Hp, Wp) != (H, W):
            x = F.pad(x, (0, Wp - W, 0, Hp - H))
            maps = F.pad(maps, (0, Wp - W, 0, Hp - H))
        return self.backbone(x, extra_tokens=self.patch_embed_coords(maps))

    def forward(self, image: torch.Tensor, clicks: torch.Tensor,
                prev_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Pyramid ``[(B, out_dims[i], Hp/s, Wp/s)]`` for s = p/4, p/2, p, 2p (1/4..1/32 for p = 16).

        Arguments as in :meth:`forward_tokens`; ``(Hp, Wp) = padded_size(H, W)``.
        """
        return self.neck(self.forward_tokens(image, clicks, prev_mask))


def build_simpleclick_encoder(variant: str, *, img_size: int = 448, pretrained: str | None = None,
                              with_prev_mask: bool = True, out_dims: list[int] | None = None) -> SimpleClickEncoder:
    """Build a SimpleClick encoder.

    Args:
        variant: one of ``VARIANTS`` ("test", "xtiny", "base", "large", "huge").
        img_size: training crop; the stored position embedding is laid out for ``img_size / patch``.
        pretrained: local path of an MAE checkpoint (``checkpoint['model']``) for the ViT, or None.
        with_prev_mask: previous mask as a third coordinate channel.
        out_dims: override the FPN channels (e.g. AdaptiveClick's [256, 512, 1024, 2048] for ViT-B).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown SimpleClick variant {variant!r}; expected one of {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    if img_size % v.patch:
        raise ValueError(f"img_size={img_size} must be a multiple of the patch size {v.patch} of {variant!r}")
    window = v.window if v.window is not None else 224 // v.patch  # 14 (p16) / 16 (p14), §D.4
    gb = v.global_blocks if v.global_blocks is not None else default_global_blocks(v.depth)
    vit = VisionTransformer(img_size, v.patch, 3, v.dim, v.depth, v.heads, window_size=window, global_blocks=gb)
    if pretrained:
        load_mae_checkpoint(vit, pretrained)
    return SimpleClickEncoder(vit, list(out_dims or v.out_dims), with_prev_mask)
