"""AdaptiveClick training (Lin et al., TNNLS 2024), deltas on the base iterative loop.

Defaults follow the authors' ViT-B configs (methods.md §1.9): Adam 5e-5, x0.1 at epoch 40 of 60,
448 crops, the ``simpleclick`` protocol; the loss is the set criterion (Hungarian matching, class
CE + AFL + Dice with deep supervision). ``targets``/``class_weights`` select "fixed" (default, used
by every experiment here) or "faithful" (the two upstream quirks of methods.md §1.6).
"""

from __future__ import annotations

from typing import Any

import torch

from ...lightning.module import IISModule
from .loss import AdaptiveClickCriterion

__all__ = ["AdaptiveClick"]


class AdaptiveClick(IISModule):
    def __init__(self, model: str = "adaptiveclick_vit_base", lr: float = 5e-5, milestones: list[int] | None = None,
                 protocol: str = "simpleclick", targets: str = "fixed", class_weights: str = "fixed",
                 mask_loss: str = "afl", criterion_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(model=model, lr=lr, milestones=[40] if milestones is None else milestones,
                         protocol=protocol, loss=None, **kwargs)
        self.criterion = AdaptiveClickCriterion(targets=targets, class_weights=class_weights, mask_loss=mask_loss,
                                                **(criterion_kwargs or {}))

    def compute_loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        total, terms = self.criterion(outputs, target)
        # log the final decoder output's terms; the auxiliary ones are in the total
        return total, {"loss": total, **{k: v for k, v in terms.items() if k in ("loss_ce", "loss_afl", "loss_dice")}}
