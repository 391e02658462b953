"""RITM models: the authors' HRNet-OCR networks, and RITM as GPCIS re-implements it on its backbones.

RITM: Sofiiuk, Petrov, Konushin, "Reviving Iterative Training with Mask Guidance for Interactive
Segmentation" (code ``SamsungLabs/ritm_interactive_segmentation``).

**The authors' networks** (:class:`RITMHRNetModel`), one to one with their ``HRNetModel`` (every tensor
of their state dict has exactly one counterpart here; :mod:`iis.convert.ritm` maps them):

* click encoding (protocol.md §D.1-D.3): ``cat(prev_mask, pos disks, neg disks)`` (disks of radius 5,
  soft previous mask; without it for the non-iterative baseline) -> ``maps_transform`` = 1x1 conv (->16),
  LeakyReLU(0.2), 3x3 stride-2 conv (->64), ``|scale|`` (init 0.05) -> added to the HRNet stem after its
  first conv + BN + ReLU (``use_rgb_conv=False``);
* :class:`iis.models.hrnet.HRNet` (bilinear ``align_corners=True`` fuse upsampling), branches
  concatenated at 1/4, then :class:`iis.models.hrnet.OCRHead` with one object region: ``logits`` and the
  auxiliary soft-region logits ``aux_logits`` (RITM's ``instances_aux``), both upsampled to the input
  size (bilinear, ``align_corners=True``);
* initialisation: XavierGluon (gaussian, magnitude 2) over the whole model, then optional ImageNet
  HRNet weights (``pretrained=``), as the configs do.

| name | config (``models/``) | width | small | ocr_width | prev mask |
|---|---|---|---|---|---|
| ``ritm_hrnet18`` | ``iter_mask/hrnet18_cocolvis_itermask_3p.py`` (= ``..._sbd_...``) | 18 | no | 64 | yes |
| ``ritm_hrnet18s`` | ``iter_mask/hrnet18s_cocolvis_itermask_3p.py`` | 18 | yes | 48 | yes |
| ``ritm_hrnet32`` | ``iter_mask/hrnet32_cocolvis_itermask_3p.py`` | 32 | no | 128 | yes |
| ``ritm_hrnet18_baseline`` | ``noniterative_baselines/hrnet18_ocr64_cocolvis.py`` | 18 | no | 64 | no |
| ``ritm_hrnet_test`` | tiny, for tests | 4 | yes | 4 | yes |

**RITM as the GPCIS paper re-implements it** ("Interactive Segmentation as Gaussian Process
Classification", §5.3 and Table 2: RITM "reimplemented as our baseline under the same experimental
settings" on each backbone): :class:`SegmentorRITMModel` = a GPCIS segmentor of
:mod:`iis.models.segmentors` + a 1x1 classifier, so ``ritm_gpcis_<backbone>`` and ``gpcis_<backbone>``
differ only in the head. ``ritm_gpcis_resnet50`` (DeepLabV3+ ResNet-50) and ``ritm_gpcis_segformer_b0``;
the paper's HRNet18s-S2 backbone is FocalClick's, whose configs (``models/focalclick/hrnet18s_S2_*.py``)
build RITM's own HRNet18s with ``ocr_width=48``, so that row's RITM is ``ritm_hrnet18s`` itself.
``ritm_gpcis_test`` is tiny (``segmentor=`` picks ``deeplab_tiny`` / ``hrnet_tiny`` / ``segformer_tiny``).
"""

from __future__ import annotations

from typing import Any, TypedDict

import torch
from torch import nn

from iis.models.base import InteractiveModel
from iis.models.hrnet import HRNet, OCRHead, concat_branches, upsample_to
from iis.models.pretrained import BACKBONE_WEIGHTS
from iis.models.registry import register_model
from iis.models.segmentors import ScaleLayer, build_segmentor, encode_clicks, load_backbone_weights, xavier_gluon_

__all__ = ["RITMHRNetModel", "SegmentorRITMModel", "build_ritm_hrnet", "build_segmentor_ritm", "RITM_HRNETS",
           "RITMHRNetOptions", "RITMOptions", "RITMTestOptions"]


