"""GPCIS model: backbone segmentor with click fusion -> 48/96-d features -> GP posterior logits.

Paper: "Interactive Segmentation as Gaussian Process Classification" §4.4 and Fig. 2; code details docs/methods.md §3.2-3.4. The segmentors live in
:mod:`iis.models.segmentors` and are shared with the RITM-style baselines (:mod:`iis.methods.ritm`), so
"RITM vs GPCIS under the same backbone" is the model name ``ritm_<backbone>`` vs ``gpcis_<backbone>``.

Registered models (supplement: d and l per backbone):

* ``gpcis_resnet50``: DeepLabV3+ ResNet-50 v1s, d = 48, l = 256 (paper Tables 2-3; 39.39 M parameters).
* ``gpcis_hrnet18s``: HRNet-18s (no OCR), d = 48, l = 256.
* ``gpcis_segformer_b0``: SegFormer-B0, d = 96, l = 128.
* ``gpcis_test``: tiny DeepLab-style segmentor, d = 8, l = 32 (fast CPU tests; ``segmentor=`` switches
  to ``hrnet_tiny`` / ``segformer_tiny``).

Every builder forwards GP switches (``rff``, ``init``, ``solver``, ``solve_dtype``, ``vi_loss``,
``train_eps2``, ``test_eps2``, ``concat_rgb``, ``learn_kernel``, ``learn_prior``, ``click_pixel``; see
:class:`~iis.methods.gpcis.gp.GPHead`) and segmentor overrides (``pretrained=path``, ...).
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import nn

from iis.models.base import InteractiveModel
from iis.models.pretrained import BACKBONE_WEIGHTS
from iis.models.registry import register_model
from iis.models.segmentors import build_segmentor, encode_clicks

from .gp import GPHead

__all__ = ["GPCISModel", "build_gpcis", "GP_KEYS", "GPCISOptions", "GPCISTestOptions"]

GP_KEYS = ("num_rff", "mlp_hidden", "concat_rgb", "rff", "init", "solver", "solve_dtype", "vi_loss", "train_eps2",
           "test_eps2", "u_std", "learn_kernel", "learn_prior", "max_jitter", "click_pixel")


class GPCISModel(InteractiveModel):
    """Segmentor + GP head following the :mod:`iis.models.base` contract.

    Args:
        segmentor: module ``(image_norm, coords) -> (B, d, h, w)`` with attribute ``out_channels = d``.
        gp: :class:`GPHead` with ``feat_dim = d``.
    """

    default_protocol = "gpcis"  # ClickSEG Baseline predictor, thresh 0.50 (protocol.md §A.11)

    with_prev_mask = True
    # the GP's click-feature products change with the padded click count (by float rounding)
    click_padding_exact = False

    def __init__(self, segmentor: nn.Module, gp: GPHead):
        super().__init__()
        if segmentor.out_channels != gp.feat_dim:
            raise ValueError(f"segmentor.out_channels ({segmentor.out_channels}) != gp.feat_dim ({gp.feat_dim})")
        self.segmentor = segmentor
        self.gp = gp

    @property
    def test_eps2(self) -> float:
        """ε² used in eval mode (paper: 1e-7); settable for the NoIC sweep (paper Table 1)."""
        return self.gp.test_eps2

    @test_eps2.setter
    def test_eps2(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"test_eps2 must be > 0, got {value!r}")
        self.gp.test_eps2 = float(value)

    @property
    def train_eps2(self) -> float:
        return self.gp.train_eps2

    def forward_train(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None,
                      eps2: float | None = None, sample: bool | None = None) -> dict[str, torch.Tensor]:
        """Everything the loss needs.

        Args:
            image: ``(B, 3, H, W)`` in [0, 1]; clicks: ``(B, N, 3)`` ``(x, y, label)``; prev_mask:
                ``(B, 1, H, W)`` or None.
            eps2: jitter override (default: ``train_eps2`` in train mode, ``test_eps2`` in eval mode). Upstream's
                in-training click simulation runs the net in eval mode with ε² = 1e-2: pass
                ``eps2=model.train_eps2`` there to match it.
            sample: draw w and u (default: in train mode).

        Returns:
            dict with ``logits (B, 1, H, W)``, ``kl`` (L_VI, unweighted), ``prior``/``update`` maps, ``m``,
            ``u``, ``valid``, ``eps2`` and ``features`` (the raw segmentor output).
        """
        image_norm, coords = encode_clicks(image, clicks, prev_mask)
        feats = self.segmentor(image_norm, coords)
        out = self.gp(feats, image_norm, clicks, eps2=eps2, sample=sample)
        out["features"] = feats
        return out

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None,
                eps2: float | None = None) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` at input resolution (posterior-mean path in eval mode)."""
        return self.forward_train(image, clicks, prev_mask, eps2=eps2)["logits"]


