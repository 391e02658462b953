"""AdaptiveClick (Lin et al., IEEE TNNLS 2024): SimpleClick ViT + MSDeformAttn pixel decoder + CAMD.

Structure and defaults follow the release ``lab206/AdaptiveClick@543c897`` as summarised in
docs/methods.md §1 (section numbers in comments). The backbone, coordinate patch embedding and SimpleFPN
are SimpleClick's encoder (:mod:`iis.models.simpleclick_encoder`).

* Pixel decoder (§1.3): deformable-attention encoder over 1/8, 1/16, 1/32 (4 layers, d 256, 8 heads,
  4 points, FFN 1024), one FPN stage at 1/4, a 1x1 conv to 256-d mask features at 1/4.
* CAMD (§1.4): Mask2Former's masked-attention decoder (10 queries, 9 layers, cross-attn -> self-attn
  -> FFN, levels 1/32, 1/16, 1/8 in turn, post-norm) whose attention mask is OR-ed with the positive
  click disks (max-pooled to each level) for the queries currently classified as target. That boolean
  union is how the authors coded the paper's click attention Psi (Eq. 4-6).
* Merge (§1.5): final logits = sum over queries of mask logits weighted by sigmoid(target logit).
"""

from __future__ import annotations

import math
from typing import Sequence, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.base import InteractiveModel, disk_maps
from iis.models.deform_attn import MSDeformAttn, MSDeformAttnEncoder, sine_position_encoding
from iis.models.pretrained import MAE_WEIGHTS
from iis.models.registry import register_model
from iis.models.simpleclick_encoder import SimpleClickEncoder, build_simpleclick_encoder

__all__ = ["PixelDecoder", "ClickAwareMaskDecoder", "AdaptiveClickModel", "click_open_mask", "pool_clicks",
           "attention_mask", "merge_queries", "TARGET_CLASS", "AdaptiveClickOptions"]

TARGET_CLASS = 1  # class index of "target" in pred_logits; index 0 is no-object (as upstream, §1.5-1.6)


def _gn(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, ch), ch)  # GN(32) as Mask2Former; fewer groups only for tiny test widths


def _c2_xavier(conv: nn.Conv2d) -> nn.Conv2d:
    # detectron2's c2_xavier_fill (kaiming-uniform a=1, zero bias), Mask2Former's conv init
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv


