"""GPCIS training (Zhou et al., CVPR 2023), deltas on the base iterative loop.

Defaults follow the authors' ``run.sh`` / ``gp_sbd_resnet50.py`` (methods.md §3.5): Adam 5e-3 with
x0.1 on the segmentor (the click-fusion stem and the GP head at 1x), MultiStep at 190 and 220 of 230
epochs, loss NFL + 1e-3 * L_VI (paper Eq. 8), evaluated with the model's ``gpcis`` protocol preset.
While extra clicks are simulated the model is in eval mode but keeps the training eps^2 (1e-2), as
upstream does.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch

from ...lightning.module import IISModule
from .loss import GPCISLoss
from .model import GPCISTestOptions

__all__ = ["GPCIS", "GPCISName", "GPCIS_LR_MULT"]

# the registered sizes (a contract test keeps this equal to iis.list_models("gpcis_*"))
GPCISName = Literal["gpcis_resnet50", "gpcis_hrnet18s", "gpcis_segformer_b0", "gpcis_test"]

# LRMult(0.1) on the whole segmentor, the click stem and the GP head at 1x (methods.md §3.5)
GPCIS_LR_MULT = {"segmentor.maps_transform": 1.0, "segmentor": 0.1}


class GPCIS(IISModule):
    """Args: as :class:`iis.lightning.IISModule`; ``lr_mult`` None = :data:`GPCIS_LR_MULT`;
    ``vi_weight``: weight of L_VI (1e-3, paper Eq. 8)."""

    def __init__(self, model: GPCISName = "gpcis_resnet50", model_kwargs: GPCISTestOptions | None = None,
                 lr: float = 5e-3, lr_mult: dict[str, float] | None = None, milestones: Sequence[int] = (190, 220),
                 vi_weight: float = 1e-3, **kwargs: Any):
        super().__init__(model=model, model_kwargs=model_kwargs, lr=lr,
                         lr_mult=dict(GPCIS_LR_MULT) if lr_mult is None else lr_mult, milestones=milestones,
                         loss=None, **kwargs)
        self.criterion = GPCISLoss(vi_weight=vi_weight)

    def simulation_forward(self, image, clicks, prev_mask):
        return self.model(image, clicks, prev_mask, eps2=self.model.train_eps2)

    def compute_loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        terms = self.criterion(outputs, target)
        return terms["loss"], terms
