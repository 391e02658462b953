"""SimpleClick model: contract, windowed attention, position embedding, MAE loading, size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iis.methods.simpleclick import SimpleClickModel, build_simpleclick_encoder
from iis.models import create_model
from iis.models.vit import Block, VisionTransformer, default_global_blocks, load_mae_checkpoint


def _inputs(B=2, H=64, W=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(B, 3, H, W, generator=g)
    clicks = torch.tensor([[[10.0, 20.0, 1.0], [40.0, 30.0, 0.0], [-1, -1, -1]],
                           [[5.0, 5.0, 1.0], [-1, -1, -1], [-1, -1, -1]]])[:B]
    prev = torch.rand(B, 1, H, W, generator=g)
    return image, clicks, prev


@pytest.mark.parametrize("with_prev_mask", [True, False])
def test_forward_backward_every_param_gets_grad(with_prev_mask):
    torch.manual_seed(0)
    model = create_model("simpleclick_vit_test", with_prev_mask=with_prev_mask)
    image, clicks, prev = _inputs()
    out = model(image, clicks, prev if with_prev_mask else None)
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    assert model.encoder.patch_embed_coords.proj.in_channels == (3 if with_prev_mask else 2)


def test_inputs_matter_and_eval_is_deterministic():
    torch.manual_seed(0)
    model = create_model("simpleclick_vit_test").eval()
    image, clicks, prev = _inputs()
    with torch.no_grad():
        a, b = model(image, clicks, prev), model(image, clicks, prev)
        other_prev = model(image, clicks, 1 - prev)
        other_clicks = model(image, clicks.flip(0), prev)  # swap the samples' clicks
        none_prev = model(image, clicks, None)
        zero_prev = model(image, clicks, torch.zeros_like(prev))
    assert torch.equal(a, b)
    assert not torch.allclose(a, other_prev) and not torch.allclose(a, other_clicks)
    assert torch.allclose(none_prev, zero_prev)  # None == "no previous mask yet" == zeros


def test_without_prev_mask_ignores_it():
    model = create_model("simpleclick_vit_test", with_prev_mask=False).eval()
    image, clicks, prev = _inputs()
    with torch.no_grad():
        assert torch.allclose(model(image, clicks, prev), model(image, clicks, None))


def test_encoder_interface_shapes():
    enc = build_simpleclick_encoder("test", img_size=64)
    image, clicks, prev = _inputs(H=64, W=96)
    tokens = enc.forward_tokens(image, clicks, prev)
    assert tokens.shape == (2, enc.embed_dim, 4, 6)
    feats = enc(image, clicks, prev)
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // s, 96 // s)
                                               for c, s in zip(enc.out_dims, (4, 8, 16, 32))]
    assert enc.patch_size == 16


@pytest.mark.parametrize("size", [(96, 64), (70, 50), (448, 448)])
def test_non_square_odd_and_squash_sizes(size):
    model = create_model("simpleclick_vit_test").eval()
    image, clicks, prev = _inputs(B=1, H=size[0], W=size[1])
    with torch.no_grad():
        out = model(image, clicks, prev)
    assert out.shape == (1, 1, *size) and torch.isfinite(out).all()


def test_bad_inputs_raise_clear_errors():
    model = create_model("simpleclick_vit_test")
    image, clicks, prev = _inputs()
    with pytest.raises(ValueError, match="image"):
        model(image[:, :2], clicks, prev)
    with pytest.raises(ValueError, match="clicks"):
        model(image, clicks[..., :2], prev)
    with pytest.raises(ValueError, match="prev_mask"):
        model(image, clicks, prev[..., :32])
    with pytest.raises(ValueError, match="variant"):
        build_simpleclick_encoder("tiny")


def test_global_block_schedule():
    # docs/protocol.md §D.4 (1-based): B 6,12; L 6,12,18,24; H 8,16,24,32; xT 2,4,6,8
    assert default_global_blocks(12) == (5, 11)
    assert default_global_blocks(24) == (5, 11, 17, 23)
    assert default_global_blocks(32) == (7, 15, 23, 31)
    assert default_global_blocks(8) == (1, 3, 5, 7)
    vit = VisionTransformer(64, 16, embed_dim=32, depth=8, num_heads=2, window_size=2)
    assert [b.window_size for b in vit.blocks] == [2, None] * 4


def test_windowed_equals_global_when_grid_is_one_window():
    torch.manual_seed(0)
    glob = Block(32, 2, window_size=None)
    win = Block(32, 2, window_size=4)
    win.load_state_dict(glob.state_dict())
    x = torch.randn(2, 4, 4, 32)
    assert torch.allclose(glob(x), win(x), atol=1e-5)
    # a 4x4 grid split into 2x2 windows is no longer global attention
    win.window_size = 2
    assert not torch.allclose(glob(x), win(x), atol=1e-3)


def test_windowed_padding_masks_padded_tokens():
    """A 3x5 grid with 2x2 windows is padded to 4x6; each window must equal attention on its valid part."""
    torch.manual_seed(0)
    glob = Block(32, 2, window_size=None)
    win = Block(32, 2, window_size=2)
    win.load_state_dict(glob.state_dict())
    x = torch.randn(1, 3, 5, 32)
    y = win(x)
    assert y.shape == x.shape
    for r, c in [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(4, 5)), (slice(2, 3), slice(2, 4)),
                 (slice(2, 3), slice(4, 5))]:
        assert torch.allclose(y[:, r, c], glob(x[:, r, c]), atol=1e-5)


def test_pos_embed_interpolation_and_cache():
    torch.manual_seed(0)
    vit = VisionTransformer(64, 16, embed_dim=8, depth=1, num_heads=2, window_size=2)
    assert vit.grid_size == (4, 4)
    assert vit.pos_embed_for((4, 4)) is vit.pos_embed
    grid = vit.pos_embed.detach().reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(6, 3), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 18, 8)
    with torch.no_grad():
        p1 = vit.pos_embed_for((6, 3))
        assert vit.pos_embed_for((6, 3)) is p1  # cached
    assert torch.allclose(p1, ref, atol=1e-6)
    assert vit.pos_embed.shape == (1, 16, 8)  # stored parameter untouched
    sd = vit.state_dict()
    sd["pos_embed"] = sd["pos_embed"] + 1
    vit.load_state_dict(sd)
    with torch.no_grad():
        p2 = vit.pos_embed_for((6, 3))
    assert torch.allclose(p2, p1 + 1, atol=1e-5)  # new weights invalidate the cache
    # with gradients the interpolation is differentiable w.r.t. the stored embedding
    vit.pos_embed_for((6, 3)).sum().backward()
    assert vit.pos_embed.grad is not None and vit.pos_embed.grad.abs().sum() > 0


def _save_mae(path, vit: VisionTransformer, grid: int = 14, drop: str | None = None, **override):
    """Save ``vit``'s weights in MAE's layout: class token, (1, 1+grid^2, D) pos_embed, norm/fc_norm/head."""
    D = vit.embed_dim
    sd = {k: v.clone() for k, v in vit.state_dict().items() if k != "pos_embed"}
    sd.update({"cls_token": torch.randn(1, 1, D), "pos_embed": torch.randn(1, 1 + grid * grid, D),
               "norm.weight": torch.ones(D), "norm.bias": torch.zeros(D), "fc_norm.weight": torch.ones(D),
               "fc_norm.bias": torch.zeros(D), "head.weight": torch.randn(10, D), "head.bias": torch.zeros(10)})
    sd.update(override)
    if drop:
        del sd[drop]
    torch.save({"model": sd}, path)
    return sd


def test_mae_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    src = VisionTransformer(224, 16, embed_dim=32, depth=2, num_heads=2, window_size=14)
    sd = _save_mae(tmp_path / "mae.pth", src)
    dst = VisionTransformer(64, 16, embed_dim=32, depth=2, num_heads=2, window_size=2)
    report = load_mae_checkpoint(dst, tmp_path / "mae.pth")
    assert set(report.dropped) == {"cls_token", "norm.weight", "norm.bias", "fc_norm.weight", "fc_norm.bias",
                                   "head.weight", "head.bias"}
    assert report.unexpected == [] and report.pos_embed_resized == ((14, 14), (4, 4))
    for k, v in dst.state_dict().items():
        if k != "pos_embed":
            assert torch.equal(v, sd[k]), k
    grid = sd["pos_embed"][:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 16, 32)
    assert torch.allclose(dst.pos_embed, ref, atol=1e-6)


def test_mae_checkpoint_errors(tmp_path):
    vit = VisionTransformer(64, 16, embed_dim=32, depth=2, num_heads=2, window_size=2)
    _save_mae(tmp_path / "missing.pth", vit, drop="blocks.1.attn.qkv.weight")
    with pytest.raises(KeyError, match=r"missing\.pth.*blocks\.1\.attn\.qkv\.weight"):
        load_mae_checkpoint(vit, tmp_path / "missing.pth")
    _save_mae(tmp_path / "shape.pth", vit, **{"patch_embed.proj.weight": torch.randn(32, 3, 14, 14)})
    with pytest.raises(ValueError, match=r"shape\.pth.*patch_embed\.proj\.weight"):
        load_mae_checkpoint(vit, tmp_path / "shape.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_mae_checkpoint(vit, tmp_path / "nope.pth")


def test_build_encoder_with_pretrained_mae(tmp_path):
    torch.manual_seed(0)
    enc = build_simpleclick_encoder("test", img_size=64)
    sd = _save_mae(tmp_path / "mae_test.pth", enc.backbone)
    enc2 = build_simpleclick_encoder("test", img_size=64, pretrained=str(tmp_path / "mae_test.pth"))
    assert torch.equal(enc2.backbone.blocks[3].mlp.fc2.weight, sd["blocks.3.mlp.fc2.weight"])
    fresh = build_simpleclick_encoder("test", img_size=64)
    assert not torch.equal(enc2.backbone.blocks[3].mlp.fc2.weight, fresh.backbone.blocks[3].mlp.fc2.weight)


def test_vit_base_parameter_count():
    """docs/protocol.md §D.4: direct count of SimpleClick ViT-B is about 98.0M; ours must be within 3%."""
    with torch.device("meta"):
        model = create_model("simpleclick_vit_base")
    assert isinstance(model, SimpleClickModel)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 98.0e6) / 98.0e6 < 0.03, n