class RITMHRNetModel(InteractiveModel):
    """The authors' ``HRNetModel`` (HRNet + OCR, aux output, LeakyReLU, ``use_rgb_conv=False``).

    Args:
        width: HRNet width (18 / 32); small: HRNet-W18-Small-v2 depth.
        ocr_width: OCR key channels (pixel/context width ``2 * ocr_width``).
        with_prev_mask: feed the previous probability map (iterative "IT-M" models) or not (baseline).
        pretrained: optional local ImageNet HRNet weights for the backbone (HRNet-Image-Classification /
            timm key names).
        **hrnet: further :class:`iis.models.hrnet.HRNet` arguments (tiny test networks only).
    """

    default_protocol = "ritm"  # RITM `cvpr` zoom-in, flip, 0.49 (protocol.md §A.4)
    # learning-rate multipliers of the authors' HRNetModel (LRMult): backbone, aux and classifier x0.1;
    # the OCR pixel/attention/fuse layers and the click stem x1
    default_lr_mult = {"backbone": 0.1, "head.aux": 0.1, "head.classifier": 0.1}
    # OCR's f_pixel / f_object: the object-attention softmax runs over one object region, so every weight is
    # 1 and these never change the output (nor get a gradient); kept so the authors' checkpoints map 1:1
    parameters_without_effect = ("head.attention.query.", "head.attention.key.")

    def __init__(self, width: int = 18, ocr_width: int = 64, small: bool = False, with_prev_mask: bool = True,
                 pretrained: str | None = None, **hrnet: Any):
        super().__init__()
        if ocr_width <= 0:
            raise ValueError(f"ocr_width must be > 0 (every released RITM HRNet has an OCR head), got {ocr_width}")
        self.with_prev_mask = bool(with_prev_mask)
        self.backbone = HRNet(width, small, **hrnet)
        self.maps_transform = nn.Sequential(
            nn.Conv2d(3 if self.with_prev_mask else 2, 16, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(16, self.backbone.stem_channels, 3, stride=2, padding=1), ScaleLayer(0.05))
        self.head = OCRHead(self.backbone.out_channels, ocr_width)
        xavier_gluon_(self)
        if pretrained:
            load_backbone_weights(self.backbone, pretrained)

    def _forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None,
                 aux: bool) -> dict[str, torch.Tensor]:
        image_norm, coords = encode_clicks(image, clicks, prev_mask if self.with_prev_mask else None)
        if not self.with_prev_mask:
            coords = coords[:, 1:]  # disks only
        feats = concat_branches(self.backbone(image_norm, self.maps_transform(coords)))
        logits, aux_logits = self.head(feats)
        out = {"logits": upsample_to(logits, image.shape[-2:])}
        if aux:
            out["aux_logits"] = upsample_to(aux_logits, image.shape[-2:])
        return out

    def forward_train(self, image: torch.Tensor, clicks: torch.Tensor,
                      prev_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"logits", "aux_logits"}``, both ``(B, 1, H, W)`` at input resolution."""
        return self._forward(image, clicks, prev_mask, aux=True)

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` at input resolution (``prev_mask`` is ignored when ``with_prev_mask`` is False)."""
        return self._forward(image, clicks, prev_mask, aux=False)["logits"]


# registry name -> builder kwargs (the authors' configs; see the module docstring)
RITM_HRNETS: dict[str, dict[str, Any]] = {
    "ritm_hrnet18": dict(width=18, ocr_width=64),
    "ritm_hrnet18s": dict(width=18, ocr_width=48, small=True),
    "ritm_hrnet32": dict(width=32, ocr_width=128),
    "ritm_hrnet18_baseline": dict(width=18, ocr_width=64, with_prev_mask=False),
    "ritm_hrnet_test": dict(width=4, ocr_width=4, small=True, num_blocks=1, num_modules=(1, 1, 1), stem_channels=16,
                            stage1_planes=8),
}


def build_ritm_hrnet(name: str, **kwargs: Any) -> RITMHRNetModel:
    """:class:`RITMHRNetModel` with the configuration of ``name`` (a key of :data:`RITM_HRNETS`)."""
    return RITMHRNetModel(**{**RITM_HRNETS[name], **kwargs})


