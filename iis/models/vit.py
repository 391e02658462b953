"""Plain (MAE-style) ViT with windowed + global attention blocks, as used by SimpleClick.

The backbone follows docs/protocol.md §D.4: pre-LN blocks, qkv bias, MLP ratio 4, GELU, LayerNorm eps 1e-6,
no drop-path, no dropout, no class token in the forward path and no final norm. Most blocks attend within
non-overlapping windows of ``window_size`` tokens per side; the blocks in ``global_blocks`` attend over
the whole grid.

Position embeddings are stored (without a class token) for the grid the model is built for
(``img_size / patch_size``, e.g. 28x28 at 448 with patch 16, the grid of SimpleClick's checkpoints) and
bicubically interpolated to any other token grid at run time; the stored parameter is never changed.

Parameter names match MAE's (``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,
mlp.fc1,mlp.fc2}``, ``pos_embed``), so :func:`load_mae_checkpoint` copies an MAE ``checkpoint['model']``
with only the class token, final norm, ``fc_norm`` and classifier dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchEmbed", "Attention", "Block", "VisionTransformer", "interpolate_pos_embed",
           "load_mae_checkpoint", "MAELoadReport", "default_global_blocks"]


def default_global_blocks(depth: int) -> tuple[int, ...]:
    """0-based indices of global-attention blocks: every g-th block, g = 6 if depth == 12 else depth / 4.

    docs/protocol.md §D.4 (SimpleClick ``forward_backbone``): B -> 6, 12; L -> 6, 12, 18, 24; H -> 8, 16, 24, 32;
    xT -> 2, 4, 6, 8 (1-based).
    """
    g = 6 if depth == 12 else max(depth // 4, 1)
    return tuple(i for i in range(depth) if (i + 1) % g == 0)


def interpolate_pos_embed(pos: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize a position embedding ``(1, src_h*src_w, D)`` to ``(1, dst_h*dst_w, D)``.

    Same operation as MAE's ``interpolate_pos_embed`` (bicubic, ``align_corners=False``).
    """
    if tuple(src) == tuple(dst):
        return pos
    D = pos.shape[-1]
    grid = pos.reshape(1, src[0], src[1], D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(dst), mode="bicubic", align_corners=False).to(pos.dtype)
    return grid.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], D)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: ``(B, C, H, W) -> (B, D, H/p, W/p)`` (Conv2d, kernel = stride = p)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention over ``(B, L, D)`` tokens, optional boolean key mask ``(B, 1, 1, L)``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=key_mask)
        return self.proj(x.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
    """``(B, h, w, D)`` -> windows ``(B*nW, ws*ws, D)``, key mask for padded tokens (or None), padded size.

    The grid is zero-padded at the bottom/right to a multiple of ``ws``; padded tokens are masked out as
    keys, so valid tokens attend exactly to the valid tokens of their window.
    """
    B, h, w, D = x.shape
    ph, pw = -h % ws, -w % ws
    mask = None
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
        valid = torch.zeros(h + ph, w + pw, dtype=torch.bool, device=x.device)
        valid[:h, :w] = True
        valid = valid.view((h + ph) // ws, ws, (w + pw) // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
        mask = valid.repeat(B, 1)[:, None, None, :]  # (B*nW, 1, 1, ws*ws): broadcast over heads and queries
    Hp, Wp = h + ph, w + pw
    x = x.view(B, Hp // ws, ws, Wp // ws, ws, D).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, D)
    return x, mask, (Hp, Wp)


def _window_unpartition(x: torch.Tensor, ws: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: ``(B*nW, ws*ws, D)`` -> ``(B, h, w, D)``."""
    Hp, Wp = padded
    D = x.shape[-1]
    B = x.shape[0] // ((Hp // ws) * (Wp // ws))
    x = x.view(B, Hp // ws, Wp // ws, ws, ws, D).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, D)
    return x[:, : size[0], : size[1]]


class Block(nn.Module):
    """Pre-LN transformer block on a token grid ``(B, h, w, D)``; windowed when ``window_size`` is set."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 window_size: int | None = None):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # eps 1e-6: MAE / docs/protocol.md §D.4
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, h, w, D = x.shape
        y = self.norm1(x)
        ws = self.window_size
        if ws is None:
            y = self.attn(y.reshape(B, h * w, D)).view(B, h, w, D)
        else:
            win, mask, padded = _window_partition(y, ws)
            y = _window_unpartition(self.attn(win, mask), ws, padded, (h, w))
        x = x + y
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Plain ViT backbone on patch tokens (no class token, no final norm).

    Args:
        img_size: size (int or (H, W)) the stored position embedding is laid out for; other sizes are
            handled by bicubic interpolation of the embedding.
        patch_size: patch side p (16 for B/L/xT, 14 for H).
        in_chans: image channels.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the usual ViT sizes.
        window_size: window side in tokens for non-global blocks (SimpleClick: 224 // p); None = all global.
        global_blocks: 0-based indices of global blocks; default :func:`default_global_blocks`.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, window_size: int | None = None,
                 global_blocks: tuple[int, ...] | None = None):
        super().__init__()
        hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if hw[0] % patch_size or hw[1] % patch_size:
            raise ValueError(f"img_size={img_size} must be a multiple of patch_size={patch_size}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.grid_size = (hw[0] // patch_size, hw[1] // patch_size)
        self.window_size = window_size
        self.global_blocks = tuple(default_global_blocks(depth) if global_blocks is None else global_blocks)
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, None if i in self.global_blocks else window_size)
            for i in range(depth))
        self._pos_cache: dict = {}
        self._init_weights()

    def _init_weights(self) -> None:
        # timm/MAE ViT init for training from scratch (xT); MAE weights overwrite it for B/L/H
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding ``(1, h*w, D)`` for a token grid ``(h, w)``.

        Interpolated results are cached per grid when no gradient is needed (inference); the cache key
        includes the parameter's version counter, so loading new weights invalidates it.
        """
        grid = tuple(grid)
        if grid == self.grid_size:
            return self.pos_embed
        if torch.is_grad_enabled() and self.pos_embed.requires_grad:
            return interpolate_pos_embed(self.pos_embed, self.grid_size, grid)
        p = self.pos_embed
        key = (grid, p.device, p.dtype, p._version, p.data_ptr())
        if key not in self._pos_cache:
            self._pos_cache.clear()  # one entry per grid only while weights are unchanged
            self._pos_cache[key] = interpolate_pos_embed(p.detach(), self.grid_size, grid)
        return self._pos_cache[key]

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Run all blocks on a token grid ``(B, h, w, D)`` -> ``(B, h, w, D)``."""
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward(self, x: torch.Tensor, extra_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Image ``(B, C, H, W)`` (H, W multiples of p) -> feature map ``(B, D, H/p, W/p)``.

        Args:
            x: normalised image.
            extra_tokens: optional ``(B, D, H/p, W/p)`` added to the patch tokens before the position
                embedding (SimpleClick's coordinate patch embedding).
        """
        t = self.patch_embed(x)
        if extra_tokens is not None:
            t = t + extra_tokens
        B, D, h, w = t.shape
        t = t.flatten(2).transpose(1, 2) + self.pos_embed_for((h, w))
        t = self.forward_blocks(t.reshape(B, h, w, D))
        return t.permute(0, 3, 1, 2).contiguous()


@dataclass
class MAELoadReport:
    """What :func:`load_mae_checkpoint` did: loaded keys, dropped MAE-only keys, keys not used."""

    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    pos_embed_resized: tuple[tuple[int, int], tuple[int, int]] | None = None


# MAE entries with no counterpart in the forward path used here (protocol.md §D.4)
_MAE_DROP = ("cls_token", "norm.", "fc_norm.", "head.", "mask_token", "decoder_")


def load_mae_checkpoint(vit: VisionTransformer, path: str | Path) -> MAELoadReport:
    """Load MAE weights (``torch.load(path)['model']``) into ``vit``, in place.

    ``pos_embed`` may hold a class-token row (``1 + s*s`` rows, MAE's layout) and any square or stored
    grid; it is bicubically resized to ``vit.grid_size``. The class token, final ``norm``, ``fc_norm``,
    ``head`` and MAE decoder entries are dropped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        KeyError: a parameter of ``vit`` has no entry in the checkpoint.
        ValueError: a shape differs (e.g. wrong width or patch size), or the file is not an MAE checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MAE checkpoint {str(path)!r} does not exist")
    from iis.core.safe_load import safe_load  # never runs code from the file; pickled extras
    # (argparse.Namespace, ...) become inert stand-ins

    ckpt = safe_load(path, what="MAE checkpoint")
    sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{str(path)!r}: expected a dict with a 'model' state dict of tensors (MAE format)")
    report = MAELoadReport()
    own = vit.state_dict()
    new = {}
    for k, v in sd.items():
        if k.startswith(_MAE_DROP):
            report.dropped.append(k)
        elif k not in own:
            report.unexpected.append(k)
        else:
            new[k] = v
    missing = [k for k in own if k not in new]
    if missing:
        raise KeyError(f"{str(path)!r} lacks {len(missing)} required key(s) for this ViT, e.g. {missing[:5]}")
    if "pos_embed" in new:
        pos = new["pos_embed"]
        if pos.ndim != 3 or pos.shape[-1] != vit.embed_dim:
            raise ValueError(f"{str(path)!r}: key 'pos_embed' has shape {tuple(pos.shape)}, expected "
                             f"(1, N, {vit.embed_dim})")
        n = pos.shape[1]
        s = math.isqrt(n - 1)
        if s * s == n - 1:  # MAE layout: class-token row first
            pos, src = pos[:, 1:], (s, s)
        elif n == vit.grid_size[0] * vit.grid_size[1]:
            src = vit.grid_size
        elif math.isqrt(n) ** 2 == n:
            src = (math.isqrt(n),) * 2
        else:
            raise ValueError(f"{str(path)!r}: key 'pos_embed' has {n} rows, not 1 + s*s nor s*s")
        if src != vit.grid_size:
            report.pos_embed_resized = (src, vit.grid_size)
        new["pos_embed"] = interpolate_pos_embed(pos, src, vit.grid_size)
    for k, v in new.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{str(path)!r}: key {k!r} has shape {tuple(v.shape)}, this ViT expects "
                             f"{tuple(own[k].shape)}")
    vit.load_state_dict(new, strict=True)
    report.loaded = sorted(new)
    return report
