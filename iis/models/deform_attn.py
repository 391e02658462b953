"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, plus the encoder built on it.

The sampling uses ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``), the same
path the AdaptiveClick release actually runs (methods.md §1.3: its CUDA op call is commented out),
so no custom kernel is needed. :func:`ms_deform_attn_naive` is an explicit loop implementation
that the tests use as a reference.

Conventions (Deformable DETR): sampling locations are normalised ``(x, y)`` in [0, 1] with (0, 0) the
top-left corner of the top-left pixel and (1, 1) the bottom-right corner of the last one; spatial
shapes are ``(H, W)`` per level and the flattened value concatenates levels in that order.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ms_deform_attn_core", "ms_deform_attn_naive", "MSDeformAttn", "MSDeformAttnEncoderLayer",
           "MSDeformAttnEncoder", "sine_position_encoding"]

Shapes = Sequence[tuple[int, int]]


def _check_shapes(value: torch.Tensor, spatial_shapes: Shapes) -> list[tuple[int, int]]:
    shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    total = sum(h * w for h, w in shapes)
    if value.shape[1] != total:
        raise ValueError(f"value has {value.shape[1]} positions but spatial_shapes {shapes} sum to {total}")
    return shapes


def ms_deform_attn_core(value: torch.Tensor, spatial_shapes: Shapes, sampling_locations: torch.Tensor,
                        attention_weights: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of every level at the given locations, summed with the attention weights.

    Args:
        value: ``(B, S, M, Dh)`` per-head values, ``S = sum(H_l * W_l)``.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)``.
        sampling_locations: ``(B, Lq, M, L, P, 2)`` normalised ``(x, y)``.
        attention_weights: ``(B, Lq, M, L, P)``.

    Returns:
        ``(B, Lq, M * Dh)``.
    """
    shapes = _check_shapes(value, spatial_shapes)
    B, _, M, Dh = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    if L != len(shapes):
        raise ValueError(f"sampling_locations has {L} levels but spatial_shapes has {len(shapes)}")
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(B * M, Dh, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*M, Dh, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(B * M, 1, Lq, L * P)
    out = (stacked * weights).sum(-1)  # (B*M, Dh, Lq)
    return out.view(B, M * Dh, Lq).transpose(1, 2).contiguous()


def ms_deform_attn_naive(value: torch.Tensor, spatial_shapes: Shapes, sampling_locations: torch.Tensor,
                         attention_weights: torch.Tensor) -> torch.Tensor:
    """Loop reference of :func:`ms_deform_attn_core` (explicit bilinear interpolation; tests only)."""
    shapes = _check_shapes(value, spatial_shapes)
    B, _, M, Dh = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    locs = sampling_locations.detach().tolist()
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = value.new_zeros(B, Lq, M, Dh)
    for b in range(B):
        for q in range(Lq):
            for m in range(M):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(P):
                        # pixel centres sit at integer + 0.5 in normalised-times-size units
                        x = locs[b][q][m][lvl][p][0] * w - 0.5
                        y = locs[b][q][m][lvl][p][1] * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = value.new_zeros(Dh)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:  # zero padding outside
                                    acc = acc + wy * wx * value[b, starts[lvl] + yy * w + xx, m]
                        out[b, q, m] += attention_weights[b, q, m, lvl, p] * acc
    return out.view(B, Lq, M * Dh)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Zhu et al., Deformable DETR, Eq. 3).

    Args:
        d_model: feature width (256 in Mask2Former / AdaptiveClick, docs/methods.md §1.3).
        n_levels: number of feature levels.
        n_heads: attention heads (8).
        n_points: sampling points per head and level (4).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 3, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Deformable DETR init: zero offset weights; biases put point k of head m at distance k along
        # direction 2*pi*m/M, so the initial sampling pattern is a star around the reference point
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value_in: torch.Tensor,
                spatial_shapes: Shapes, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            query: ``(B, Lq, C)`` (already with positional encoding added).
            reference_points: ``(B, Lq, L, 2)`` normalised ``(x, y)``.
            value_in: ``(B, S, C)`` flattened multi-level features.
            spatial_shapes: ``L`` pairs ``(H_l, W_l)``.
            padding_mask: optional ``(B, S)`` bool, True where the value is padding.

        Returns:
            ``(B, Lq, C)``.
        """
        B, Lq, _ = query.shape
        S = value_in.shape[1]
        M, L, P = self.n_heads, self.n_levels, self.n_points
        if len(spatial_shapes) != L:
            raise ValueError(f"spatial_shapes has {len(spatial_shapes)} levels, module was built for {L}")
        value = self.value_proj(value_in)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(B, S, M, self.d_model // M)
        offsets = self.sampling_offsets(query).view(B, Lq, M, L, P, 2)
        weights = self.attention_weights(query).view(B, Lq, M, L * P).softmax(-1).view(B, Lq, M, L, P)
        # offsets are in pixels of each level: divide by (W, H) to normalise
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_core(value, spatial_shapes, locations, weights))


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention, then a ReLU FFN (Mask2Former pixel decoder)."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, n_levels: int = 3, n_heads: int = 8,
                 n_points: int = 4, dropout: float = 0.0):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: Shapes) -> torch.Tensor:
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, reference_points, src, spatial_shapes)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class MSDeformAttnEncoder(nn.Module):
    """Stack of :class:`MSDeformAttnEncoderLayer` over flattened multi-level features (no padding)."""

    def __init__(self, num_layers: int = 4, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(MSDeformAttnEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    @staticmethod
    def reference_points(spatial_shapes: Shapes, batch: int, device: torch.device) -> torch.Tensor:
        """Pixel centres of every level, normalised: ``(B, S, L, 2)`` (same point for all levels)."""
        refs = []
        for h, w in spatial_shapes:
            ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
            xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            refs.append(torch.stack([gx.flatten(), gy.flatten()], -1))
        ref = torch.cat(refs, 0)
        return ref[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, spatial_shapes: Shapes) -> torch.Tensor:
        """``src``, ``pos``: ``(B, S, C)``; returns ``(B, S, C)``."""
        ref = self.reference_points(spatial_shapes, src.shape[0], src.device).to(src.dtype)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes)
        return src


def sine_position_encoding(x: torch.Tensor, num_pos_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine encoding (scale 2*pi) of a ``(B, C, H, W)`` map -> ``(B, 2*num_pos_feats, H, W)``.

    Channels are ``[y features, x features]``, each interleaving sin/cos, as in Mask2Former.
    """
    B, _, H, W = x.shape
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, H + 1, device=x.device, dtype=torch.float32).view(H, 1).expand(H, W)
    xx = torch.arange(1, W + 1, device=x.device, dtype=torch.float32).view(1, W).expand(H, W)
    y = y / (H + eps) * scale
    xx = xx / (W + eps) * scale
    dim_t = torch.arange(num_pos_feats, device=x.device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    px, py = xx[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=-1).flatten(-2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=-1).flatten(-2)
    pos = torch.cat((py, px), dim=-1).permute(2, 0, 1)
    return pos.unsqueeze(0).expand(B, -1, -1, -1).to(x.dtype)
