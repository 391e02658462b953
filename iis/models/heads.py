"""Mask heads shared by the plain-ViT methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvReLU", "SegFormerHead"]


class ConvReLU(nn.Module):
    """mmcv ``ConvModule`` without norm: 1x1 conv (with bias) + ReLU; keeps the ``.conv`` key name."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class SegFormerHead(nn.Module):
    """SegFormer "all-MLP" decoder (SimpleClick ``SwinTransfomerSegHead``, ``upsample='x1'``).

    Per level a 1x1 ConvReLU to ``channels``, bilinear resize to the first level's size
    (``align_corners=False``), concat, 1x1 ConvReLU fusion, Dropout2d, 1x1 conv to ``num_classes``
    (protocol.md §D.4). Key names follow SimpleClick (``convs.{i}.conv``, ``fusion_conv.conv``,
    ``conv_seg``); the unused ``up_conv1/2`` modules are not built.

    Args:
        in_channels: channels of each input level (finest first).
        channels: hidden width (SimpleClick: 256 for B/L/H, 128 for xT).
        num_classes: output channels (1 logit).
        dropout: Dropout2d probability before ``conv_seg`` (mmseg ``dropout_ratio=0.1``).
    """

    def __init__(self, in_channels: list[int], channels: int, num_classes: int = 1, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.ModuleList(ConvReLU(c, channels) for c in in_channels)
        self.fusion_conv = ConvReLU(channels * len(in_channels), channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        # mmseg BaseDecodeHead.init_weights: normal std 0.01 (truncation at +-2 never bites at this std)
        nn.init.trunc_normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Features ``[(B, C_i, H_i, W_i)]`` (finest first) -> logits ``(B, num_classes, H_0, W_0)``."""
        if len(feats) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} feature levels, got {len(feats)}")
        size = feats[0].shape[-2:]
        outs = [F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size
                else conv(f) for conv, f in zip(self.convs, feats)]
        return self.conv_seg(self.dropout(self.fusion_conv(torch.cat(outs, dim=1))))
