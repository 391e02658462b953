"""The pretrained weights each paper recipe starts from, in words (what to download, under which name).

``register_model(..., pretrained=...)`` takes these; ``iis-train`` names them when a recipe is started
without ``model.init_args.pretrained`` (a local file, or ``none`` to train from scratch on purpose). The
builders load the files: MAE checkpoints through :func:`iis.models.vit.load_mae_checkpoint`, backbone
state dicts through :func:`iis.models.segmentors.load_backbone_weights`.
"""

from __future__ import annotations

__all__ = ["MAE_WEIGHTS", "BACKBONE_WEIGHTS"]

# SimpleClick and the methods on its encoder start from MAE (protocol.md §D.3: `checkpoint['model']`)
MAE_WEIGHTS = {
    "base": "MAE ViT-B/16 weights (mae_pretrain_vit_base.pth, facebookresearch/mae)",
    "large": "MAE ViT-L/16 weights (mae_pretrain_vit_large.pth, facebookresearch/mae)",
    "huge": "MAE ViT-H/14 weights (mae_pretrain_vit_huge.pth, facebookresearch/mae)",
}

# ImageNet backbones of the GPCIS/RITM segmentors (names of iis.models.segmentors.SEGMENTORS); the ResNet is
# docs/methods.md §3.2 (gluon_resnet50_v1s-1762acc0.pth), the others follow RITM's practice of ImageNet backbones
BACKBONE_WEIGHTS = {
    "deeplab_r50": "ImageNet ResNet-50 v1s backbone weights (timm resnet50s.gluon_in1k; upstream "
                   "gluon_resnet50_v1s-1762acc0.pth)",
    "hrnet18s": "ImageNet HRNet-W18-small-v2 backbone weights (timm hrnet_w18_small_v2)",
    "hrnet18": "ImageNet HRNet-W18 backbone weights (timm hrnet_w18)",
    "hrnet32": "ImageNet HRNet-W32 backbone weights (timm hrnet_w32)",
    "segformer_b0": "ImageNet MiT-b0 encoder weights (transformers SegformerModel, nvidia/mit-b0)",
}