class GPCISOptions(TypedDict, total=False):
    """Keyword options of every ``gpcis_*`` builder: the feature width d (``feat_dim``) and the GP head's
    arguments (:data:`GP_KEYS`, defaults in :class:`iis.methods.gpcis.gp.GPHead`); the size's builder sets
    d and the number of random features. ``pretrained`` (backbone weights) is passed separately.
    """

    feat_dim: int
    num_rff: int
    mlp_hidden: int
    concat_rgb: bool
    rff: str
    init: str
    solver: str
    solve_dtype: str
    vi_loss: str
    train_eps2: float
    test_eps2: float
    u_std: float
    learn_kernel: bool
    learn_prior: bool
    max_jitter: float
    click_pixel: str


class GPCISTestOptions(GPCISOptions, total=False):
    """``gpcis_test`` also takes the tiny ``segmentor``: deeplab_tiny, hrnet_tiny or segformer_tiny."""

    segmentor: str


def build_gpcis(segmentor: str, feat_dim: int, num_rff: int, **kwargs) -> GPCISModel:
    """Build GPCIS on a named segmentor; GP keys (:data:`GP_KEYS`) go to the head, the rest to the segmentor."""
    gp_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in GP_KEYS}
    seg = build_segmentor(segmentor, feat_dim=feat_dim, **kwargs)
    return GPCISModel(seg, GPHead(feat_dim=feat_dim, num_rff=num_rff, **gp_kwargs))


@register_model("gpcis_resnet50", options=GPCISOptions, pretrained=BACKBONE_WEIGHTS["deeplab_r50"])
def gpcis_resnet50(**kwargs) -> GPCISModel:
    kwargs = {"feat_dim": 48, "num_rff": 256, **kwargs}  # deeplab_v3_gp.py (48), is_gp_resnet50.py (L=256)
    return build_gpcis("deeplab_r50", **kwargs)


@register_model("gpcis_hrnet18s", options=GPCISOptions, pretrained=BACKBONE_WEIGHTS["hrnet18s"])
def gpcis_hrnet18s(**kwargs) -> GPCISModel:
    kwargs = {"feat_dim": 48, "num_rff": 256, **kwargs}  # supplement: HRNet-18s-S2 d = 48, l = 256
    return build_gpcis("hrnet18s", **kwargs)


@register_model("gpcis_segformer_b0", options=GPCISOptions, pretrained=BACKBONE_WEIGHTS["segformer_b0"])
def gpcis_segformer_b0(**kwargs) -> GPCISModel:
    kwargs = {"feat_dim": 96, "num_rff": 128, **kwargs}  # supplement: SegFormer-B0-S2 d = 96, l = 128
    return build_gpcis("segformer_b0", **kwargs)


@register_model("gpcis_test", options=GPCISTestOptions)
def gpcis_test(segmentor: str = "deeplab_tiny", **kwargs) -> GPCISModel:
    kwargs = {"feat_dim": 8, "num_rff": 32, "mlp_hidden": 16, **kwargs}
    return build_gpcis(segmentor, **kwargs)
