"""GPCIS training (Zhou et al., CVPR 2023), deltas on the base iterative loop.

Defaults follow the authors' ``run.sh`` / ``gp_sbd_resnet50.py`` (methods.md §3.5): Adam 5e-3 with
x0.1 on the segmentor (the click-fusion stem and the GP head at 1x), MultiStep at 190 and 220 of 230
epochs, loss NFL + 1e-3 * L_VI (paper Eq. 8), evaluated with the ``gpcis`` protocol preset.
While extra clicks are simulated the model is in eval mode but keeps the training eps^2 (1e-2), as
upstream does.
"""

from __future__ import annotations

from typing import Any

import torch

from ...lightning.module import IISModule
from .loss import GPCISLoss

__all__ = ["GPCIS"]


class GPCIS(IISModule):
    def __init__(self, model: str = "gpcis_resnet50", lr: float = 5e-3, lr_mult: dict[str, float] | None = None,
                 milestones: list[int] | None = None, protocol: str = "gpcis", vi_weight: float = 1e-3,
                 **kwargs: Any):
        lr_mult = {"segmentor.maps_transform": 1.0, "segmentor": 0.1} if lr_mult is None else lr_mult
        super().__init__(model=model, lr=lr, lr_mult=lr_mult, milestones=[190, 220] if milestones is None else milestones,
                         protocol=protocol, loss=None, **kwargs)
        self.criterion = GPCISLoss(vi_weight=vi_weight)

    def simulation_forward(self, image, clicks, prev_mask):
        return self.model(image, clicks, prev_mask, eps2=self.model.train_eps2)

    def compute_loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        terms = self.criterion(outputs, target)
        return terms["loss"], terms
