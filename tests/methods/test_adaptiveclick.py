"""AdaptiveClick: deformable attention, matcher, click-aware mask, criterion, model (tiny variant)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iis.methods.adaptiveclick import (AdaptiveClickCriterion, ClickAwareMaskDecoder, HungarianMatcher,
                                       attention_mask, build_targets, click_open_mask, hungarian_assign,
                                       merge_queries, pairwise_afl_cost, pairwise_dice_cost, pool_clicks)
from iis.models.base import disk_maps
from iis.models.deform_attn import (MSDeformAttn, MSDeformAttnEncoder, ms_deform_attn_core,
                                    ms_deform_attn_naive)
from iis.models.losses import DiceLoss
from iis.models.registry import create_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- deformable attention
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deform_attn_core_matches_naive(dtype):
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4), (2, 2)]
    B, M, Dh, Lq, P = 2, 2, 3, 5, 3
    S = sum(h * w for h, w in shapes)
    value = torch.randn(B, S, M, Dh, generator=g, dtype=dtype)
    # include locations outside [0, 1] to exercise the zero padding
    loc = torch.rand(B, Lq, M, len(shapes), P, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(B, Lq, M, len(shapes), P, generator=g, dtype=dtype)
    fast = ms_deform_attn_core(value, shapes, loc, weights)
    ref = ms_deform_attn_naive(value, shapes, loc, weights)
    assert fast.shape == (B, Lq, M * Dh)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_deform_attn_core_rejects_bad_shapes():
    with pytest.raises(ValueError, match="spatial_shapes"):
        ms_deform_attn_core(torch.zeros(1, 10, 1, 2), [(3, 3)], torch.zeros(1, 1, 1, 1, 1, 2),
                            torch.zeros(1, 1, 1, 1, 1))


def test_msdeformattn_module_against_naive():
    torch.manual_seed(0)
    shapes = [(4, 6), (2, 3)]
    S = sum(h * w for h, w in shapes)
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2).double()
    for p in attn.parameters():  # non-trivial offsets/weights (the init zeroes their weights)
        p.data.normal_(0, 0.3)
    x = torch.randn(1, S, 8, dtype=torch.float64)
    ref = MSDeformAttnEncoder.reference_points(shapes, 1, x.device).double()
    out = attn(x, ref, x, shapes)
    # the module's arithmetic spelled out: offsets in pixels of each level, normalised by (W, H)
    value = attn.value_proj(x).view(1, S, 2, 4)
    off = attn.sampling_offsets(x).view(1, S, 2, 2, 2, 2)
    w = attn.attention_weights(x).view(1, S, 2, 4).softmax(-1).view(1, S, 2, 2, 2)
    norm = torch.tensor([[6.0, 4.0], [3.0, 2.0]], dtype=torch.float64)
    loc = ref[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
    expected = attn.output_proj(ms_deform_attn_naive(value, shapes, loc, w))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    # the reference point of pixel (row 1, col 2) of level 0 is its centre
    assert torch.allclose(ref[0, 1 * 6 + 2, 0], torch.tensor([2.5 / 6, 1.5 / 4], dtype=torch.float64))


# ---------------------------------------------------------------- matcher
@pytest.mark.parametrize("Q,M,seed", [(4, 2, 0), (5, 3, 1), (3, 3, 2), (6, 1, 3)])
def test_hungarian_equals_brute_force(Q, M, seed):
    cost = torch.rand(Q, M, generator=torch.Generator().manual_seed(seed))
    rows, cols = hungarian_assign(cost)
    best = min(itertools.permutations(range(Q), M), key=lambda qs: sum(cost[q, m] for m, q in enumerate(qs)))
    assert len(rows) == M
    assert {(int(r), int(c)) for r, c in zip(rows, cols)} == {(q, m) for m, q in enumerate(best)}


def test_hungarian_rejects_non_finite():
    with pytest.raises(ValueError, match="non-finite"):
        hungarian_assign(torch.tensor([[0.0, float("nan")]]))


def test_pairwise_dice_matches_dice_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 30, generator=g)
    t = (torch.rand(3, 30, generator=g) > 0.5).float()
    cost = pairwise_dice_cost(x, t)
    dice = DiceLoss(reduction="none")
    for n, m in itertools.product(range(4), range(3)):
        assert torch.allclose(cost[n, m], dice(x[n].view(1, 1, 30), t[m].view(1, 1, 30))[0], atol=1e-6)


def test_pairwise_afl_matches_per_pair_formula():
    # docs/methods.md §1.6, written per (n, m) with explicit pixel sums
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 25, generator=g, dtype=torch.float64)
    t = (torch.rand(2, 25, generator=g) > 0.6).double()
    cost = pairwise_afl_cost(x, t)
    p = x.sigmoid()
    pbar = torch.stack([torch.stack([(p[n] * t[m] + (1 - p[n]) * (1 - t[m])).mean() for m in range(2)])
                        for n in range(3)])
    gam = torch.stack([torch.stack([3 - (p[n] * t[m]).sum() / t[m].sum() for m in range(2)]) for n in range(3)])
    beta = (1 - pbar) ** gam
    for n, m in itertools.product(range(3), range(2)):
        mult = 2 / ((1 + 0.4 * gam[n, m]) * beta[n].sum())
        pos = F.binary_cross_entropy_with_logits(x[n], torch.ones(25, dtype=torch.float64), reduction="none")
        neg = F.binary_cross_entropy_with_logits(x[n], torch.zeros(25, dtype=torch.float64), reduction="none")
        base = (0.5 * pos * t[m] + 0.5 * neg * (1 - t[m])).mean()
        assert torch.allclose(cost[n, m], mult * beta[n, m] * base + 0.5 * (beta[n, m] + 1), atol=1e-9)


def test_matcher_picks_the_query_that_fits():
    masks = torch.full((1, 5, 8, 8), -6.0)
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 1:5] = 1
    masks[0, 3] = torch.where(target[0] > 0, 6.0, -6.0)  # query 3 predicts the target
    logits = torch.zeros(1, 5, 2)
    (q, m), = HungarianMatcher()({"pred_logits": logits, "pred_masks": masks},
                                 [{"labels": torch.tensor([1]), "masks": target}])
    assert q.tolist() == [3] and m.tolist() == [0]


# ---------------------------------------------------------------- click-aware attention mask
def _expected_pooled_open(disk: np.ndarray, n: int, size: int) -> np.ndarray:
    """n rounds of MaxPool(3, 2, 1): output i sees input rows/cols [2^n i - (2^n - 1), 2^n i + (2^n - 1)]."""
    r = 2 ** n - 1
    out = np.zeros((size, size), bool)
    for i, j in itertools.product(range(size), range(size)):
        y0, x0 = max(0, 2 ** n * i - r), max(0, 2 ** n * j - r)
        out[i, j] = disk[y0:2 ** n * i + r + 1, x0:2 ** n * j + r + 1].any()
    return out


def test_click_open_mask_levels_and_queries():
    clicks = torch.tensor([[[20.0, 37.0, 1.0], [50.0, 10.0, 0.0], [-1.0, -1.0, -1.0]]])
    disks = disk_maps(clicks, (64, 64), radius=5)
    pos = disks[:, 0]
    logits = torch.tensor([[[0.0, 2.0], [3.0, -1.0], [-1.0, 1.0]]])  # queries 0 and 2 are "target"
    for n, size in ((3, 8), (4, 4), (5, 2)):
        opened = click_open_mask(logits, pool_clicks(pos, (size, size)))
        expected = torch.from_numpy(_expected_pooled_open(pos[0].numpy() > 0, n, size))
        assert expected.any() and not expected.all()
        assert torch.equal(opened[0, 0], expected) and torch.equal(opened[0, 2], expected)
        assert not opened[0, 1].any()
        # the negative click opens nothing
        neg_only = click_open_mask(logits, pool_clicks(disks[:, 1] * 0, (size, size)))
        assert not neg_only.any()


@pytest.mark.parametrize("target_bias,opens", [((0.0, 5.0), True), ((5.0, 0.0), False)])
def test_camd_attention_mask_union(target_bias, opens):
    dec = ClickAwareMaskDecoder(dim=16, num_queries=3, n_heads=2, ffn_dim=16, num_layers=3, mask_dim=16)
    with torch.no_grad():  # every predicted mask is background, class fixed by the bias
        dec.mask_embed.layers[-1].weight.zero_()
        dec.mask_embed.layers[-1].bias.fill_(-1.0)
        dec.class_embed.weight.zero_()
        dec.class_embed.bias.copy_(torch.tensor(target_bias))
    pos = disk_maps(torch.tensor([[[30.0, 9.0, 1.0]]]), (64, 64))[:, 0]
    x = torch.randn(1, 3, 16)
    _, _, blocked = dec.prediction_heads(x, torch.ones(1, 16, 16, 16), (4, 4), pool_clicks(pos, (4, 4)))
    expected_open = torch.from_numpy(_expected_pooled_open(pos[0].numpy() > 0, 4, 4))
    for q in range(3):
        assert torch.equal(~blocked[0, q], expected_open if opens else torch.zeros(4, 4, dtype=torch.bool))


def test_attention_mask_reopens_fully_blocked_queries():
    blocked = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    blocked[0, 1] = True  # fully blocked -> reopened
    blocked[1, 2, 0, 0] = True  # partly blocked -> kept
    mask = attention_mask(blocked, n_heads=2)
    assert mask.shape == (4, 3, 4)
    assert not mask[:2].any()  # image 0, both heads
    for h in (2, 3):  # image 1, both heads
        assert mask[h, 2].tolist() == [True, False, False, False] and not mask[h, :2].any()


# ---------------------------------------------------------------- criterion
def _fake_outputs(B=2, Q=10, h=16, w=16, n_aux=9, seed=0):
    g = torch.Generator().manual_seed(seed)

    def one():
        return {"pred_logits": torch.randn(B, Q, 2, generator=g).requires_grad_(),
                "pred_masks": torch.randn(B, Q, h, w, generator=g).requires_grad_()}
    out = one()
    out["aux_outputs"] = [one() for _ in range(n_aux)]
    return out


def _gt(B=2, size=64):
    gt = torch.zeros(B, 1, size, size)
    gt[:, :, 10:40, 10:40] = 1
    return gt


def test_criterion_terms_and_weights():
    out, gt = _fake_outputs(), _gt()
    crit = AdaptiveClickCriterion()
    total, terms = crit(out, gt)
    for base in ("loss_ce", "loss_afl", "loss_dice"):
        assert len([k for k in terms if k == base or k.startswith(base + "_")]) == 1 + 9
    assert len(terms) == 30
    expected = sum({"loss_ce": 0.3 * 2.0, "loss_dice": 0.3 * 5.0, "loss_afl": 0.4 * 5.0}[k.rsplit("_", 1)[0]
                   if k.count("_") == 2 else k] * v for k, v in terms.items())
    assert torch.allclose(total, expected)
    total.backward()
    assert all(a["pred_masks"].grad is not None for a in out["aux_outputs"])
    paper_total, _ = AdaptiveClickCriterion(group_mix=(1, 1, 1))(out, gt)
    assert not torch.allclose(paper_total, total)
    _, final_only = AdaptiveClickCriterion(deep_supervision=False)(out, gt)
    assert set(final_only) == {"loss_ce", "loss_afl", "loss_dice"}


def test_targets_fixed_vs_faithful():
    gt = _gt(B=1)
    fixed = build_targets(gt, (16, 16), "fixed")[0]
    assert fixed["labels"].tolist() == [1]
    block_fg = gt[0, 0].view(16, 4, 16, 4).mean((1, 3)) >= 0.5
    assert torch.equal(fixed["masks"][0] > 0, block_fg)
    faithful = build_targets(gt, (16, 16), "faithful")[0]
    # edges at 10 (not a multiple of 4) give soft values {0.25, 0.5}: two extra background copies
    assert faithful["labels"].tolist() == [0, 0, 1]
    soft = F.interpolate(gt, size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    assert torch.equal(faithful["masks"][2] > 0, soft == 1)
    assert torch.equal(faithful["masks"][0] > 0, soft < 1)
    assert not build_targets(torch.zeros(1, 1, 64, 64), (16, 16), "fixed")[0]["labels"].numel()


def test_class_weight_modes():
    assert AdaptiveClickCriterion().ce_weight.tolist() == pytest.approx([0.1, 1.0])
    assert AdaptiveClickCriterion(class_weights="faithful").ce_weight.tolist() == pytest.approx([1.0, 0.1])
    with pytest.raises(ValueError, match="targets"):
        AdaptiveClickCriterion(targets="upstream")


def test_criterion_ignores_ignored_pixels():
    out, gt = _fake_outputs(n_aux=0), _gt()
    gt[:, :, 44:, :] = -1  # rows 11..15 at 1/4 are ignored
    crit = AdaptiveClickCriterion()
    _, terms = crit(out, gt)
    changed = {"pred_logits": out["pred_logits"].detach(), "pred_masks": out["pred_masks"].detach().clone()}
    changed["pred_masks"][:, :, 12:, :] += 5.0
    _, terms2 = crit(changed, gt)
    for k in ("loss_afl", "loss_dice"):
        assert torch.allclose(terms[k], terms2[k])
    _, terms3 = crit(changed, _gt())  # without ignore the change matters
    assert not torch.allclose(terms["loss_afl"], terms3["loss_afl"])


# ---------------------------------------------------------------- model
def test_merge_matches_upstream_order():
    g = torch.Generator().manual_seed(0)
    logits, masks = torch.randn(2, 4, 2, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    up = F.interpolate(masks, size=(32, 32), mode="bilinear", align_corners=True)
    expected = (logits[..., 1].sigmoid()[..., None, None] * up).sum(1, keepdim=True)
    torch.testing.assert_close(merge_queries(logits, masks, (32, 32)), expected, atol=1e-5, rtol=1e-5)


def test_test_model_forward_backward():
    torch.manual_seed(0)
    model = create_model("adaptiveclick_test")
    image = torch.rand(2, 3, 64, 64)
    clicks = torch.tensor([[[20.0, 30.0, 1.0], [50.0, 50.0, 0.0]], [[30.0, 12.0, 1.0], [-1.0, -1.0, -1.0]]])
    prev = torch.zeros(2, 1, 64, 64)
    out = model.forward_train(image, clicks, prev)
    assert out["logits"].shape == (2, 1, 64, 64)
    assert out["pred_logits"].shape == (2, 10, 2) and out["pred_masks"].shape == (2, 10, 16, 16)
    assert len(out["aux_outputs"]) == 9
    torch.testing.assert_close(out["logits"], merge_queries(out["pred_logits"], out["pred_masks"], (64, 64)))
    total, _ = AdaptiveClickCriterion()(out, _gt())
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []  # no exceptions: every parameter gets a finite gradient
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(image, clicks, prev), model.forward_train(image, clicks, prev)["logits"])


def test_test_model_unpadded_size():
    model = create_model("adaptiveclick_test").eval()
    image, prev = torch.rand(1, 3, 56, 72), torch.zeros(1, 1, 56, 72)
    clicks = torch.tensor([[[10.0, 20.0, 1.0]]])
    out = model.forward_train(image, clicks, prev)
    assert out["logits"].shape == (1, 1, 56, 72) and out["padded_size"] == (64, 80)
    total, _ = AdaptiveClickCriterion()(out, torch.ones(1, 1, 56, 72))
    assert torch.isfinite(total)


def test_vit_base_param_count():
    with torch.device("meta"):
        model = create_model("adaptiveclick_vit_base")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 116.41e6 - 1) < 0.05, n  # paper Table V
