"""Loss zoo: hand-computed values on 3-4 pixels, ignore handling, gradients, AFL special cases, NFL."""

from __future__ import annotations

import math

import pytest
import torch

from iis.models.losses import (LOSSES, AdaptiveFocalLoss, BalancedCELoss, BCELoss, DiceLoss, FocalLoss,
                               NormalizedFocalLoss, PolyLoss, SoftIoULoss, WeightedBCELoss, build_loss)

Z = [0.5, -1.0, 2.0, 0.3]  # logits of a 2x2 image
Y = [1, 0, 0, 1]           # its labels


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def pts(zs=Z, ys=Y) -> list[float]:
    """p_t per pixel with plain math."""
    return [sig(z) if y == 1 else 1.0 - sig(z) for z, y in zip(zs, ys)]


def tens(vals, shape=(1, 1, 2, 2), dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(vals, dtype=dtype).reshape(shape)


def value(loss, zs=Z, ys=Y, shape=(1, 1, 2, 2)) -> float:
    return float(loss(tens(zs, shape), tens(ys, shape)))


# ---------------------------------------------------------------- hand-computed values

def test_bce_family_values():
    pt = pts()
    nll = [-math.log(q) for q in pt]
    assert value(BCELoss()) == pytest.approx(sum(nll) / 4, rel=1e-5)
    w = [3.0 if y == 1 else 1.0 for y in Y]
    assert value(WeightedBCELoss()) == pytest.approx(sum(a * b for a, b in zip(w, nll)) / 4, rel=1e-5)
    assert value(BalancedCELoss()) == pytest.approx(sum(a * b for a, b in zip(w, nll)) / sum(w), rel=1e-5)
    # HED adaptive weights on 3 pixels (1 positive, 2 negatives): w_pos = 2/3, w_neg = 1/3
    zs, ys = Z[:3], Y[:3]
    nll3 = [-math.log(q) for q in pts(zs, ys)]
    w3 = [2 / 3, 1 / 3, 1 / 3]
    expected = sum(a * b for a, b in zip(w3, nll3)) / sum(w3)
    assert value(BalancedCELoss(pos_weight=None), zs, ys, (1, 1, 3)) == pytest.approx(expected, rel=1e-5)


def test_bce_soft_target():
    p = sig(0.7)
    expected = -(0.3 * math.log(p) + 0.7 * math.log(1 - p))
    assert float(BCELoss()(tens([0.7], (1, 1, 1)), tens([0.3], (1, 1, 1)))) == pytest.approx(expected, rel=1e-5)


def test_focal_poly_values():
    pt = pts()
    fl = [0.5 * (1 - q) ** 2 * -math.log(q) for q in pt]
    assert value(FocalLoss()) == pytest.approx(sum(fl) / 4, rel=1e-5)
    pl = [f + (1 - q) ** 3 for f, q in zip(fl, pt)]
    assert value(PolyLoss()) == pytest.approx(sum(pl) / 4, rel=1e-5)
    fl0 = [(1 - q) ** 1.5 * -math.log(q) for q in pt]
    assert value(FocalLoss(gamma=1.5, alpha=None)) == pytest.approx(sum(fl0) / 4, rel=1e-5)


def test_nfl_matches_protocol_formula():
    pt = pts()
    beta = [(1 - q) ** 2 for q in pt]
    expected = -0.5 * sum(b * math.log(q) for b, q in zip(beta, pt)) / sum(beta)
    assert value(NormalizedFocalLoss()) == pytest.approx(expected, rel=1e-5)


def test_afl_values():
    pt = pts()
    gamma_d = 2.0 + (1.0 - (pt[0] + pt[3]) / 2)  # Eq. (8)-(9): foreground = pixels 0 and 3
    beta = [(1 - q) ** gamma_d for q in pt]
    mu = 4 / ((1 + 0.4 * gamma_d) * sum(beta))  # Eq. (19)
    per_px = [mu * b * -math.log(q) + (1 - q) ** (gamma_d + 1) for b, q in zip(beta, pt)]
    assert value(AdaptiveFocalLoss()) == pytest.approx(sum(per_px) / 4, rel=1e-5)
    assert value(AdaptiveFocalLoss(reduction="sum")) == pytest.approx(sum(per_px), rel=1e-5)


def test_ratio_losses_values():
    p = [sig(z) for z in Z]
    inter = p[0] + p[3]
    union = 1 + p[1] + p[2] + 1
    assert value(SoftIoULoss()) == pytest.approx(1 - inter / union, rel=1e-5)
    assert value(DiceLoss()) == pytest.approx(1 - (2 * inter + 1) / (sum(p) + 2 + 1), rel=1e-5)
    # soft target: union uses p + y - p*y
    q = sig(0.2)
    expected = 1 - q * 0.6 / (q + 0.6 - q * 0.6)
    assert float(SoftIoULoss()(tens([0.2], (1, 1, 1)), tens([0.6], (1, 1, 1)))) == pytest.approx(expected, rel=1e-5)


def test_batch_reduction_is_mean_of_per_sample_means():
    # sample 0 has 4 valid pixels, sample 1 only 2 (two ignored): per-sample normalisers differ
    zs = Z + [1.5, -0.4, 3.0, -2.0]
    ys = Y + [1, -1, 0, -1]
    bce = [-math.log(q) for q in pts()]
    s1 = [-math.log(sig(1.5)), -math.log(1 - sig(3.0))]
    shape = (2, 1, 2, 2)
    expected = (sum(bce) / 4 + sum(s1) / 2) / 2
    assert value(BCELoss(), zs, ys, shape) == pytest.approx(expected, rel=1e-5)
    none = BCELoss(reduction="none")(tens(zs, shape), tens(ys, shape))
    assert none.shape == (2,) and float(none[1]) == pytest.approx(sum(s1) / 2, rel=1e-5)
    assert value(BCELoss(reduction="sum"), zs, ys, shape) == pytest.approx(sum(bce) + sum(s1), rel=1e-5)


# ---------------------------------------------------------------- generic properties of every loss

def _random_case(seed: int, b=2, h=3, w=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, 1, h, w, generator=g) * 2
    target = (torch.rand(b, 1, h, w, generator=g) > 0.5).float()
    target[0, 0, 0, 0], target[0, 0, 0, 1] = 1.0, 0.0  # both classes present
    return logits, target, g


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignore_pixels_change_nothing(name):
    logits, target, g = _random_case(1)
    extra_logits = torch.randn(2, 1, 3, 2, generator=g) * 10
    ext_logits = torch.cat([logits, extra_logits], dim=3)
    ext_target = torch.cat([target, torch.full((2, 1, 3, 2), -1.0)], dim=3)
    loss = build_loss(name)
    base = loss(logits, target)
    assert torch.allclose(loss(ext_logits, ext_target), base, rtol=1e-5, atol=1e-7)
    # changing the target of a valid pixel does change the loss (the comparison can fail)
    flipped = target.clone()
    flipped[1, 0, 1, 1] = 1 - flipped[1, 0, 1, 1]
    assert not torch.allclose(loss(logits, flipped), base)
    # (B, H, W) input gives the same value as (B, 1, H, W)
    assert torch.allclose(loss(logits[:, 0], target[:, 0]), base)


@pytest.mark.parametrize("loss", [build_loss(n) for n in sorted(LOSSES)] + [
    AdaptiveFocalLoss(detach=False), AdaptiveFocalLoss(gamma=0, adaptive=False, use_mu=False, alpha=0),
    NormalizedFocalLoss(detach_normaliser=False, max_mult=2.0), BalancedCELoss(pos_weight=None)],
    ids=lambda m: type(m).__name__)
def test_gradients_finite(loss):
    logits = torch.tensor([[[[60.0, -60.0, 0.0], [15.0, -15.0, 0.3], [2.0, 80.0, -3.0]]]]).repeat(2, 1, 1, 1)
    target = torch.tensor([[[[1.0, 0.0, 1.0], [0.0, 1.0, -1.0], [0.3, 1.0, 0.0]]]]).repeat(2, 1, 1, 1)
    target[1] = torch.where(target[1] == 1, 0.0, target[1])  # a sample without foreground
    logits.requires_grad_(True)
    out = loss(logits, target)
    out.backward()
    assert out.dim() == 0 and torch.isfinite(out)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert float(logits.grad[0, 0, 1, 2]) == 0.0  # ignored pixel gets no gradient


# ---------------------------------------------------------------- AFL special cases (paper §III-C end)

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_afl_reduces_to_poly_focal_bce(seed):
    logits, target, _ = _random_case(seed, b=3, h=4, w=4)
    target[2, 0, :2] = -1.0  # with ignore pixels
    for gamma in (2.0, 0.0):  # "mu, gamma_d = 0": Poly-1 focal form, and Poly-1 CE when gamma = 0
        afl = AdaptiveFocalLoss(gamma=gamma, use_mu=False, adaptive=False)
        assert torch.allclose(afl(logits, target), PolyLoss(gamma=gamma, alpha=None, epsilon=1.0)(logits, target))
    fl = AdaptiveFocalLoss(use_mu=False, adaptive=False, alpha=0.0)(logits, target)
    assert torch.allclose(fl, FocalLoss(alpha=None)(logits, target))
    bce = AdaptiveFocalLoss(gamma=0.0, use_mu=False, adaptive=False, alpha=0.0)(logits, target)
    assert torch.allclose(bce, BCELoss()(logits, target))
    # the full AFL is none of those
    assert not torch.allclose(AdaptiveFocalLoss()(logits, target), PolyLoss(alpha=None)(logits, target))


def test_afl_class_weight_halves_for_binary_targets():
    logits, target, _ = _random_case(3)
    full = AdaptiveFocalLoss()(logits, target)
    assert torch.allclose(AdaptiveFocalLoss(class_weight=0.5)(logits, target), 0.5 * full)


def test_afl_gamma_d_within_bounds():
    afl = AdaptiveFocalLoss(gamma=2.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(4, 1, 5, 5, generator=g) * 8
        target = (torch.rand(4, 1, 5, 5, generator=g) > 0.7).float()
        target[0] = 0.0  # no foreground: gamma_a = 1
        target[1] = torch.where(torch.rand(1, 5, 5, generator=g) > 0.8, -1.0, target[1])
        gd = afl.adaptive_terms(logits, target)["gamma_d"]
        assert ((gd >= 2.0) & (gd <= 3.0)).all()
        assert float(gd[0]) == pytest.approx(3.0)
    # a confident, correct foreground drives gamma_d to gamma; a confident, wrong one to gamma + 1
    target = torch.ones(2, 1, 2, 2)
    logits = torch.stack([torch.full((1, 2, 2), 20.0), torch.full((1, 2, 2), -20.0)])
    assert afl.adaptive_terms(logits, target)["gamma_d"].tolist() == pytest.approx([2.0, 3.0], abs=1e-6)
    assert AdaptiveFocalLoss(adaptive=False).adaptive_terms(logits, target)["gamma_d"].tolist() == [2.0, 2.0]


def test_afl_mu_normaliser():
    logits, target, _ = _random_case(4, b=2, h=4, w=4)
    target[1, 0, 0] = -1.0  # 4 ignored pixels in sample 1: N = 12
    for delta in (0.4, 0.0, 1.0):
        t = AdaptiveFocalLoss(delta=delta).adaptive_terms(logits, target)
        valid = (target != -1).flatten(1).float()
        assert (t["beta"][valid == 0] == 0).all()
        mean_weight = (t["mu"][:, None] * t["beta"]).sum(1) / valid.sum(1)
        assert torch.allclose(mean_weight, 1.0 / (1.0 + delta * t["gamma_d"]), rtol=1e-5)
    assert AdaptiveFocalLoss(use_mu=False).adaptive_terms(logits, target)["mu"].tolist() == [1.0, 1.0]


def test_afl_detach_switch():
    zs = torch.tensor(Z, dtype=torch.float64).reshape(1, 1, 2, 2)
    ys = torch.tensor(Y, dtype=torch.float64).reshape(1, 1, 2, 2)
    grads = []
    for detach in (True, False):
        x = zs.clone().requires_grad_(True)
        AdaptiveFocalLoss(detach=detach)(x, ys).backward()
        grads.append(x.grad)
    # detached: gamma_d and mu act as constants (computed here with plain math)
    pt = pts()
    gd = 2.0 + 1.0 - (pt[0] + pt[3]) / 2
    mu = 4 / ((1 + 0.4 * gd) * sum((1 - q) ** gd for q in pt))
    x = zs.clone().requires_grad_(True)
    p = torch.sigmoid(x)
    q = 1 - (p * ys + (1 - p) * (1 - ys))
    (mu * q ** gd * -torch.log(1 - q) + q ** (gd + 1)).mean().backward()
    assert torch.allclose(grads[0], x.grad, rtol=1e-6)
    assert not torch.allclose(grads[0], grads[1], rtol=1e-3)


# ---------------------------------------------------------------- NFL normaliser has no gradient

def test_nfl_normaliser_detached():
    zs = torch.tensor(Z, dtype=torch.float64).reshape(1, 1, 2, 2)
    ys = torch.tensor(Y, dtype=torch.float64).reshape(1, 1, 2, 2)
    const = 1.0 / sum((1 - q) ** 2 for q in pts())  # plain float: no gradient through it
    x = zs.clone().requires_grad_(True)
    p = torch.sigmoid(x)
    pt = torch.where(ys > 0.5, p, 1 - p)
    (-0.5 * ((1 - pt) ** 2 * torch.log(pt)).sum() * const).backward()
    manual = x.grad
    x = zs.clone().requires_grad_(True)
    NormalizedFocalLoss()(x, ys).backward()
    assert torch.allclose(x.grad, manual, rtol=1e-6)
    x = zs.clone().requires_grad_(True)
    NormalizedFocalLoss(detach_normaliser=False)(x, ys).backward()
    assert not torch.allclose(x.grad, manual, rtol=1e-3)


# ---------------------------------------------------------------- factory and input checks

def test_build_loss_factory():
    assert set(LOSSES) == {"bce", "wbce", "balanced_ce", "soft_iou", "focal", "nfl", "poly", "afl", "dice"}
    for name, cls in LOSSES.items():
        assert type(build_loss(name)) is cls
    assert build_loss("WBCE", pos_weight=2.0).pos_weight == 2.0
    with pytest.raises(ValueError, match="unknown loss name"):
        build_loss("lovasz")
    with pytest.raises(TypeError, match="afl"):
        build_loss("afl", beta=3)


def test_bad_inputs_raise_clear_errors():
    loss = BCELoss()
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="target values"):
        loss(x, torch.full((1, 1, 2, 2), 2.0))
    with pytest.raises(ValueError, match="target must be"):
        loss(x, torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="logits must have shape"):
        loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(TypeError, match="logits must be a float"):
        loss(torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=1.5)
    # int8 GT masks (iis.core.types convention) are accepted as targets
    assert torch.isfinite(loss(x, torch.tensor([[[[1, 0], [-1, 0]]]], dtype=torch.int8)))
