"""CPlot objective, Eq. 12: ``NFL(M_hat) + alpha * NFL(mean_i S_i*) + beta * min_i NFL(S_i*)``.

``L_fc`` is RITM's normalised focal loss (:class:`iis.models.losses.NormalizedFocalLoss`, alpha 0.5,
gamma 2, docs/protocol.md §D.5). alpha = beta = 1 (§5 implementation details). Eq. 12 prints "argmin"
for the third term, but it adds a loss value, so we read it as the minimum over prompts. The minimum
is taken per sample: the best prompt of each image, then the batch mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.losses import NormalizedFocalLoss

__all__ = ["CPlotLoss", "mean_prob_logit", "prompt_diversity"]


def mean_prob_logit(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Logit of the mean probability over ``dim``: ``logit(mean_i sigmoid(x_i))``, computed stably.

    Equal to ``logsumexp(logsigmoid(x)) - logsumexp(logsigmoid(-x))``, because the 1/N cancels. It has
    no clamping, so gradients survive saturated maps. The result keeps ``dim`` with size 1.
    """
    return (torch.logsumexp(F.logsigmoid(logits), dim, keepdim=True)
            - torch.logsumexp(F.logsigmoid(-logits), dim, keepdim=True))


class CPlotLoss(nn.Module):
    """Eq. 12 on the outputs of :meth:`CPlotModel.forward_train`.

    Args:
        alpha: weight of the term on the mean prompt-activated mask (1).
        beta: weight of the term on the best prompt-activated mask (1).
        nfl_alpha, nfl_gamma: normalised focal loss settings (RITM: 0.5, 2).
        ignore_index: GT value that is ignored (-1).
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, nfl_alpha: float = 0.5, nfl_gamma: float = 2.0,
                 ignore_index: int = -1):
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)
        self.nfl = NormalizedFocalLoss(alpha=nfl_alpha, gamma=nfl_gamma, reduction="none", ignore_index=ignore_index)

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Total loss and its (detached) terms.

        Args:
            outputs: ``"logits"`` ``(B, 1, H, W)`` and ``"s_star"`` ``(B, N, H, W)`` logits, at the
                resolution of ``target``.
            target: ``(B, 1, H, W)`` or ``(B, H, W)``; 1 object, 0 background, ``ignore_index`` ignored.

        Returns:
            ``(loss, {"loss_mask", "loss_mean", "loss_min", "best_prompt"})``.
        """
        if "logits" not in outputs or "s_star" not in outputs:
            raise KeyError(f"outputs must contain 'logits' and 's_star' (CPlotModel.forward_train), got {sorted(outputs)}")
        logits, s_star = outputs["logits"], outputs["s_star"]
        if target.dim() == 3:
            target = target.unsqueeze(1)
        if target.shape != logits.shape:
            raise ValueError(f"target must have shape {tuple(logits.shape)} (B, 1, H, W) like the logits, "
                             f"got {tuple(target.shape)}")
        B, N = s_star.shape[:2]
        if s_star.dim() != 4 or s_star.shape[-2:] != logits.shape[-2:]:
            raise ValueError(f"s_star must be (B, N, H, W) at the target size {tuple(logits.shape[-2:])}, "
                             f"got {tuple(s_star.shape)}")
        target = target.to(logits.dtype)
        l_mask = self.nfl(logits, target).mean()
        l_mean = self.nfl(mean_prob_logit(s_star), target).mean()
        per = self.nfl(s_star.reshape(B * N, 1, *s_star.shape[-2:]),
                       target.unsqueeze(1).expand(B, N, *target.shape[1:]).reshape(B * N, *target.shape[1:]))
        l_min, best = per.view(B, N).min(1)
        l_min = l_min.mean()
        loss = l_mask + self.alpha * l_mean + self.beta * l_min
        return loss, {"loss_mask": l_mask.detach(), "loss_mean": l_mean.detach(), "loss_min": l_min.detach(),
                      "best_prompt": best.detach()}


def prompt_diversity(s_star: torch.Tensor, from_logits: bool = True, center: bool = False) -> torch.Tensor:
    """Mean pairwise cosine similarity of the prompt-activated masks, over prompt pairs and the batch.

    A value near 1 means the prompts activate the same map, i.e. they are homogeneous (Fig. 1a).
    Lower values mean more diverse prompts.

    Args:
        s_star: ``(B, N, H, W)`` with N >= 2. These are logits if ``from_logits`` (what
            ``forward_train`` returns); otherwise probabilities, which are used as given.
        from_logits: apply the sigmoid first.
        center: subtract each map's mean first, which gives the Pearson correlation. This is more
            sensitive when all maps share a large constant part (e.g. about 0.5 where a prompt
            transports no mass).

    Returns:
        Scalar tensor. The result is in [0, 1] for probabilities and in [-1, 1] with ``center``.
    """
    if s_star.dim() != 4 or s_star.shape[1] < 2:
        raise ValueError(f"s_star must be (B, N, H, W) with N >= 2 prompts, got {tuple(s_star.shape)}")
    x = torch.sigmoid(s_star) if from_logits else s_star
    x = x.flatten(2).float()
    if center:
        x = x - x.mean(-1, keepdim=True)
    x = F.normalize(x, dim=-1)
    sim = x @ x.transpose(1, 2)  # (B, N, N)
    N = sim.shape[-1]
    off = ~torch.eye(N, dtype=torch.bool, device=sim.device)
    return sim[:, off].mean()
