"""HRNetV2 backbone and the OCR segmentation head, as RITM builds them.

HRNet (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition", TPAMI
2020) keeps four parallel branches at 1/4, 1/8, 1/16 and 1/32 resolution (widths ``w, 2w, 4w, 8w``)
and repeatedly exchanges information between them. OCR (Yuan et al., "Object-Contextual
Representations for Semantic Segmentation", ECCV 2020) pools pixel features into soft object regions
and adds the regions' context back to every pixel.

RITM's configuration (``isegm/model/modeling/hrnet_ocr.py``; docs/protocol.md §D.3-D.4):

* stem: two 3x3 stride-2 convs (3 -> 64 -> 64) with BN + ReLU; click features are *added* after the
  first one (``HRNet.forward(x, stem_extra)``);
* stage 1: Bottleneck blocks at 64 planes (256 out); stages 2/3/4: 1 / 4 / 3 modules of BasicBlock
  branches (``small=True``, HRNet-W18-Small-v2: 1 / 3 / 2), ``num_blocks`` = 4 (small: 2) blocks per
  branch and in stage 1;
* fuse layers: lower-resolution inputs go through a 1x1 conv + BN and are upsampled **bilinearly with
  align_corners=True to the target branch's exact size**; higher-resolution inputs go through chains of
  3x3 stride-2 conv + BN (+ ReLU except on the last);
* output: the four branches upsampled (bilinear, align_corners=True) to 1/4 and concatenated.

Parameter names follow the HRNet-Image-Classification checkpoints, which timm's ``HighResolutionNet``
and RITM's ``HighResolutionNet`` share, so ImageNet weights of either load by name. The only
computational difference to timm is the fuse upsampling: timm upsamples with ``nearest`` by a fixed
factor (and so needs inputs divisible by 32); with that swapped the two networks agree exactly
(tests/methods/test_ritm.py). Any input size works here: strided convs round up and upsampling targets
the exact size, as in RITM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "HRModule", "HRNet", "OCRHead", "concat_branches", "upsample_to"]


def upsample_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``, RITM's choice everywhere inside the network."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, relu: bool = True, bias: bool = False) -> list[nn.Module]:
    """``conv k x k (padding k // 2) -> BN [-> ReLU]`` as a list, to be spliced into an ``nn.Sequential``."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs), ``expansion = 1``."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """ResNet v1b bottleneck (1x1, 3x3 with the stride, 1x1 to ``4 * planes``)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def res_layer(block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first gets a 1x1 conv + BN shortcut if the width changes."""
    cout = planes * block.expansion
    down = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)) if cin != cout else None
    return nn.Sequential(block(cin, planes, downsample=down), *(block(cout, planes) for _ in range(num_blocks - 1)))


class HRModule(nn.Module):
    """One multi-resolution module: a residual branch per resolution, then every branch i sums all branches.

    ``fuse_layers[i][j]`` brings branch j to branch i: identity (j == i), 1x1 conv + BN then bilinear
    upsampling (j > i, lower resolution), or ``i - j`` 3x3 stride-2 conv + BN steps (j < i), the last
    one without ReLU and switching to branch i's width.
    """

    def __init__(self, channels: list[int], num_blocks: int):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(res_layer(BasicBlock, c, c, num_blocks) for c in channels)
        self.fuse_layers = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(*conv_bn(channels[j], channels[i], relu=False)))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = [nn.Sequential(*conv_bn(channels[j], channels[j], 3, 2)) for _ in range(i - j - 1)]
                    steps.append(nn.Sequential(*conv_bn(channels[j], channels[i], 3, 2, relu=False)))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = row[0](xs[0])  # summed in branch order, as the reference does (same float rounding)
            for j in range(1, len(xs)):
                z = row[j](xs[j])
                y = y + (upsample_to(z, xs[i].shape[-2:]) if j > i else z)
            out.append(F.relu(y))
        return out