class PixelDecoder(nn.Module):
    """MSDeformAttn pixel decoder of Mask2Former (methods.md §1.3).

    Args:
        in_dims: channels of the four SimpleFPN maps at strides 4, 8, 16, 32.
        conv_dim: width of the encoder and the FPN (256).
        mask_dim: width of the mask features (256).
        num_layers, n_heads, n_points, ffn_dim: deformable encoder (4, 8, 4, 1024 = DIM_FEEDFORWARD/2).
    """

    def __init__(self, in_dims: Sequence[int], conv_dim: int = 256, mask_dim: int = 256, num_layers: int = 4,
                 n_heads: int = 8, n_points: int = 4, ffn_dim: int = 1024):
        super().__init__()
        if len(in_dims) != 4:
            raise ValueError(f"in_dims must list 4 channel counts (strides 4..32), got {list(in_dims)}")
        # encoder levels ordered low -> high resolution: 1/32, 1/16, 1/8
        self.input_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(in_dims[i], conv_dim, 1), _gn(conv_dim))
                                        for i in (3, 2, 1))
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        self.encoder = MSDeformAttnEncoder(num_layers, d_model=conv_dim, d_ffn=ffn_dim, n_levels=3,
                                           n_heads=n_heads, n_points=n_points)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.encoder.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        self.level_embed = nn.Parameter(torch.randn(3, conv_dim))
        self.lateral = nn.Sequential(_c2_xavier(nn.Conv2d(in_dims[0], conv_dim, 1)), _gn(conv_dim), nn.ReLU())
        self.output = nn.Sequential(_c2_xavier(nn.Conv2d(conv_dim, conv_dim, 3, padding=1)), _gn(conv_dim), nn.ReLU())
        self.mask_features = _c2_xavier(nn.Conv2d(conv_dim, mask_dim, 1))

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """
        Args:
            feats: ``[1/4, 1/8, 1/16, 1/32]`` maps ``(B, in_dims[i], H/s, W/s)``.

        Returns:
            mask features ``(B, mask_dim, H/4, W/4)`` and the encoder outputs ``[1/32, 1/16, 1/8]``,
            each ``(B, conv_dim, h, w)`` (the order CAMD cycles through).
        """
        srcs = [proj(feats[i].float()) for proj, i in zip(self.input_proj, (3, 2, 1))]
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        B, C = srcs[0].shape[:2]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([(sine_position_encoding(s, C // 2) + self.level_embed[i].view(1, C, 1, 1))
                         .flatten(2).transpose(1, 2) for i, s in enumerate(srcs)], 1)
        memory = self.encoder(flat, pos, shapes)
        outs = [m.transpose(1, 2).reshape(B, C, h, w)
                for m, (h, w) in zip(memory.split([h * w for h, w in shapes], 1), shapes)]
        # FPN stage at 1/4 on top of the 1/8 encoder output (§1.3)
        lat = self.lateral(feats[0].float())
        y = self.output(lat + F.interpolate(outs[-1], size=lat.shape[-2:], mode="bilinear", align_corners=False))
        return self.mask_features(y), outs


class _AttnLayer(nn.Module):
    """Post-norm attention + residual (Mask2Former's Cross/SelfAttentionLayer, PRE_NORM False, dropout 0)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x, query_pos, memory=None, pos=None, attn_mask=None):
        if memory is None:  # self-attention: values are the un-embedded queries
            q = k = x + query_pos
            v = x
        else:
            q, k, v = x + query_pos, memory + pos, memory
        return self.norm(x + self.attn(q, k, v, attn_mask=attn_mask, need_weights=False)[0])


class _FFNLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.linear1, self.linear2, self.norm = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim), nn.LayerNorm(dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x):
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class _MLP(nn.Module):
    def __init__(self, dim: int, out_dim: int, num_layers: int = 3):
        super().__init__()
        dims = [dim] * num_layers + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def click_open_mask(class_logits: torch.Tensor, pooled_clicks: torch.Tensor) -> torch.Tensor:
    """Positions each query may always attend to: the pooled positive disks, for target queries only.

    Args:
        class_logits: ``(B, Q, 2)``; a query is "target" when its argmax is :data:`TARGET_CLASS`.
        pooled_clicks: ``(B, h, w)`` positive-click disk map already pooled to the level (0..1).

    Returns:
        ``(B, Q, h, w)`` bool, True = opened (§1.4 steps 2-5).
    """
    is_target = (class_logits.argmax(-1) == TARGET_CLASS).to(pooled_clicks.dtype)
    return torch.einsum("bq,bhw->bqhw", is_target, pooled_clicks) >= 0.5


def pool_clicks(pos_disks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Max-pool an input-resolution disk map ``(B, H, W)`` to ``size`` as upstream does (§1.4 step 3).

    ``int(log2(W / w))`` rounds of ``MaxPool2d(3, 2, 1)`` and then a bilinear resize to the exact size.
    Pooling before gating by the class argmax is equivalent to upstream's order (gating is a 0/1 scale).
    """
    x = pos_disks.unsqueeze(1)
    for _ in range(int(math.log2(pos_disks.shape[-1] / size[-1]))):
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.squeeze(1)


def attention_mask(blocked: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(B, Q, h, w)`` blocked map -> ``nn.MultiheadAttention`` mask ``(B * n_heads, Q, h*w)`` (True = blocked).

    A query blocked everywhere is opened everywhere (Mask2Former); without this, PyTorch's fused
    attention would give it a zero output instead of plain attention.
    """
    blocked = blocked.flatten(2)
    blocked = blocked & ~blocked.all(-1, keepdim=True)
    return blocked.repeat_interleave(n_heads, dim=0)  # batch-major, as MultiheadAttention expects


class ClickAwareMaskDecoder(nn.Module):
    """CAMD (methods.md §1.4): masked-attention decoder with the click-aware attention mask.

    Args:
        dim: hidden width (256); must equal the pixel decoder's ``conv_dim`` (no input projection,
            ``enforce_input_project=False`` upstream).
        num_queries: learned queries (10, paper Table XII).
        n_heads, ffn_dim: attention heads (8) and FFN width (2048).
        num_layers: decoder layers (9 = DEC_LAYERS 10 - 1).
        mask_dim: width of the mask features (256).
        num_classes: foreground classes (1); the class head has ``num_classes + 1`` outputs.
        click_aware: False gives plain Mask2Former (the "no CAMD" ablation, paper Table X).
    """

    num_levels = 3

    def __init__(self, dim: int = 256, num_queries: int = 10, n_heads: int = 8, ffn_dim: int = 2048,
                 num_layers: int = 9, mask_dim: int = 256, num_classes: int = 1, click_aware: bool = True):
        super().__init__()
        self.n_heads, self.num_layers, self.click_aware = n_heads, num_layers, click_aware
        self.cross_attn = nn.ModuleList(_AttnLayer(dim, n_heads) for _ in range(num_layers))
        self.self_attn = nn.ModuleList(_AttnLayer(dim, n_heads) for _ in range(num_layers))
        self.ffn = nn.ModuleList(_FFNLayer(dim, ffn_dim) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(self.num_levels, dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = _MLP(dim, mask_dim, 3)

    def prediction_heads(self, x: torch.Tensor, mask_features: torch.Tensor, size: tuple[int, int],
                         pooled_clicks: torch.Tensor | None):
        """Class/mask predictions from queries ``x (B, Q, D)`` and the blocked map for the next level.

        Returns ``(class_logits (B,Q,2), mask_logits (B,Q,h4,w4), blocked (B,Q,h,w) bool)``.
        """
        dec = self.decoder_norm(x)
        class_logits = self.class_embed(dec)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(dec), mask_features)
        with torch.no_grad():  # the attention mask carries no gradient (§1.4)
            blocked = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid() < 0.5
            if pooled_clicks is not None:
                blocked = blocked & ~click_open_mask(class_logits, pooled_clicks)
        return class_logits, mask_logits, blocked

    def forward(self, feats: Sequence[torch.Tensor], mask_features: torch.Tensor,
                pos_disks: torch.Tensor | None = None) -> dict:
        """
        Args:
            feats: ``[1/32, 1/16, 1/8]`` maps ``(B, dim, h_l, w_l)``.
            mask_features: ``(B, mask_dim, H/4, W/4)``.
            pos_disks: ``(B, H, W)`` positive-click disk map at input resolution (ignored when
                ``click_aware`` is False).

        Returns:
            ``{"pred_logits": (B,Q,2), "pred_masks": (B,Q,H/4,W/4), "aux_outputs": [num_layers dicts]}``.
        """
        if len(feats) != self.num_levels:
            raise ValueError(f"CAMD expects {self.num_levels} feature levels, got {len(feats)}")
        B = mask_features.shape[0]
        sizes = [tuple(f.shape[-2:]) for f in feats]
        srcs = [(f.flatten(2) + self.level_embed.weight[i][None, :, None]).transpose(1, 2) for i, f in enumerate(feats)]
        pos = [sine_position_encoding(f, f.shape[1] // 2).flatten(2).transpose(1, 2) for f in feats]
        pooled = ([pool_clicks(pos_disks.to(mask_features.dtype), s) for s in sizes]
                  if self.click_aware and pos_disks is not None else [None] * self.num_levels)
        # repeat (not expand): a no-grad view of a parameter confuses torch's module tracker (FLOP counter)
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(B, 1, 1)
        x = self.query_feat.weight.unsqueeze(0).repeat(B, 1, 1)
        preds = [self.prediction_heads(x, mask_features, sizes[0], pooled[0])]  # before layer 1
        for i in range(self.num_layers):
            lvl = i % self.num_levels
            attn_mask = attention_mask(preds[-1][2], self.n_heads)
            x = self.cross_attn[i](x, query_pos, srcs[lvl], pos[lvl], attn_mask=attn_mask)
            x = self.self_attn[i](x, query_pos)
            x = self.ffn[i](x)
            nxt = (i + 1) % self.num_levels
            preds.append(self.prediction_heads(x, mask_features, sizes[nxt], pooled[nxt]))
        return {"pred_logits": preds[-1][0], "pred_masks": preds[-1][1],
                "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m, _ in preds[:-1]]}


def merge_queries(pred_logits: torch.Tensor, pred_masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Final logits ``(B, 1, H, W)``: sum_q sigmoid(target logit_q) * mask logit_q, resized (§1.5).

    Upstream resizes the query masks first (bilinear, align_corners=True, with a (W, H) size swap that
    only matters for non-square inputs); summing first is the same linear map, done at 1/4 resolution.
    """
    weights = pred_logits[..., TARGET_CLASS].sigmoid()
    merged = torch.einsum("bq,bqhw->bhw", weights, pred_masks).unsqueeze(1)
    return F.interpolate(merged, size=size, mode="bilinear", align_corners=True)


class AdaptiveClickModel(InteractiveModel):
    """SimpleClick encoder -> :class:`PixelDecoder` -> :class:`ClickAwareMaskDecoder` -> query merge.

    Args:
        encoder: a :class:`SimpleClickEncoder` (ViT with coordinate patch embedding and SimpleFPN).
        conv_dim, mask_dim: pixel-decoder widths (256, 256). ``conv_dim`` is also CAMD's hidden width.
        enc_layers, enc_heads, enc_points, enc_ffn: deformable encoder (4, 8, 4, 1024; §1.3).
        num_queries, dec_layers, dec_heads, dec_ffn: CAMD (10, 9, 8, 2048; §1.4).
        click_aware: use the click-aware attention mask (False = plain Mask2Former decoder).
        click_radius: disk radius of the positive-click map fed to CAMD (5 px, §1.2).
    """

    default_protocol = "simpleclick"  # the authors evaluate with SimpleClick's script (protocol.md §A.11)

    def __init__(self, encoder: SimpleClickEncoder, *, conv_dim: int = 256, mask_dim: int = 256,
                 enc_layers: int = 4, enc_heads: int = 8, enc_points: int = 4, enc_ffn: int = 1024,
                 num_queries: int = 10, dec_layers: int = 9, dec_heads: int = 8, dec_ffn: int = 2048,
                 click_aware: bool = True, click_radius: float = 5.0):
        super().__init__()
        self.encoder = encoder
        self.with_prev_mask = getattr(encoder, "with_prev_mask", True)
        self.click_radius = click_radius
        self.pixel_decoder = PixelDecoder(encoder.out_dims, conv_dim, mask_dim, enc_layers, enc_heads, enc_points,
                                          enc_ffn)
        self.decoder = ClickAwareMaskDecoder(conv_dim, num_queries, dec_heads, dec_ffn, dec_layers, mask_dim,
                                             click_aware=click_aware)

    def forward_train(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> dict:
        """Returns ``{"logits": (B,1,H,W), "pred_logits": (B,Q,2), "pred_masks": (B,Q,H/4,W/4),
        "aux_outputs": [dec_layers dicts]}`` (what :class:`AdaptiveClickCriterion` consumes)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        if clicks.dim() != 3 or clicks.shape[-1] != 3:
            raise ValueError(f"clicks must be (B, N, 3) rows (x, y, label), got {tuple(clicks.shape)}")
        H, W = image.shape[-2:]
        # the encoder zero-pads bottom/right to a patch multiple; predictions cover that canvas
        Hp, Wp = self.encoder.padded_size(H, W) if hasattr(self.encoder, "padded_size") else (H, W)
        feats = self.encoder(image, clicks, prev_mask)
        mask_features, multi_scale = self.pixel_decoder(feats)
        # CAMD uses the positive-click disks only (channel 1 of upstream's coord tensor, §1.4 step 1);
        # drawing them on the padded canvas equals zero-padding the input-size map
        pos_disks = disk_maps(clicks, (Hp, Wp), radius=self.click_radius)[:, 0] if self.decoder.click_aware else None
        out = self.decoder(multi_scale, mask_features, pos_disks)
        out["logits"] = merge_queries(out["pred_logits"], out["pred_masks"], (Hp, Wp))[..., :H, :W]
        out["padded_size"] = (Hp, Wp)  # lets the criterion pad targets (with ignore) to the canvas
        return out

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_train(image, clicks, prev_mask)["logits"]


class AdaptiveClickOptions(TypedDict, total=False):
    """Keyword options of every ``adaptiveclick_*`` builder; defaults and meaning: :func:`_build` and
    :class:`AdaptiveClickModel` (the size's builder may set others); ``pretrained`` is passed separately.
    ``click_aware: false`` is the "w/o CAMD" ablation (paper Table X).
    """

    img_size: int
    with_prev_mask: bool
    out_dims: list[int] | None
    conv_dim: int
    mask_dim: int
    enc_layers: int
    enc_heads: int
    enc_points: int
    enc_ffn: int
    num_queries: int
    dec_layers: int
    dec_heads: int
    dec_ffn: int
    click_aware: bool
    click_radius: float


def _build(variant: str, *, img_size: int = 448, pretrained: str | None = None, with_prev_mask: bool = True,
           out_dims: list[int] | None = None, **kwargs) -> AdaptiveClickModel:
    encoder = build_simpleclick_encoder(variant, img_size=img_size, pretrained=pretrained,
                                        with_prev_mask=with_prev_mask, out_dims=out_dims)
    return AdaptiveClickModel(encoder, **kwargs)


@register_model("adaptiveclick_vit_base", options=AdaptiveClickOptions, pretrained=MAE_WEIGHTS["base"])
def adaptiveclick_vit_base(**kwargs) -> AdaptiveClickModel:
    """ViT-B/16 at 448, FPN dims [256, 512, 1024, 2048] (§1.2); paper Table V: 116.41 M params."""
    kwargs.setdefault("out_dims", [256, 512, 1024, 2048])
    return _build("base", **kwargs)


@register_model("adaptiveclick_vit_huge", options=AdaptiveClickOptions, pretrained=MAE_WEIGHTS["huge"])
def adaptiveclick_vit_huge(**kwargs) -> AdaptiveClickModel:
    """ViT-H/14 at 448, FPN dims [512, ..., 4096] (§1.2)."""
    kwargs.setdefault("out_dims", [512, 1024, 2048, 4096])
    return _build("huge", **kwargs)


@register_model("adaptiveclick_test", options=AdaptiveClickOptions)
def adaptiveclick_test(**kwargs) -> AdaptiveClickModel:
    """Tiny CPU variant for tests: same topology (3 levels, 10 queries, 9 CAMD layers), small widths."""
    defaults = dict(img_size=64, conv_dim=32, mask_dim=32, enc_layers=1, enc_heads=4, enc_points=2, enc_ffn=64,
                    dec_heads=4, dec_ffn=64)
    defaults.update(kwargs)
    return _build("test", **defaults)
