"""Hungarian matching of AdaptiveClick's queries to target masks (methods.md §1.6).

Cost = 5 * C_afl + 2 * C_class + 5 * C_dice on full 1/4-resolution maps (no point sampling),
solved per image with ``scipy.optimize.linear_sum_assignment``. The pairwise (query x target) cost
functions are the batched approximations upstream uses for matching, not the losses themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

__all__ = ["pairwise_dice_cost", "pairwise_afl_cost", "hungarian_assign", "HungarianMatcher"]


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice cost ``1 - (2 sum(s t) + 1) / (sum s + sum t + 1)`` with ``s = sigmoid(logits)``.

    Args:
        logits: ``(N, P)`` query mask logits over P pixels.
        targets: ``(M, P)`` binary target masks.

    Returns:
        ``(N, M)``.
    """
    s = logits.sigmoid()
    num = 2 * s @ targets.T
    den = s.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def pairwise_afl_cost(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, delta: float = 0.4,
                      alpha: float = 1.0, epsilon: float = 0.5, eps: float = 1e-12) -> torch.Tensor:
    """Upstream's "batched AFL" matching cost (methods.md §1.6), per (query n, target m).

    ``p_t(n,m)`` is the pixel-mean agreement, ``gamma_a = gamma + 1 - sum(p t) / sum(t)``,
    ``beta = (1 - p_t)^gamma_a``, ``mult = M / ((1 + delta gamma_a) sum_m beta)`` and the cost is
    ``mult * beta * base + epsilon * alpha * (beta + 1)`` with ``base`` the epsilon-balanced mean BCE.
    The poly term is ``(beta + 1)`` as coded upstream (not the loss's ``(1-p_t)^(gamma+1)``).

    Args:
        logits: ``(N, P)``; targets: ``(M, P)`` binary; gamma, delta, alpha: AFL defaults (paper §IV-B:
            2, 0.4, 1); epsilon: class balance (0.5 upstream).

    Returns:
        ``(N, M)``.
    """
    P, M = logits.shape[1], targets.shape[0]
    prob = logits.sigmoid()
    agree = prob @ targets.T  # sum over pixels of p*t
    p_t = (agree + (1 - prob) @ (1 - targets).T) / P
    gamma_a = gamma + 1 - agree / ((targets > 0.5).sum(-1)[None, :] + eps)
    beta = (1 - p_t) ** gamma_a
    mult = M / ((1 + delta * gamma_a) * beta.sum(-1, keepdim=True) + eps)
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    base = (epsilon * F.softplus(-logits) @ targets.T + (1 - epsilon) * F.softplus(logits) @ (1 - targets).T) / P
    return mult * beta * base + epsilon * alpha * (beta + 1)


def hungarian_assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a ``(N, M)`` cost; returns int64 (rows, cols), rows sorted."""
    if cost.dim() != 2:
        raise ValueError(f"cost must be a (N, M) matrix, got shape {tuple(cost.shape)}")
    if not torch.isfinite(cost).all():
        raise ValueError("cost matrix has non-finite entries")
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


class HungarianMatcher:
    """Per-image matcher with cost ``w_mask C_afl + w_class C_class + w_dice C_dice``.

    Args:
        cost_class: weight of ``-softmax(class logits)[label]`` (2.0, CLASS_WEIGHT).
        cost_mask: weight of :func:`pairwise_afl_cost` (5.0, MASK_WEIGHT).
        cost_dice: weight of :func:`pairwise_dice_cost` (5.0, DICE_WEIGHT).
        afl_kwargs: overrides for :func:`pairwise_afl_cost` (gamma, delta, alpha, epsilon).
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 afl_kwargs: dict | None = None):
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("at least one of cost_class, cost_mask, cost_dice must be non-zero")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.afl_kwargs = dict(afl_kwargs or {})

    @torch.no_grad()
    def cost_matrix(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                    masks: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Cost of one image.

        Args:
            class_logits: ``(Q, C)``; mask_logits: ``(Q, h, w)``.
            labels: ``(M,)`` int64 class indices; masks: ``(M, h, w)`` binary.
            valid: optional ``(h, w)`` bool; ignored pixels are left out of the mask costs.

        Returns:
            ``(Q, M)`` float.
        """
        if masks.shape[-2:] != mask_logits.shape[-2:]:
            raise ValueError(f"target masks {tuple(masks.shape[-2:])} and predicted masks "
                             f"{tuple(mask_logits.shape[-2:])} differ in size")
        x = mask_logits.flatten(1).float()
        t = masks.flatten(1).to(x)
        if valid is not None:
            keep = valid.flatten().bool()
            x, t = x[:, keep], t[:, keep]
        cost = -class_logits.float().softmax(-1)[:, labels] * self.cost_class
        if x.shape[1] > 0:
            cost = cost + self.cost_mask * pairwise_afl_cost(x, t, **self.afl_kwargs)
            cost = cost + self.cost_dice * pairwise_dice_cost(x, t)
        return cost

    @torch.no_grad()
    def __call__(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every image of a batch.

        Args:
            outputs: ``{"pred_logits": (B,Q,C), "pred_masks": (B,Q,h,w)}``.
            targets: B dicts with ``"labels" (M,)``, ``"masks" (M,h,w)`` and optionally ``"valid" (h,w)``.

        Returns:
            B pairs ``(query indices, target indices)``, each of length ``min(Q, M)``.
        """
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]}")
        out = []
        for b, tgt in enumerate(targets):
            if tgt["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(outputs["pred_logits"][b], outputs["pred_masks"][b], tgt["labels"],
                                    tgt["masks"], tgt.get("valid"))
            out.append(hungarian_assign(cost))
        return out