class HRNet(nn.Module):
    """HRNetV2 feature extractor: returns the four branch outputs (1/4 ... 1/32).

    Args:
        width: width of the 1/4 branch (18 = HRNetV2-W18, 32 = W32); branches are ``w * 2**k``.
        small: HRNet-W18-Small-v2 depth (``num_blocks=2``, ``num_modules=(1, 3, 2)``).
        num_blocks: residual blocks per branch and in stage 1 (default 4, small 2).
        num_modules: modules in stages 2, 3, 4 (default (1, 4, 3), small (1, 3, 2)).
        stem_channels: stem width (64); stage1_planes: stage-1 bottleneck planes (64, output 4x).
            Both only change for tiny test networks.
    """

    def __init__(self, width: int = 18, small: bool = False, num_blocks: int | None = None,
                 num_modules: tuple[int, int, int] | None = None, stem_channels: int = 64, stage1_planes: int = 64):
        super().__init__()
        num_blocks = num_blocks or (2 if small else 4)
        num_modules = tuple(num_modules or ((1, 3, 2) if small else (1, 4, 3)))
        if len(num_modules) != 3:
            raise ValueError(f"num_modules must give stages 2, 3, 4, got {num_modules}")
        self.stem_channels = stem_channels
        self.channels = [width * 2 ** k for k in range(4)]
        self.conv1 = nn.Conv2d(3, stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels)
        self.layer1 = res_layer(Bottleneck, stem_channels, stage1_planes, num_blocks)
        prev = [stage1_planes * Bottleneck.expansion]
        for s, modules in zip((2, 3, 4), num_modules):
            cur = self.channels[:s]
            setattr(self, f"transition{s - 1}", self._transition(prev, cur))
            setattr(self, f"stage{s}", nn.Sequential(*(HRModule(cur, num_blocks) for _ in range(modules))))
            prev = cur

    @staticmethod
    def _transition(prev: list[int], cur: list[int]) -> nn.ModuleList:
        """Existing branches: 3x3 conv + BN + ReLU where the width changes (else identity); the new
        branch: a 3x3 stride-2 conv + BN + ReLU from the lowest-resolution branch."""
        layers = nn.ModuleList()
        for i, c in enumerate(cur):
            if i < len(prev):
                layers.append(nn.Sequential(*conv_bn(prev[i], c, 3)) if prev[i] != c else nn.Identity())
            else:  # HRNet stages add exactly one branch
                layers.append(nn.Sequential(nn.Sequential(*conv_bn(prev[-1], c, 3, 2))))
        return layers

    @property
    def out_channels(self) -> int:
        """Channels of :func:`concat_branches` of the output."""
        return sum(self.channels)

    def forward(self, x: torch.Tensor, stem_extra: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``x`` (B, 3, H, W) normalised image; ``stem_extra`` (B, stem_channels, H/2, W/2) is added after
        the first stem conv (RITM's click fusion, docs/protocol.md §D.3)."""
        x = F.relu(self.bn1(self.conv1(x)))
        if stem_extra is not None:
            x = x + stem_extra
        x = F.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for s in (2, 3, 4):
            transition = getattr(self, f"transition{s - 1}")
            xs = [t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)]
            xs = getattr(self, f"stage{s}")(xs)
        return xs


def concat_branches(xs: list[torch.Tensor]) -> torch.Tensor:
    """HRNetV2 representation: every branch upsampled to the 1/4 branch's size, concatenated."""
    return torch.cat([xs[0]] + [upsample_to(x, xs[0].shape[-2:]) for x in xs[1:]], 1)


class ObjectAttention(nn.Module):
    """OCR's pixel-region relation: pixels (queries) attend to object regions (keys/values).

    Softmax runs over the ``K`` regions, so with one region (RITM: ``num_classes=1``) every weight
    is 1 and ``query``/``key`` have no effect on the output; they are kept so the module (and a strict
    load of the authors' checkpoints) stays that of the OCR paper.
    """

    def __init__(self, channels: int, key_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.query = nn.Sequential(*conv_bn(channels, key_channels), *conv_bn(key_channels, key_channels))
        self.key = nn.Sequential(*conv_bn(channels, key_channels), *conv_bn(key_channels, key_channels))
        self.value = nn.Sequential(*conv_bn(channels, key_channels))
        self.out = nn.Sequential(*conv_bn(key_channels, channels))

    def forward(self, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """``pixels`` (B, C, h, w), ``regions`` (B, C, K, 1) -> context (B, C, h, w)."""
        B, _, h, w = pixels.shape
        q = self.query(pixels).flatten(2).transpose(1, 2)  # (B, hw, k)
        k = self.key(regions).flatten(2)  # (B, k, K)
        v = self.value(regions).flatten(2).transpose(1, 2)  # (B, K, k)
        attn = torch.softmax(q @ k * self.key_channels ** -0.5, dim=-1)  # (B, hw, K)
        context = (attn @ v).transpose(1, 2).reshape(B, self.key_channels, h, w)
        return self.out(context)


class OCRHead(nn.Module):
    """HRNet-OCR head with ``K`` soft object regions; returns ``(logits, aux_logits)``, both (B, K, h, w).

    ``aux`` predicts the soft regions from the backbone features (RITM returns it as ``instances_aux``
    and trains it with a 0.4-weighted BCE, docs/protocol.md §D.5); each region's feature is the
    softmax-over-pixels weighted mean of ``pixel`` features; pixels gather context from the regions
    (:class:`ObjectAttention`), ``fuse`` mixes context and pixel features, ``classifier`` gives the logits.

    Args:
        in_channels: backbone feature channels (HRNetV2: ``15 * width``).
        ocr_width: key channels; the pixel/context width is ``2 * ocr_width`` (RITM configs: 64 for
            HRNet18, 48 for HRNet18s, 128 for HRNet32).
        num_regions: ``K`` (RITM: 1, the object).
        dropout: ``Dropout2d`` after ``fuse`` (RITM: 0.05).
    """

    def __init__(self, in_channels: int, ocr_width: int, num_regions: int = 1, dropout: float = 0.05):
        super().__init__()
        mid = 2 * ocr_width
        self.aux = nn.Sequential(*conv_bn(in_channels, in_channels, bias=True), nn.Conv2d(in_channels, num_regions, 1))
        self.pixel = nn.Sequential(*conv_bn(in_channels, mid, 3, bias=True))
        self.attention = ObjectAttention(mid, ocr_width)
        self.fuse = nn.Sequential(*conv_bn(2 * mid, mid), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(mid, num_regions, 1)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aux = self.aux(feats)
        pixels = self.pixel(feats)
        weights = torch.softmax(aux.flatten(2), dim=2)  # (B, K, hw): each region a distribution over pixels
        regions = (weights @ pixels.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(3)  # (B, C, K, 1)
        context = self.attention(pixels, regions)
        return self.classifier(self.fuse(torch.cat([context, pixels], 1))), aux
