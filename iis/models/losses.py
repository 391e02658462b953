"""Binary segmentation losses for click-based IIS (pure torch), selectable by name through config.

Every loss is an ``nn.Module`` with ``forward(logits, target) -> scalar``:

* ``logits``: ``(B, 1, H, W)`` or ``(B, H, W)`` raw scores (sigmoid is applied inside);
* ``target``: same shape, values 1 object / 0 background / ``ignore_index`` (default -1, the GT
  convention of :mod:`iis.core.types`); soft values in [0, 1] are accepted by every loss.

Ignored pixels contribute nothing and are not counted in any normaliser. Reductions (``reduction``):

* pixel losses (bce, wbce, balanced_ce, focal, nfl, poly, afl): ``"mean"`` (default) = per-sample
  mean over its valid pixels, then the mean over the batch. This is RITM's ``size_average=True``
  followed by ``torch.mean`` in the trainer (protocol.md §D.5). A sample with no valid pixel counts
  as 0 in the batch mean, as in RITM. ``"none"`` returns the per-sample values ``(B,)``;
  ``"sum"`` returns the sum over all valid pixels of the batch (the Σ_i of the papers' equations).
* ratio losses (soft_iou, dice): ``"mean"`` / ``"sum"`` / ``"none"`` over the per-sample ratios.

Where the defaults come from (AdaptiveClick = "AdaptiveClick: Click-aware Transformer with Adaptive Focal Loss for Interactive Image Segmentation", §IV-D "Loss Functions" and Table VI):

* BCE: Eq. (1).  WBCE: positive weight 3.  Balanced CE: positive/negative weights 3/1 (see
  :class:`BalancedCELoss` for how it differs from WBCE).  FL and NFL: gamma 2, balance weight 0.5.
  PL: gamma 2, balance weight 0.5, poly coefficient 1 (Eq. (3); Leng et al.'s Poly-1 focal form).
* NFL: exactly RITM's ``NormalizedFocalLossSigmoid`` (protocol.md §D.5): eps 1e-12, detached
  normaliser, ``max_mult`` -1.  Soft IoU: SimpleClick's ``SoftIoU`` (eps 1e-8).
* AFL: gamma 2, delta 0.4, alpha 1 (§IV-B "fixed at 2, 0.4 and 1.0"; Eqs. (8)-(10), (19), (20));
  code differences are switches (methods.md §1.7).  Dice: smooth 1 (methods.md §1.8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BCELoss", "WeightedBCELoss", "BalancedCELoss", "SoftIoULoss", "FocalLoss", "NormalizedFocalLoss",
           "PolyLoss", "AdaptiveFocalLoss", "DiceLoss", "LOSSES", "build_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_range(name: str, value: float | None, lo: float, hi: float | None = None,
                 allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < lo or (hi is not None and value > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}{' or None' if allow_none else ''}, got {value!r}")


def _prepare(logits: torch.Tensor, target: torch.Tensor, ignore_index: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate and flatten to ``x, y, valid`` of shape ``(B, H*W)``; ignored pixels get ``y = 0``."""
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor, got {type(logits).__name__} "
                        f"{getattr(logits, 'dtype', '')}")
    if logits.dim() not in (3, 4) or (logits.dim() == 4 and logits.shape[1] != 1):
        raise ValueError(f"logits must have shape (B, 1, H, W) or (B, H, W), got {tuple(logits.shape)}")
    if not torch.is_tensor(target) or target.shape != logits.shape:
        raise ValueError(f"target must be a tensor with the logits' shape {tuple(logits.shape)}, "
                         f"got {tuple(getattr(target, 'shape', ()))}")
    t = target.to(logits.dtype).reshape(target.shape[0], -1)
    valid = t != ignore_index
    if not bool((((t >= 0) & (t <= 1)) | ~valid).all()):
        raise ValueError(f"target values must be in [0, 1] or equal ignore_index={ignore_index}")
    y = torch.where(valid, t, torch.zeros_like(t))
    return logits.reshape(logits.shape[0], -1), y, valid.to(logits.dtype)


