"""Backbone segmentors with RITM-style click fusion, shared by GPCIS and the RITM-style baselines.

A segmentor maps ``(image_norm (B,3,H,W), coords (B,3,H,W))`` to a feature map ``(B, out_channels, H/s,
W/s)`` (``s = stride``, 4 here). ``coords = cat(prev_mask, pos_disks, neg_disks)`` (protocol.md §D.1-D.2:
soft previous mask, binary disks of radius 5 at input resolution). The coordinate maps go through a small
conv stem (``maps_transform``, ending in a learnable |scale| initialised to 0.05) whose output is *added*
to the backbone activations after the first stem block (protocol.md §D.3):

* ``deeplab_r50`` (methods.md §3.2): DeepLabV3+ on ResNet-50 v1s (deep stem 3->64->64->128, output stride
  8 by dilating layer3/layer4 by 2/4), ASPP rates 12/24/36 at 256 channels with image pooling, layer1 skip
  projected to 32, two separable 3x3 convs at 256, 1x1 conv to 48 features. Click stem: 3x3 s2 (3->16),
  LeakyReLU(0.2), 3x3 (16->128), added after the stem's conv1+bn1+relu (1/2 res) before the max-pool.
  Upstream's stem makes 256 channels and crops them to 128 by a negative pad; we build 128 directly (the
  dropped 128 channels never reach the output; 18k fewer parameters).
* ``hrnet18s``: HRNet-W18-Small-v2 (:class:`iis.models.hrnet.HRNet` with ``small=True``: stage 1 with 2
  bottlenecks, stages 2/3/4 with 1/3/2 modules of 2 blocks, widths 18/36/72/144; RITM's fuse upsampling)
  without OCR; the four branches are upsampled to 1/4 and concatenated (270 ch), then a 1x1 conv + BN +
  ReLU and a 1x1 conv to ``feat_dim``. Click stem (RITM HRNet): 1x1 (3->16), LeakyReLU, 3x3 s2 (16->64),
  added after conv1+bn1+relu. (The authors' RITM HRNets, with OCR, are in :mod:`iis.methods.ritm`.)
* ``segformer_b0``: transformers ``SegformerModel`` with MiT-b0 sizes and its all-MLP decode head (256)
  whose classifier is a 1x1 conv to ``feat_dim``. Click stem (FocalClick): 3x3 s2 (3->16), LeakyReLU,
  3x3 s2 (16->32), added to the stage-1 patch embedding before its transformer blocks.
* ``*_tiny``: the same architectures, tiny, for fast CPU tests.

Weights are random unless ``pretrained`` is a local file (timm / transformers key names of the backbone
module, optionally wrapped in ``state_dict``/``model`` and prefixed by ``module.``/``backbone.``); nothing
is downloaded. Random init is RITM's XavierGluon (gaussian, magnitude 2) for conv nets, as
``models/gp_sbd_resnet50.py`` applies it to the whole model; the transformer encoder keeps its own init.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.base import disk_maps, normalize_image
from iis.models.hrnet import HRNet, concat_branches

__all__ = ["ScaleLayer", "encode_clicks", "load_backbone_weights", "DeepLabV3PlusSegmentor",
           "HRNetSegmentor", "SegFormerSegmentor", "SEGMENTORS", "build_segmentor", "xavier_gluon_"]

CLICK_RADIUS = 5  # docs/protocol.md §D.1, norm_radius=5


def xavier_gluon_(module: nn.Module, magnitude: float = 2.0) -> None:
    """RITM ``XavierGluon(rnd_type='gaussian', factor_type='avg', magnitude=2)``; norms -> (1, 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            nn.init.normal_(m.weight, 0.0, math.sqrt(magnitude / ((fan_in + fan_out) / 2.0)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ScaleLayer(nn.Module):
    """``x * |scale|`` with a learnable scalar (RITM ``ScaleLayer``, init 0.05)."""

    def __init__(self, init_value: float = 0.05):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.abs()


def encode_clicks(image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None,
                  radius: float = CLICK_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the model inputs and build ``(normalize_image(image), cat(prev_mask, pos, neg))``.

    Args:
        image: ``(B, 3, H, W)`` float RGB in [0, 1].
        clicks: ``(B, N, 3)`` rows ``(x, y, label)``, label 1 / 0 / -1 (padding).
        prev_mask: ``(B, 1, H, W)`` previous probability, or None (zeros, i.e. the first click).

    Returns:
        ``image_norm (B, 3, H, W)`` and ``coords (B, 3, H, W)``.
    """
    if image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"image must be a float (B, 3, H, W) tensor in [0, 1], got {tuple(image.shape)} {image.dtype}")
    B, _, H, W = image.shape
    if clicks.ndim != 3 or clicks.shape[0] != B or clicks.shape[2] != 3:
        raise ValueError(f"clicks must be (B={B}, N, 3) rows (x, y, label), got shape {tuple(clicks.shape)}")
    if prev_mask is None:
        prev_mask = image.new_zeros(B, 1, H, W)
    elif tuple(prev_mask.shape) != (B, 1, H, W):
        raise ValueError(f"prev_mask must be (B, 1, H, W) = {(B, 1, H, W)} or None, got {tuple(prev_mask.shape)}")
    maps = disk_maps(clicks, (H, W), radius=radius).to(image.dtype)
    return normalize_image(image), torch.cat([prev_mask.to(image.dtype), maps], 1)


def load_backbone_weights(module: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a local state dict into ``module`` (non-strict); returns ``(missing, unexpected)`` keys.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no key of the file matches the module (wrong format or model).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path))
    else:
        from iis.core.safe_load import safe_load  # never runs code from the file

        sd = safe_load(path, what="pretrained weights")
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    own = module.state_dict()
    for prefix in ("module.", "backbone.", "segformer.", "encoder."):
        if not any(k in own for k in sd) and sum(k.startswith(prefix) for k in sd) > len(sd) // 2:
            sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    matched = [k for k in sd if k in own and own[k].shape == sd[k].shape]
    if not matched:
        raise ValueError(f"{path}: no parameter matches {type(module).__name__} (first keys: {list(sd)[:3]})")
    result = module.load_state_dict({k: sd[k] for k in matched}, strict=False)
    return list(result.missing_keys), [k for k in sd if k not in matched]


def _sep_conv(cin: int, cout: int) -> nn.Sequential:
    """RITM ``SeparableConv2d(dw_kernel=3, activation='relu')``: depthwise 3x3, pointwise 1x1, BN, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _ASPP(nn.Module):
    """DeepLabV3 ASPP (RITM ``_ASPP``): 1x1, three dilated 3x3, image pooling; 1x1 projection (no dropout)."""

    def __init__(self, cin: int, ch: int, rates: tuple[int, int, int] = (12, 24, 36), dropout: float = 0.0):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, ch)] + [_conv_bn_relu(cin, ch, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(cin, ch))
        self.project = nn.Sequential(_conv_bn_relu(5 * ch, ch), nn.Dropout(dropout) if dropout > 0 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class DeepLabV3PlusSegmentor(nn.Module):
    """DeepLabV3+ on a dilated (output stride 8) deep-stem ResNet, click fusion after the first stem block.

    Args:
        layers: blocks per ResNet stage ((3, 4, 6, 3) = ResNet-50).
        bottleneck: Bottleneck (True) or BasicBlock stages.
        channels: stage widths; stem_width: deep-stem width (v1s: 64 -> stem output 128).
        aspp_ch: ASPP / head width (256); skip_ch: projected layer1 skip (32); feat_dim: output features.
        pretrained: optional local path to timm ResNet weights (``resnet50s`` key names).
    """

    stride = 4

    def __init__(self, layers=(3, 4, 6, 3), bottleneck: bool = True, channels=(64, 128, 256, 512), stem_width: int = 64,
                 aspp_ch: int = 256, skip_ch: int = 32, feat_dim: int = 48, rates=(12, 24, 36),
                 pretrained: str | None = None):
        super().__init__()
        from timm.models.resnet import BasicBlock, Bottleneck, ResNet
        self.backbone = ResNet(Bottleneck if bottleneck else BasicBlock, tuple(layers), channels=tuple(channels),
                               stem_width=stem_width, stem_type="deep", output_stride=8, num_classes=0, global_pool="")
        info = self.backbone.feature_info
        stem_ch, c1_ch, c4_ch = info[0]["num_chs"], info[1]["num_chs"], info[-1]["num_chs"]
        self.maps_transform = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                            nn.Conv2d(16, stem_ch, 3, padding=1), ScaleLayer(0.05))
        self.aspp = _ASPP(c4_ch, aspp_ch, tuple(rates))
        self.skip_project = _conv_bn_relu(c1_ch, skip_ch)
        self.head = nn.Sequential(_sep_conv(aspp_ch + skip_ch, aspp_ch), _sep_conv(aspp_ch, aspp_ch),
                                  nn.Conv2d(aspp_ch, feat_dim, 1))
        self.out_channels = feat_dim
        xavier_gluon_(self)
        if pretrained:
            load_backbone_weights(self.backbone, pretrained)

    def forward(self, image_norm: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        x = bb.act1(bb.bn1(bb.conv1(image_norm))) + self.maps_transform(coords)
        c1 = bb.layer1(bb.maxpool(x))
        c4 = bb.layer4(bb.layer3(bb.layer2(c1)))
        c1 = self.skip_project(c1)
        x = F.interpolate(self.aspp(c4), size=c1.shape[-2:], mode="bilinear", align_corners=True)
        return self.head(torch.cat([x, c1], 1))


class HRNetSegmentor(nn.Module):
    """HRNet (no OCR) with RITM's click fusion and a 1x1 head, features at 1/4.

    Args:
        width, small, **hrnet: :class:`iis.models.hrnet.HRNet` arguments (``width=18, small=True`` =
            HRNet-W18-Small-v2; tiny variants override ``num_blocks``, ``num_modules``, ...).
        feat_dim: output features.
        pretrained: optional local path to HRNet ImageNet weights (HRNet-Image-Classification or timm
            key names, which are the same).
    """

    stride = 4

    def __init__(self, width: int = 18, small: bool = True, feat_dim: int = 48, pretrained: str | None = None,
                 **hrnet):
        super().__init__()
        self.backbone = HRNet(width, small, **hrnet)
        ch = self.backbone.out_channels
        self.maps_transform = nn.Sequential(nn.Conv2d(3, 16, 1), nn.LeakyReLU(0.2),
                                            nn.Conv2d(16, self.backbone.stem_channels, 3, stride=2, padding=1),
                                            ScaleLayer(0.05))
        self.head = nn.Sequential(nn.Conv2d(ch, ch, 1), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
                                  nn.Conv2d(ch, feat_dim, 1))
        self.out_channels = feat_dim
        xavier_gluon_(self)
        if pretrained:
            load_backbone_weights(self.backbone, pretrained)

    def forward(self, image_norm: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.head(concat_branches(self.backbone(image_norm, self.maps_transform(coords))))


class SegFormerSegmentor(nn.Module):
    """transformers SegFormer (MiT encoder + all-MLP decoder) with FocalClick's click fusion, features at 1/4.

    Args:
        feat_dim: output features (decoder classifier width).
        pretrained: optional local path to ``SegformerModel`` weights (transformers key names).
        **config: ``SegformerConfig`` overrides (defaults = MiT-b0: hidden 32/64/160/256, depths 2/2/2/2,
            heads 1/2/5/8, sr 8/4/2/1, decoder 256).
    """

    stride = 4

    def __init__(self, feat_dim: int = 96, pretrained: str | None = None, **config):
        super().__init__()
        from transformers import SegformerConfig, SegformerModel
        from transformers.models.segformer.modeling_segformer import SegformerDecodeHead
        cfg = SegformerConfig(num_labels=feat_dim, **config)
        self.encoder = SegformerModel(cfg)
        self.decoder = SegformerDecodeHead(cfg)
        self.maps_transform = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                            nn.Conv2d(16, cfg.hidden_sizes[0], 3, stride=2, padding=1),
                                            ScaleLayer(0.05))
        self.out_channels = feat_dim
        xavier_gluon_(self.decoder)
        xavier_gluon_(self.maps_transform)
        if pretrained:
            load_backbone_weights(self.encoder, pretrained)

    def forward(self, image_norm: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        h, outs = image_norm, []
        for i, stage in enumerate(self.encoder.stages):
            h, H, W = stage.patch_embeddings(h)  # (B, H*W, C) after LayerNorm
            if i == 0:
                h = h + self.maps_transform(coords).flatten(2).transpose(1, 2)
            for block in stage.blocks:
                h = block(h, H, W)
            h = stage.layer_norm(h).reshape(h.shape[0], H, W, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(h)
        return self.decoder(outs)


# tiny HRNet for fast tests: widths 4/8/16/32, one block and one module per stage
_TINY_HRNET = dict(width=4, small=True, num_blocks=1, num_modules=(1, 1, 1), stem_channels=16, stage1_planes=8)

# name -> (class, default kwargs); builder kwargs override these
SEGMENTORS: dict[str, tuple[type, dict]] = {
    "deeplab_r50": (DeepLabV3PlusSegmentor, {}),
    "hrnet18s": (HRNetSegmentor, {"width": 18, "small": True}),
    "segformer_b0": (SegFormerSegmentor, {}),
    "deeplab_tiny": (DeepLabV3PlusSegmentor, dict(layers=(1, 1, 1, 1), bottleneck=False, channels=(8, 16, 16, 16),
                                                  stem_width=8, aspp_ch=16, skip_ch=8, feat_dim=8)),
    "hrnet_tiny": (HRNetSegmentor, dict(feat_dim=8, **_TINY_HRNET)),
    "segformer_tiny": (SegFormerSegmentor, dict(feat_dim=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                                num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)),
}


def build_segmentor(name: str, **kwargs) -> nn.Module:
    """Build a segmentor of :data:`SEGMENTORS` by name; ``kwargs`` override its defaults."""
    if name not in SEGMENTORS:
        raise ValueError(f"unknown segmentor {name!r}; expected one of {sorted(SEGMENTORS)}")
    cls, defaults = SEGMENTORS[name]
    return cls(**{**defaults, **kwargs})
