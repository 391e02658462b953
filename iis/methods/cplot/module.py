"""CPlot training (Liu et al., ECCV 2024), deltas on the base iterative loop.

Paper §5.1 recipe: SimpleClick ViT-B, 448 crops with SimpleClick's augmentations, Adam 5e-5 dropping
to 5e-6 after 50 of 55 epochs, 4 GPUs; loss Eq. 12 (NFL on the mask + alpha NFL(mean S*) + beta
min_i NFL(S*_i), alpha = beta = 1); evaluated with the ``simpleclick`` protocol preset.
"""

from __future__ import annotations

from typing import Any

import torch

from ...lightning.module import IISModule
from .loss import CPlotLoss

__all__ = ["CPlot"]


class CPlot(IISModule):
    def __init__(self, model: str = "cplot_vit_base", lr: float = 5e-5, milestones: list[int] | None = None,
                 protocol: str = "simpleclick", alpha: float = 1.0, beta: float = 1.0, **kwargs: Any):
        super().__init__(model=model, lr=lr, milestones=[50] if milestones is None else milestones,
                         protocol=protocol, loss=None, **kwargs)
        self.criterion = CPlotLoss(alpha=alpha, beta=beta)

    def compute_loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss, terms = self.criterion(outputs, target)
        return loss, {"loss": loss, **{k: v for k, v in terms.items() if torch.is_floating_point(v)}}
