"""SimpleClick (Liu et al., ICCV 2023): plain ViT + SimpleFPN + SegFormer head, early click fusion.

Architecture and variant table: docs/protocol.md §D.1-D.4. The encoder (:class:`SimpleClickEncoder`,
:func:`build_simpleclick_encoder`) is shared with AdaptiveClick and CPlot and lives in
:mod:`iis.models.simpleclick_encoder`.

Input sizes that are not multiples of the patch size are zero-padded at the bottom/right (after ImageNet
normalisation, click maps and previous mask padded with 0) to the next multiple; features cover the
padded canvas and :class:`SimpleClickModel` crops its upsampled logits back to the input size.
SimpleClick itself only sees multiples (448/672 squash), where this is a no-op.
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F

from iis.models.base import InteractiveModel
from iis.models.heads import SegFormerHead
from iis.models.pretrained import MAE_WEIGHTS
from iis.models.registry import register_model
# the encoder is shared with AdaptiveClick and CPlot; re-exported here for existing imports
from iis.models.simpleclick_encoder import (CLICK_RADIUS, VARIANTS, SimpleClickEncoder, ViTVariant,
                                            build_simpleclick_encoder)

__all__ = ["VARIANTS", "ViTVariant", "SimpleClickEncoder", "SimpleClickModel", "build_simpleclick_encoder",
           "build_simpleclick", "CLICK_RADIUS", "SimpleClickOptions"]

class SimpleClickOptions(TypedDict, total=False):
    """Keyword options of every ``simpleclick_*`` builder (defaults: :func:`build_simpleclick` and the size's
    builder); ``pretrained`` is passed separately.

    Attributes:
        img_size: training crop; the stored position embedding is laid out for ``img_size / patch``.
        with_prev_mask: the previous mask is a third coordinate channel.
        head_dropout: dropout of the SegFormer head.
    """

    img_size: int
    with_prev_mask: bool
    head_dropout: float


class SimpleClickModel(InteractiveModel):
    """Encoder + SegFormer head -> one logit at 1/4, upsampled (bilinear, ``align_corners=True``).

    Follows :mod:`iis.models.base`: ``model(image, clicks, prev_mask) -> logits (B, 1, H, W)``.
    """

    default_protocol = "simpleclick"  # 448 squash, flip, 0.49 (protocol.md §A.4)

    def __init__(self, encoder: SimpleClickEncoder, head_channels: int, head_dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.with_prev_mask = encoder.with_prev_mask
        self.head = SegFormerHead(encoder.out_dims, head_channels, num_classes=1, dropout=head_dropout)

    def forward(self, image: torch.Tensor, clicks: torch.Tensor,
                prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        H, W = image.shape[-2:]
        logits = self.head(self.encoder(image, clicks, prev_mask))
        # ISModel upsampling (protocol.md §D.2), to the padded canvas, then crop the padding away
        logits = F.interpolate(logits, size=self.encoder.padded_size(H, W), mode="bilinear", align_corners=True)
        return logits[..., :H, :W]


def build_simpleclick(variant: str, *, img_size: int = 448, pretrained: str | None = None,
                      with_prev_mask: bool = True, head_dropout: float = 0.1) -> SimpleClickModel:
    """SimpleClick model of a variant; ``pretrained`` is an MAE checkpoint path for the ViT."""
    enc = build_simpleclick_encoder(variant, img_size=img_size, pretrained=pretrained, with_prev_mask=with_prev_mask)
    return SimpleClickModel(enc, VARIANTS[variant].head_channels, head_dropout)


@register_model("simpleclick_vit_test", options=SimpleClickOptions)
def simpleclick_vit_test(img_size: int = 64, **kwargs) -> SimpleClickModel:
    return build_simpleclick("test", img_size=img_size, **kwargs)


@register_model("simpleclick_vit_nano", options=SimpleClickOptions)
def simpleclick_vit_nano(img_size: int = 96, **kwargs) -> SimpleClickModel:
    return build_simpleclick("nano", img_size=img_size, **kwargs)


@register_model("simpleclick_vit_xtiny", options=SimpleClickOptions)  # no pre-training ([SC] xtiny config)
def simpleclick_vit_xtiny(**kwargs) -> SimpleClickModel:
    return build_simpleclick("xtiny", **kwargs)


@register_model("simpleclick_vit_base", options=SimpleClickOptions, pretrained=MAE_WEIGHTS["base"])
def simpleclick_vit_base(**kwargs) -> SimpleClickModel:
    return build_simpleclick("base", **kwargs)


@register_model("simpleclick_vit_large", options=SimpleClickOptions, pretrained=MAE_WEIGHTS["large"])
def simpleclick_vit_large(**kwargs) -> SimpleClickModel:
    return build_simpleclick("large", **kwargs)


@register_model("simpleclick_vit_huge", options=SimpleClickOptions, pretrained=MAE_WEIGHTS["huge"])
def simpleclick_vit_huge(**kwargs) -> SimpleClickModel:
    return build_simpleclick("huge", **kwargs)
