"""RITM-style baselines: backbone segmentor with click fusion + plain 1x1 classifier, trained with NFL.

RITM (Sofiiuk et al., "Reviving Iterative Training with Mask Guidance for Interactive Segmentation",
2021) as reimplemented by GPCIS "under the same experimental settings" (seeds/001 §5.3, Table 2): the
segmentors are those of GPCIS (:mod:`iis.models.segmentors`), so ``ritm_<backbone>`` and
``gpcis_<backbone>`` differ only in the head. Input encoding: protocol.md §D.1-D.3 (soft previous mask +
radius-5 disks through a conv stem with |scale| 0.05, added after the first stem block). Output logits
are upsampled to the input size (bilinear, ``align_corners=True``, protocol.md §D.2). Loss: NFL
(alpha 0.5, gamma 2; protocol.md §D.5) via ``iis.models.losses.build_loss("nfl")``.

Differences from upstream RITM: the HRNet models have no OCR head (and so no 0.4-weighted auxiliary
BCE); the DeepLab model ends in a 1x1 classifier on the 48-d features instead of RITM's ``SepConvHead``.

Registered: ``ritm_resnet50``, ``ritm_hrnet18s``, ``ritm_hrnet18``, ``ritm_segformer_b0`` and
``ritm_test`` (tiny; ``segmentor=`` picks ``deeplab_tiny`` / ``hrnet_tiny`` / ``segformer_tiny``).
Builder kwargs go to the segmentor (``pretrained=path``, ``feat_dim``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.base import InteractiveModel
from iis.models.registry import register_model
from iis.models.segmentors import build_segmentor, encode_clicks, xavier_gluon_

__all__ = ["RITMModel", "build_ritm"]


class RITMModel(InteractiveModel):
    """Segmentor features -> 1x1 conv -> logit, upsampled to the input size.

    Args:
        segmentor: module ``(image_norm, coords) -> (B, C, h, w)`` with attribute ``out_channels = C``.
    """

    default_protocol = "ritm"  # RITM `cvpr` zoom-in, flip, 0.49 (protocol.md §A.4)

    with_prev_mask = True

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor
        self.classifier = nn.Conv2d(segmentor.out_channels, 1, 1)
        xavier_gluon_(self.classifier)

    def forward_train(self, image: torch.Tensor, clicks: torch.Tensor,
                      prev_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"logits": (B, 1, H, W), "features": (B, C, h, w)}``."""
        image_norm, coords = encode_clicks(image, clicks, prev_mask)
        feats = self.segmentor(image_norm, coords)
        logits = F.interpolate(self.classifier(feats), size=image.shape[-2:], mode="bilinear", align_corners=True)
        return {"logits": logits, "features": feats}

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` at input resolution."""
        return self.forward_train(image, clicks, prev_mask)["logits"]


def build_ritm(segmentor: str, **kwargs) -> RITMModel:
    """RITM-style model on a named segmentor of :data:`iis.models.segmentors.SEGMENTORS`."""
    return RITMModel(build_segmentor(segmentor, **kwargs))


@register_model("ritm_resnet50")
def ritm_resnet50(**kwargs) -> RITMModel:
    return build_ritm("deeplab_r50", **kwargs)


@register_model("ritm_hrnet18s")
def ritm_hrnet18s(**kwargs) -> RITMModel:
    return build_ritm("hrnet18s", **kwargs)


@register_model("ritm_hrnet18")
def ritm_hrnet18(**kwargs) -> RITMModel:
    return build_ritm("hrnet18", **kwargs)


@register_model("ritm_segformer_b0")
def ritm_segformer_b0(**kwargs) -> RITMModel:
    return build_ritm("segformer_b0", **kwargs)


@register_model("ritm_test")
def ritm_test(segmentor: str = "deeplab_tiny", **kwargs) -> RITMModel:
    return build_ritm(segmentor, **kwargs)