class RITMHRNetOptions(TypedDict, total=False):
    """The authors' HRNet models: their size is their name; ``with_prev_mask`` False builds the
    non-iterative variant (as ``ritm_hrnet18_baseline``). ``pretrained`` is passed separately."""

    with_prev_mask: bool


@register_model("ritm_hrnet18", options=RITMHRNetOptions, pretrained=BACKBONE_WEIGHTS["hrnet18"])
def ritm_hrnet18(**kwargs: Any) -> RITMHRNetModel:
    return build_ritm_hrnet("ritm_hrnet18", **kwargs)


@register_model("ritm_hrnet18s", options=RITMHRNetOptions, pretrained=BACKBONE_WEIGHTS["hrnet18s"])
def ritm_hrnet18s(**kwargs: Any) -> RITMHRNetModel:
    return build_ritm_hrnet("ritm_hrnet18s", **kwargs)


@register_model("ritm_hrnet32", options=RITMHRNetOptions, pretrained=BACKBONE_WEIGHTS["hrnet32"])
def ritm_hrnet32(**kwargs: Any) -> RITMHRNetModel:
    return build_ritm_hrnet("ritm_hrnet32", **kwargs)


@register_model("ritm_hrnet18_baseline", options=RITMHRNetOptions, pretrained=BACKBONE_WEIGHTS["hrnet18"])
def ritm_hrnet18_baseline(**kwargs: Any) -> RITMHRNetModel:
    return build_ritm_hrnet("ritm_hrnet18_baseline", **kwargs)


@register_model("ritm_hrnet_test", options=RITMHRNetOptions)
def ritm_hrnet_test(**kwargs: Any) -> RITMHRNetModel:
    return build_ritm_hrnet("ritm_hrnet_test", **kwargs)


class SegmentorRITMModel(InteractiveModel):
    """RITM on a GPCIS segmentor: features -> 1x1 conv -> logit, upsampled to the input size.

    Args:
        segmentor: module ``(image_norm, coords) -> (B, C, h, w)`` with attribute ``out_channels = C``.
    """

    default_protocol = "gpcis"  # evaluated like GPCIS, "under the same experimental settings" (§5.3)
    default_lr_mult = {"segmentor.maps_transform": 1.0, "segmentor": 0.1}  # as GPCIS trains its segmentor
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
        return {"logits": upsample_to(self.classifier(feats), image.shape[-2:]), "features": feats}

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` at input resolution."""
        return self.forward_train(image, clicks, prev_mask)["logits"]


def build_segmentor_ritm(segmentor: str, **kwargs: Any) -> SegmentorRITMModel:
    """RITM on a named segmentor of :data:`iis.models.segmentors.SEGMENTORS`."""
    return SegmentorRITMModel(build_segmentor(segmentor, **kwargs))


class RITMOptions(TypedDict, total=False):
    """Keyword options of the ``ritm_gpcis_*`` builders: the segmentor's feature width; ``pretrained``
    (backbone weights) is passed separately."""

    feat_dim: int


class RITMTestOptions(RITMOptions, total=False):
    """``ritm_gpcis_test`` also takes the tiny ``segmentor``: deeplab_tiny, hrnet_tiny or segformer_tiny."""

    segmentor: str


@register_model("ritm_gpcis_resnet50", options=RITMOptions, pretrained=BACKBONE_WEIGHTS["deeplab_r50"])
def ritm_gpcis_resnet50(**kwargs: Any) -> SegmentorRITMModel:
    return build_segmentor_ritm("deeplab_r50", **kwargs)


@register_model("ritm_gpcis_segformer_b0", options=RITMOptions, pretrained=BACKBONE_WEIGHTS["segformer_b0"])
def ritm_gpcis_segformer_b0(**kwargs: Any) -> SegmentorRITMModel:
    return build_segmentor_ritm("segformer_b0", **kwargs)


@register_model("ritm_gpcis_test", options=RITMTestOptions)
def ritm_gpcis_test(segmentor: str = "deeplab_tiny", **kwargs: Any) -> SegmentorRITMModel:
    return build_segmentor_ritm(segmentor, **kwargs)
