"""CPlot (Liu et al., ECCV 2024): click prompts, prompt-pixel alignment and optimal transport (see README.md).

There is no public code, so the paper ("Click Prompt Learning with Optimal Transport for Interactive Segmentation", §3-4) is the specification. Equation numbers in the
comments are the paper's. Where the paper gives no value, the default is marked "ours" and can be changed
through a keyword argument; README.md lists each such choice.

Pipeline (Fig. 2)::

    image, disks(pos, neg), prev_mask --SimpleClick ViT + SimpleFPN--> 4 maps --merge--> F (B, d, H/4, W/4)
                                     \\--ViT tokens: mean + LN + Linear--> g (B, d)
    P + f_pe(MAP(M_pos, K_p)) + f_con(MAP(M_pos, F)) = P_c (B, N, d)        Eq. 4-6
    L x [cross-attn(P_c -> F), self-attn, FFN]; P* = f_desc(cat[P_c * g, g])  Eq. 8-9 (PPAM)
    S = sim(F, P*); T* = Sinkhorn(1 - cos(F, P*)); S* = sigmoid(T~ * S)       Eq. 10-11, 3 (CPOT)
    logits = Phi(cat[F, S*])  at 1/4, upsampled to the input                  Eq. 7
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.base import InteractiveModel, disk_maps
from iis.models.deform_attn import sine_position_encoding
from iis.models.heads import ConvReLU
from iis.models.pretrained import MAE_WEIGHTS
from iis.models.registry import register_model
from iis.models.simpleclick_encoder import VARIANTS, SimpleClickEncoder, build_simpleclick_encoder

from .sinkhorn import sinkhorn

__all__ = ["PROMPT_INITS", "ClickEncoder", "PPAMBlock", "PPAM", "CPOT", "MaskDecoder", "CPlotModel",
           "build_cplot", "masked_average", "CPlotOptions"]

CLICK_RADIUS = 5  # same disks as the encoder (protocol.md §D.1)
# Table 4 rows: which terms of Eq. 4 initialise the prompts
PROMPT_INITS = {"p": (False, False), "p+pe": (True, False), "p+con": (False, True), "all": (True, True)}


def masked_average(mask: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """MAP of Eq. 5-6: ``sum(mask * feats) / sum(mask)`` over pixels.

    Args:
        mask: ``(B, 1, H, W)`` non-negative weights.
        feats: ``(B, C, H, W)``.

    Returns:
        ``(B, C)``; zeros for a sample whose mask is empty.
    """
    den = mask.sum((2, 3))
    return (feats * mask).sum((2, 3)) / den.clamp_min(1e-6)


def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cout))  # f_t (ours: 2 layers)


class ClickEncoder(nn.Module):
    """N click prompts ``P_c = P + P_pe + P_con`` (Eq. 4-6) from the positive-click disk map only.

    Args:
        dim: prompt width d.
        num_prompts: N (5, §5 implementation details).
        init: a key of ``PROMPT_INITS`` (Table 4): "p", "p+pe", "p+con" or "all".
        per_prompt: ours. If False (default), f_t maps the pooled vector to one d-vector, which is
            added to every prompt, so prompts differ only through P. If True, f_t outputs N*d, one
            vector per prompt.
    """

    def __init__(self, dim: int, num_prompts: int = 5, init: str = "all", per_prompt: bool = False):
        super().__init__()
        if init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {sorted(PROMPT_INITS)}, got {init!r}")
        self.dim, self.num_prompts, self.init = dim, num_prompts, init
        use_pe, use_con = PROMPT_INITS[init]
        out = dim * num_prompts if per_prompt else dim
        self.prompts = nn.Parameter(torch.randn(num_prompts, dim))  # P; N(0, 1) like DETR's query embedding
        self.f_pe = _mlp(dim, dim, out) if use_pe else None
        self.f_con = _mlp(dim, dim, out) if use_con else None

    def forward(self, feats: torch.Tensor, pos: torch.Tensor, pos_map: torch.Tensor) -> torch.Tensor:
        """Features F ``(B, d, h, w)``, sine encoding K_p ``(B, d, h, w)`` and positive disks ``(B, 1, h, w)``.

        Returns ``(B, N, d)``. The two pooled terms are zero for a sample without positive clicks.
        """
        B = feats.shape[0]
        out = self.prompts.unsqueeze(0).expand(B, -1, -1)
        has_pos = (pos_map.sum((1, 2, 3)) > 0).to(feats.dtype).view(B, 1, 1)
        for f_t, src in ((self.f_pe, pos), (self.f_con, feats)):
            if f_t is not None:
                out = out + has_pos * f_t(masked_average(pos_map, src)).view(B, -1, self.dim)
        return out


class _Attention(nn.Module):
    """Multi-head attention ``(B, Lq, d) x (B, Lk, d) -> (B, Lq, d)`` with SDPA."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"prompt width {dim} must be divisible by ppam_heads={heads}")
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, Lq, D = q.shape

        def split(x):
            return x.view(B, x.shape[1], self.heads, D // self.heads).transpose(1, 2)

        x = F.scaled_dot_product_attention(split(self.q(q)), split(self.k(k)), split(self.v(v)))
        return self.out(x.transpose(1, 2).reshape(B, Lq, D))


class PPAMBlock(nn.Module):
    """One block of Eq. 8: cross-attention to F, self-attention, FFN, each residual.

    Eq. 8 shows no normalisation. We add a LayerNorm after each residual (post-norm, as in DETR and
    Mask2Former decoders; ours). The sine encoding is added to the keys (DETR; ours, ``key_pos``).
    """

    def __init__(self, dim: int, heads: int = 8, ffn_ratio: float = 4.0, key_pos: bool = True):
        super().__init__()
        self.key_pos = key_pos
        self.cross, self.self_attn = _Attention(dim, heads), _Attention(dim, heads)
        self.ffn = _mlp(dim, int(dim * ffn_ratio), dim)  # 4d as in Vaswani et al. [49] (ours)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, p: torch.Tensor, feats: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Prompts ``(B, N, d)``, flattened features and encoding ``(B, hw, d)`` -> ``(B, N, d)``."""
        p = self.norms[0](p + self.cross(p, feats + pos if self.key_pos else feats, feats))
        p = self.norms[1](p + self.self_attn(p, p, p))
        return self.norms[2](p + self.ffn(p))


class PPAM(nn.Module):
    """L blocks (Eq. 8), then the descriptor ``P* = f_t(cat[P_hat * g, g])`` (Eq. 9)."""

    def __init__(self, dim: int, num_blocks: int = 2, heads: int = 8, ffn_ratio: float = 4.0, key_pos: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(PPAMBlock(dim, heads, ffn_ratio, key_pos) for _ in range(num_blocks))
        self.descriptor = _mlp(2 * dim, dim, dim)

    def forward(self, p: torch.Tensor, feats: torch.Tensor, pos: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Prompts ``(B, N, d)``, F and K_p ``(B, hw, d)``, global token g ``(B, d)`` -> P* ``(B, N, d)``."""
        for blk in self.blocks:
            p = blk(p, feats, pos)
        g = g.unsqueeze(1).expand_as(p)
        return self.descriptor(torch.cat([p * g, g], dim=-1))


class CPOT(nn.Module):
    """Prompt-activated masks, Eq. 10-11: ``S* = sigmoid(T~ * S)``; returns the logits ``T~ * S``.

    Args:
        use_ot: False reproduces the "w/o CPOT" row of Table 3: ``S* = sigmoid(S)``, i.e. ``T~ = 1``.
        reg: lambda of Eq. 3. Ours: 0.1, as in PLOT (methods.md §4.3).
        num_iters: Sinkhorn iterations. Ours: 50, a fixed count (no sync, works on "meta"). At
            lambda 0.1 the row marginals reach float32 precision within ~20 iterations.
        plan_scale: how T* is scaled before the product. The paper does not say; raw T* is about
            1/(hw*N), which would make S* about 0.5 everywhere. "mass" (default, ours) multiplies by
            hw*N, so the independent coupling is all ones and "no CPOT" is the special case T~ = 1.
            "row" multiplies by hw, so each pixel's weights over prompts sum to 1. "none" leaves T*
            as it is.
        detach_plan: treat T* as a constant in the backward pass. This is the "fix T* in the outer
            loop" of §4.3 and what PLOT does. The default is False, because §4.3 also calls CPOT fully
            differentiable and trains end to end.
        similarity: S of Eq. 11. "cosine" (default) is ``s * cos(F, P*)``, with a learnable scale s
            initialised to ``logit_scale`` (ours: 10). It reuses the normalised F and P* of Eq. 10.
            "dot" is the raw ``F P*^T``.
        grad_iters: passed to :func:`~iis.methods.cplot.sinkhorn.sinkhorn` (memory cap; None = all).
    """

    def __init__(self, use_ot: bool = True, reg: float = 0.1, num_iters: int = 50, plan_scale: str = "mass",
                 detach_plan: bool = False, similarity: str = "cosine", logit_scale: float = 10.0,
                 grad_iters: int | None = None):
        super().__init__()
        if plan_scale not in ("mass", "row", "none"):
            raise ValueError(f"ot_plan_scale must be 'mass', 'row' or 'none', got {plan_scale!r}")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if not reg > 0:
            raise ValueError(f"ot_reg (lambda) must be > 0, got {reg!r}")
        self.use_ot, self.reg, self.num_iters, self.grad_iters = use_ot, float(reg), int(num_iters), grad_iters
        self.plan_scale, self.detach_plan, self.similarity = plan_scale, detach_plan, similarity
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale))) if similarity == "cosine" else None

    def forward(self, feats: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """F ``(B, hw, d)``, P* ``(B, N, d)`` -> S* logits ``(B, hw, N)`` and the scaled plan (or None)."""
        fn, pn = F.normalize(feats, dim=-1), F.normalize(prompts, dim=-1)
        cos = fn @ pn.transpose(1, 2)  # (B, hw, N)
        if self.similarity == "cosine":
            s = self.log_scale.clamp(max=math.log(100.0)).exp() * cos  # CLIP-style cap at 100
        else:
            s = feats @ prompts.transpose(1, 2)
        if not self.use_ot:
            return s, None
        M, N = cos.shape[-2:]
        plan = sinkhorn(1.0 - cos, self.reg, num_iters=self.num_iters, grad_iters=self.grad_iters)  # Eq. 10, 3
        if self.detach_plan:
            plan = plan.detach()
        plan = plan * {"mass": M * N, "row": M, "none": 1}[self.plan_scale]
        return plan * s, plan


class MaskDecoder(nn.Module):
    """Phi of Eq. 7: ``layers`` x (3x3 conv, GroupNorm, ReLU), then a 1x1 classifier (widths ours)."""

    def __init__(self, cin: int, channels: int = 128, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Conv2d(cin if i == 0 else channels, channels, 3, padding=1, bias=False),
                     nn.GroupNorm(min(32, channels), channels), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*mods)
        self.classifier = nn.Conv2d(channels if layers else cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.convs(x))


class CPlotModel(InteractiveModel):
    """CPlot. ``forward`` -> logits ``(B, 1, H, W)``. ``forward_train`` also returns S* for Eq. 12.

    Args:
        encoder: SimpleClick encoder (ViT + SimpleFPN) fed image, disks and previous mask.
        dim: d, the width of F and of the prompts (ours: 256, SimpleClick's head width).
        num_prompts: N (5; Table 5 ablates 1/3/5/7).
        num_blocks: L PPAM blocks (2; Table 6 ablates 1-4).
        use_ppam: False gives Table 3 "w/o PPAM": P* = P_c, with no blocks and no descriptor.
        use_cpot: False gives Table 3 "w/o CPOT": S* = sigmoid(S).
        prompt_init: Table 4: "p", "p+pe", "p+con" or "all".
        global_token: how g is obtained, since SimpleClick has no class token. Default "vit_mean":
            LayerNorm(mean of the ViT output tokens), then Linear(D, d), like MAE's global-pool head
            (``fc_norm``). "feat_mean" is the mean of F, with no parameters.
        ppam_heads, ffn_ratio, key_pos: PPAM attention heads (8), FFN width ratio (4), and whether
            the sine encoding is added to the cross-attention keys (ours).
        per_prompt_init: see :class:`ClickEncoder`.
        decoder_channels, decoder_layers: Phi width and depth (ours: 128, 2).
        ot_*: :class:`CPOT` settings (reg, num_iters, plan_scale, detach_plan, grad_iters);
            ``similarity`` and ``logit_scale`` likewise.
    """

    default_protocol = "simpleclick"  # SimpleClick's evaluation (448 squash), as the paper follows [32]

    def __init__(self, encoder: SimpleClickEncoder, dim: int = 256, num_prompts: int = 5, num_blocks: int = 2,
                 use_ppam: bool = True, use_cpot: bool = True, prompt_init: str = "all",
                 global_token: str = "vit_mean", ppam_heads: int = 8, ffn_ratio: float = 4.0, key_pos: bool = True,
                 per_prompt_init: bool = False, decoder_channels: int = 128, decoder_layers: int = 2,
                 ot_reg: float = 0.1, ot_num_iters: int = 50, ot_plan_scale: str = "mass", ot_detach_plan: bool = False,
                 ot_grad_iters: int | None = None, similarity: str = "cosine", logit_scale: float = 10.0):
        super().__init__()
        if num_prompts < 1 or num_blocks < 0:
            raise ValueError(f"num_prompts must be >= 1 and num_blocks >= 0, got {num_prompts}, {num_blocks}")
        if global_token not in ("vit_mean", "feat_mean"):
            raise ValueError(f"global_token must be 'vit_mean' or 'feat_mean', got {global_token!r}")
        if dim % 2:
            raise ValueError(f"dim must be even (sine encoding of x and y), got {dim}")
        self.encoder = encoder
        self.with_prev_mask = encoder.with_prev_mask
        self.dim, self.num_prompts, self.global_token = dim, num_prompts, global_token
        # F: SegFormer-style merge of the 4 levels at 1/4 (SimpleClick's head, §4.1), then a linear 1x1
        # so that F is signed (ours)
        self.lateral = nn.ModuleList(ConvReLU(c, dim) for c in encoder.out_dims)
        self.fuse = ConvReLU(dim * len(encoder.out_dims), dim)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.use_ppam = use_ppam
        if global_token == "vit_mean" and use_ppam:  # g is only used by the descriptor (Eq. 9)
            self.g_norm, self.g_proj = nn.LayerNorm(encoder.embed_dim, eps=1e-6), nn.Linear(encoder.embed_dim, dim)
        self.click_encoder = ClickEncoder(dim, num_prompts, prompt_init, per_prompt_init)
        self.ppam = PPAM(dim, num_blocks, ppam_heads, ffn_ratio, key_pos) if use_ppam else None
        self.cpot = CPOT(use_cpot, ot_reg, ot_num_iters, ot_plan_scale, ot_detach_plan, similarity, logit_scale,
                         ot_grad_iters)
        self.decoder = MaskDecoder(dim + num_prompts, decoder_channels, decoder_layers)

    def _features(self, image, clicks, prev_mask):
        tokens = self.encoder.forward_tokens(image, clicks, prev_mask)  # validates the inputs
        levels = self.encoder.neck(tokens)
        size = levels[0].shape[-2:]
        outs = [lat(f) if f.shape[-2:] == size else
                F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
                for lat, f in zip(self.lateral, levels)]
        feats = self.proj(self.fuse(torch.cat(outs, 1)))
        if not self.use_ppam:
            g = None
        elif self.global_token == "vit_mean":
            g = self.g_proj(self.g_norm(tokens.mean((2, 3))))
        else:
            g = feats.mean((2, 3))
        return feats, g

    def forward_train(self, image: torch.Tensor, clicks: torch.Tensor,
                      prev_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Arguments as :mod:`iis.models.base`.

        Returns:
            dict with ``logits`` ``(B, 1, H, W)``; ``s_star`` ``(B, N, H, W)``, the logits ``T~ * S`` of
            the prompt-activated masks upsampled to the input like ``logits`` (S* = sigmoid of it);
            ``s_star_feat`` ``(B, N, h, w)``, the same at the resolution of F; ``plan``, the scaled
            plan ``(B, N, h, w)``, or None without CPOT.
        """
        H, W = image.shape[-2:]
        feats, g = self._features(image, clicks, prev_mask)
        B, d, h, w = feats.shape
        canvas = self.encoder.padded_size(H, W)
        pos_map = disk_maps(clicks, canvas, radius=CLICK_RADIUS)[:, :1].to(feats.dtype)
        pos_map = F.interpolate(pos_map, size=(h, w), mode="area")  # soft disks at the resolution of F
        pos = sine_position_encoding(feats, num_pos_feats=d // 2)  # K_p (Eq. 5)
        prompts = self.click_encoder(feats, pos, pos_map)  # Eq. 4-6
        flat, flat_pos = feats.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2)
        if self.ppam is not None:
            prompts = self.ppam(prompts, flat, flat_pos, g)  # Eq. 8-9
        s_logits, plan = self.cpot(flat, prompts)  # (B, hw, N), Eq. 10-11
        s_feat = s_logits.transpose(1, 2).reshape(B, self.num_prompts, h, w)
        low = self.decoder(torch.cat([feats, torch.sigmoid(s_feat)], 1))  # Eq. 7

        def up(x):  # SimpleClick's upsampling to the padded canvas, then crop the padding
            return F.interpolate(x, size=canvas, mode="bilinear", align_corners=True)[..., :H, :W]

        return {"logits": up(low), "s_star": up(s_feat), "s_star_feat": s_feat,
                "plan": None if plan is None else plan.transpose(1, 2).reshape(B, self.num_prompts, h, w)}

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_train(image, clicks, prev_mask)["logits"]


class CPlotOptions(TypedDict, total=False):
    """Keyword options of every ``cplot_*`` builder; defaults and meaning: :func:`build_cplot` and
    :class:`CPlotModel` (the size's builder may set others); ``pretrained`` is passed separately.
    The paper's ablations are ``num_prompts`` (Table 5), ``num_blocks`` (Table 6), ``use_ppam`` /
    ``use_cpot`` (Table 3) and ``prompt_init`` (Table 4).
    """

    img_size: int
    with_prev_mask: bool
    dim: int | None
    num_prompts: int
    num_blocks: int
    use_ppam: bool
    use_cpot: bool
    prompt_init: str
    global_token: str
    ppam_heads: int
    ffn_ratio: float
    key_pos: bool
    per_prompt_init: bool
    decoder_channels: int
    decoder_layers: int
    ot_reg: float
    ot_num_iters: int
    ot_plan_scale: str
    ot_detach_plan: bool
    ot_grad_iters: int | None
    similarity: str
    logit_scale: float


def build_cplot(variant: str, *, img_size: int = 448, pretrained: str | None = None, with_prev_mask: bool = True,
                dim: int | None = None, **kwargs) -> CPlotModel:
    """CPlot on a SimpleClick encoder variant.

    ``pretrained`` is a local MAE checkpoint for the ViT. ``dim`` defaults to the variant's SimpleClick
    head width (256 for ViT-B). Other ``kwargs`` go to :class:`CPlotModel`.
    """
    enc = build_simpleclick_encoder(variant, img_size=img_size, pretrained=pretrained, with_prev_mask=with_prev_mask)
    return CPlotModel(enc, dim=dim or VARIANTS[variant].head_channels, **kwargs)


@register_model("cplot_vit_base", options=CPlotOptions, pretrained=MAE_WEIGHTS["base"])
def cplot_vit_base(**kwargs) -> CPlotModel:
    return build_cplot("base", **kwargs)


@register_model("cplot_vit_xtiny", options=CPlotOptions)  # ours, no pre-training
def cplot_vit_xtiny(**kwargs) -> CPlotModel:
    kwargs.setdefault("decoder_channels", 64)  # half of ViT-B's, as SimpleClick halves its head for xT (ours)
    return build_cplot("xtiny", **kwargs)


@register_model("cplot_test", options=CPlotOptions)
def cplot_test(img_size: int = 64, **kwargs) -> CPlotModel:
    kwargs.setdefault("ppam_heads", 2)
    kwargs.setdefault("decoder_channels", 16)
    return build_cplot("test", img_size=img_size, **kwargs)