def _one_minus_pt(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - p_t`` with ``p_t = p*y + (1-p)*(1-y)`` (soft-target form), clamped at 0 against rounding."""
    p = torch.sigmoid(x)
    return (1.0 - (p * y + (1.0 - p) * (1.0 - y))).clamp_min(0.0)


def _balance(y: torch.Tensor, w: float) -> torch.Tensor:
    """Class-balance factor ``w*y + (1-w)*(1-y)`` (``alpha_t`` of the focal loss)."""
    return w * y + (1.0 - w) * (1.0 - y)


class _PixelLoss(nn.Module):
    """Base class: subclasses give the per-pixel loss ``(B, N)``; masking and reduction live here."""

    def __init__(self, reduction: str = "mean", ignore_index: int = -1):
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.ignore_index = ignore_index

    def pixel_loss(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normaliser(self, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-sample denominator ``(B,)`` of the ``"mean"`` reduction: the number of valid pixels."""
        return valid.sum(1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y, valid = _prepare(logits, target, self.ignore_index)
        loss = self.pixel_loss(x, y, valid) * valid
        if self.reduction == "sum":
            return loss.sum()
        per_sample = loss.sum(1) / self.normaliser(y, valid).clamp_min(1e-12)  # 0/eps = 0 for empty samples
        return per_sample if self.reduction == "none" else per_sample.mean()


class BCELoss(_PixelLoss):
    """Binary cross-entropy with logits (AdaptiveClick Eq. (1)), masked mean over valid pixels."""

    def pixel_loss(self, x, y, valid):
        return F.binary_cross_entropy_with_logits(x, y, reduction="none")


class WeightedBCELoss(_PixelLoss):
    """WBCE: ``-[w*y*log p + (1-y)*log(1-p)]``, ``w = pos_weight`` (3, AdaptiveClick §IV-D).

    The ``"mean"`` reduction divides by the number of valid pixels, like :class:`BCELoss`.
    """

    def __init__(self, pos_weight: float = 3.0, reduction: str = "mean", ignore_index: int = -1):
        super().__init__(reduction, ignore_index)
        _check_range("pos_weight", pos_weight, 0.0)
        self.pos_weight = float(pos_weight)

    def pixel_loss(self, x, y, valid):
        return self.pos_weight * y * F.softplus(-x) + (1.0 - y) * F.softplus(x)


class BalancedCELoss(_PixelLoss):
    """Class-balanced CE of HED (Xie & Tu, ICCV 2015; AdaptiveClick's reference [42]).

    ``l_i = -[w_pos*y*log p + w_neg*(1-y)*log(1-p)]``. AdaptiveClick §IV-D fixes ``w_pos=3, w_neg=1``.
    With fixed weights the per-pixel terms equal WBCE's, so the two can differ only in the
    normaliser; the paper does not give it. Here ``"mean"`` is the weighted mean
    ``sum_i l_i / sum_i w_i`` over valid pixels. The loss stays on the BCE scale, and the result
    depends on the class balance of each image (WBCE divides by the pixel count instead).
    ``pos_weight=None`` gives HED's adaptive weights per image: ``w_pos = |Y-|/|Y|`` and
    ``w_neg = |Y+|/|Y|``.
    """

    def __init__(self, pos_weight: float | None = 3.0, neg_weight: float = 1.0, reduction: str = "mean",
                 ignore_index: int = -1):
        super().__init__(reduction, ignore_index)
        _check_range("pos_weight", pos_weight, 0.0, allow_none=True)
        _check_range("neg_weight", neg_weight, 0.0)
        self.pos_weight, self.neg_weight = pos_weight, float(neg_weight)

    def _weights(self, y: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos_weight is not None:
            return y.new_tensor(float(self.pos_weight)), y.new_tensor(self.neg_weight)
        beta = ((1.0 - y) * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1.0)
        return beta, 1.0 - beta

    def pixel_loss(self, x, y, valid):
        w_pos, w_neg = self._weights(y, valid)
        return w_pos * y * F.softplus(-x) + w_neg * (1.0 - y) * F.softplus(x)

    def normaliser(self, y, valid):
        w_pos, w_neg = self._weights(y, valid)
        return ((w_pos * y + w_neg * (1.0 - y)) * valid).sum(1)


class FocalLoss(_PixelLoss):
    """Focal loss (Lin et al.; AdaptiveClick Eq. (2)): ``alpha_t * (1-p_t)^gamma * BCE``.

    ``gamma=2`` and ``alpha=0.5`` come from AdaptiveClick §IV-D. ``alpha_t = alpha*y + (1-alpha)*(1-y)``,
    so alpha 0.5 halves the loss; ``alpha=None`` turns the balancing off. For binary targets
    ``BCE = -log p_t``; the logit form keeps it stable and valid for soft targets.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.5, reduction: str = "mean",
                 ignore_index: int = -1):
        super().__init__(reduction, ignore_index)
        _check_range("gamma", gamma, 0.0)
        _check_range("alpha", alpha, 0.0, 1.0, allow_none=True)
        self.gamma, self.alpha = float(gamma), alpha

    def pixel_loss(self, x, y, valid):
        loss = _one_minus_pt(x, y) ** self.gamma * F.binary_cross_entropy_with_logits(x, y, reduction="none")
        return loss if self.alpha is None else _balance(y, self.alpha) * loss


class PolyLoss(FocalLoss):
    """Poly-1 focal loss (Leng et al., ICLR 2022; AdaptiveClick Eq. (3)): ``FL + epsilon*(1-p_t)^(gamma+1)``.

    Defaults are AdaptiveClick §IV-D: gamma 2, balance weight 0.5 (on the focal term only, as in
    Leng et al.'s Poly-1 focal), and poly coefficient 1 (the paper calls it alpha). Eq. (3) prints a
    minus sign in front of the whole sum, poly term included. Eqs. (10)/(20) and Leng et al. add the
    poly term, so we add it. ``gamma=0, alpha=None`` gives Poly-1 CE.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.5, epsilon: float = 1.0,
                 reduction: str = "mean", ignore_index: int = -1):
        super().__init__(gamma, alpha, reduction, ignore_index)
        self.epsilon = float(epsilon)

    def pixel_loss(self, x, y, valid):
        return super().pixel_loss(x, y, valid) + self.epsilon * _one_minus_pt(x, y) ** (self.gamma + 1.0)


class NormalizedFocalLoss(nn.Module):
    """RITM's normalised focal loss, exactly as docs/protocol.md §D.5 (SimpleClick's only loss).

    Per sample b, pixel i: ``p_t = 1 - |y - p|`` (1 on ignored pixels), ``alpha_t = alpha`` if
    ``y > 0.5`` else ``1 - alpha``, ``beta_i = (1 - p_t)^gamma``, ``m = sum(valid) / (sum(beta) + eps)``
    (detached), ``l_i = -alpha_t * min(beta_i*m, max_mult) * log(min(p_t + eps, 1))``, and
    ``L_b = sum_i l_i / (sum(valid) + eps)``. With alpha 0.5 this is
    ``L_b = -0.5 * sum_i beta_i log p_t,i / sum_j beta_j``. The clamp applies only when
    ``max_mult > 0``. ``"mean"`` is the batch mean of ``L_b``. The RITM code also keeps EMA logging
    statistics; they are omitted here.
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, eps: float = 1e-12, detach_normaliser: bool = True,
                 max_mult: float = -1.0, reduction: str = "mean", ignore_index: int = -1):
        super().__init__()
        _check_range("alpha", alpha, 0.0, 1.0)
        _check_range("gamma", gamma, 0.0)
        self.alpha, self.gamma, self.eps = float(alpha), float(gamma), float(eps)
        self.detach_normaliser, self.max_mult = detach_normaliser, float(max_mult)
        self.reduction = _check_reduction(reduction)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y, valid = _prepare(logits, target, self.ignore_index)
        p = torch.sigmoid(x)
        is_valid = valid > 0
        pt = torch.where(is_valid, 1.0 - (y - p).abs(), torch.ones_like(p))
        alpha_t = torch.where(y > 0.5, y.new_tensor(self.alpha), y.new_tensor(1.0 - self.alpha)) * valid
        beta = (1.0 - pt) ** self.gamma
        mult = valid.sum(1, keepdim=True) / (beta.sum(1, keepdim=True) + self.eps)
        if self.detach_normaliser:
            mult = mult.detach()
        beta = beta * mult
        if self.max_mult > 0:
            beta = beta.clamp_max(self.max_mult)
        loss = -alpha_t * beta * torch.log((pt + self.eps).clamp_max(1.0)) * valid
        if self.reduction == "sum":
            return loss.sum()
        per_sample = loss.sum(1) / (valid.sum(1) + self.eps)
        return per_sample if self.reduction == "none" else per_sample.mean()


class AdaptiveFocalLoss(_PixelLoss):
    """AdaptiveClick's Adaptive Focal Loss (paper §III-C, Eq. (20); docs/methods.md §1.7).

    ``l_i = mu * (1-p_t)^gamma_d * BCE_i + alpha * (1-p_t)^(gamma_d+1)`` with, per sample:

    * ``gamma_d = gamma + gamma_a`` and ``gamma_a = 1 - mean(p_t over foreground pixels y > 0.5)``
      (Eqs. (8)-(9)). This is in [0, 1], so ``gamma_d`` is in [gamma, gamma + 1]. A sample without
      foreground gets ``gamma_a = 1``, as in the code (its sum is divided by ``0 + eps``).
    * ``mu = N / ((1 + delta*gamma_d) * sum_i (1-p_t,i)^gamma_d + eps)`` over the N valid pixels
      (Eq. (19)). So ``mean_i(mu * (1-p_t,i)^gamma_d) = 1/(1 + delta*gamma_d)``.

    Defaults gamma 2, delta 0.4, alpha 1 come from §IV-B. Switches for the paper's special cases
    (§III-C end) and for code/paper differences:

    * ``adaptive=False``: ``gamma_a = 0`` (``gamma_d = gamma``); ``use_mu=False``: ``mu = 1``.
      "mu, gamma_d = 0" gives Poly: ``use_mu=False, adaptive=False`` equals :class:`PolyLoss` with
      ``alpha=None, epsilon=alpha``. Adding ``alpha=0`` gives FL (``FocalLoss(alpha=None)``).
      Adding ``gamma=0`` as well gives BCE.
    * ``detach=True`` (both upstream codes; the paper is silent): ``gamma_d`` and ``mu`` get no gradient.
    * ``class_weight``: ``None`` follows the paper and the RITM-style ``losses.py::AdaptiveFocalLossSigmoid``.
      ``0.5`` follows ``criterion.py::sigmoid_adaptive_focal_loss``, which multiplies every pixel by
      ``0.5*y + 0.5*(1-y)``, i.e. halves the loss (used in AdaptiveClick's own training).
    * The paper sums over pixels; both codes average (our ``"mean"``; ``"sum"`` gives the paper's Σ).
      ``losses.py`` writes the log term as ``-log(min(p_t + 1e-12, 1))`` and ``criterion.py`` uses
      BCE with logits. We use the latter, which equals the former up to that eps for binary targets.
    """

    def __init__(self, gamma: float = 2.0, delta: float = 0.4, alpha: float = 1.0, eps: float = 1e-12,
                 adaptive: bool = True, use_mu: bool = True, detach: bool = True,
                 class_weight: float | None = None, reduction: str = "mean", ignore_index: int = -1):
        super().__init__(reduction, ignore_index)
        _check_range("gamma", gamma, 0.0)
        _check_range("delta", delta, 0.0)
        _check_range("class_weight", class_weight, 0.0, 1.0, allow_none=True)
        self.gamma, self.delta, self.alpha, self.eps = float(gamma), float(delta), float(alpha), float(eps)
        self.adaptive, self.use_mu, self.detach, self.class_weight = adaptive, use_mu, detach, class_weight

    def _terms(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        q = _one_minus_pt(x, y)  # 1 - p_t
        gamma_d = x.new_full((x.shape[0], 1), self.gamma)
        if self.adaptive:
            fg = (y > 0.5).to(x.dtype) * valid
            # as coded: 1 - sum(p_t*fg) / (sum(fg) + eps), so a sample without foreground gets 1
            gamma_a = 1.0 - ((1.0 - q) * fg).sum(1, keepdim=True) / (fg.sum(1, keepdim=True) + self.eps)
            gamma_d = gamma_d + (gamma_a.detach() if self.detach else gamma_a)
        beta = q ** gamma_d * valid
        mu = torch.ones_like(gamma_d)
        if self.use_mu:
            mu = valid.sum(1, keepdim=True) / ((1.0 + self.delta * gamma_d) * beta.sum(1, keepdim=True) + self.eps)
            mu = mu.detach() if self.detach else mu
        return {"one_minus_pt": q, "gamma_d": gamma_d, "beta": beta, "mu": mu}

    def adaptive_terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample ``gamma_d`` ``(B,)``, ``mu`` ``(B,)`` and focal weights ``beta`` ``(B, H*W)`` (0 on ignored)."""
        t = self._terms(*_prepare(logits, target, self.ignore_index))
        return {"gamma_d": t["gamma_d"][:, 0], "mu": t["mu"][:, 0], "beta": t["beta"]}

    def pixel_loss(self, x, y, valid):
        t = self._terms(x, y, valid)
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        loss = t["mu"] * t["beta"] * ce + self.alpha * t["one_minus_pt"] ** (t["gamma_d"] + 1.0)
        return loss if self.class_weight is None else _balance(y, self.class_weight) * loss


class _RatioLoss(nn.Module):
    def __init__(self, reduction: str = "mean", ignore_index: int = -1):
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.ignore_index = ignore_index

    def per_sample(self, p: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y, valid = _prepare(logits, target, self.ignore_index)
        per = self.per_sample(torch.sigmoid(x) * valid, y * valid, valid)
        return {"mean": per.mean, "sum": per.sum, "none": lambda: per}[self.reduction]()


class SoftIoULoss(_RatioLoss):
    """Soft IoU loss (Rahman & Wang, ISVC 2016): ``1 - sum(p*y) / (sum(p + y - p*y) + eps)`` per sample.

    For binary targets ``p + y - p*y = max(p, y)``, which is SimpleClick's ``SoftIoU`` (eps 1e-8).
    """

    def __init__(self, eps: float = 1e-8, reduction: str = "mean", ignore_index: int = -1):
        super().__init__(reduction, ignore_index)
        self.eps = float(eps)

    def per_sample(self, p, y, valid):
        return 1.0 - (p * y).sum(1) / ((p + y - p * y).sum(1) + self.eps)


class DiceLoss(_RatioLoss):
    """Dice loss ``1 - (2*sum(p*y) + s) / (sum(p) + sum(y) + s)`` per sample; ``s = 1`` (methods.md §1.8).

    AdaptiveClick sums the per-mask Dice and divides by ``num_masks``. With one mask per sample
    that is the ``"mean"`` reduction.
    """

    def __init__(self, smooth: float = 1.0, reduction: str = "mean", ignore_index: int = -1):
        super().__init__(reduction, ignore_index)
        _check_range("smooth", smooth, 0.0)
        self.smooth = float(smooth)

    def per_sample(self, p, y, valid):
        return 1.0 - (2.0 * (p * y).sum(1) + self.smooth) / (p.sum(1) + y.sum(1) + self.smooth)


LOSSES: dict[str, type[nn.Module]] = {
    "bce": BCELoss,
    "wbce": WeightedBCELoss,
    "balanced_ce": BalancedCELoss,
    "soft_iou": SoftIoULoss,
    "focal": FocalLoss,
    "nfl": NormalizedFocalLoss,
    "poly": PolyLoss,
    "afl": AdaptiveFocalLoss,
    "dice": DiceLoss,
}


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build a loss by config name (a key of :data:`LOSSES`), passing ``kwargs`` to its constructor."""
    key = str(name).lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss name {name!r}; expected one of {sorted(LOSSES)}")
    try:
        return LOSSES[key](**kwargs)
    except TypeError as err:
        raise TypeError(f"bad arguments for loss {key!r} ({LOSSES[key].__name__}): {err}") from None
