"""CPlot training (Liu et al., ECCV 2024), deltas on the base iterative loop.

Paper §5.1 recipe: SimpleClick ViT-B, 448 crops with SimpleClick's augmentations, Adam 5e-5 dropping
to 5e-6 after 50 of 55 epochs, 4 GPUs; loss Eq. 12 (NFL on the mask + alpha NFL(mean S*) + beta
min_i NFL(S*_i), alpha = beta = 1); evaluated with the model's ``simpleclick`` protocol preset.
The ablations (Tables 3-6) are typed :class:`CPlotOptions` in ``model_kwargs``.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch

from ...lightning.module import IISModule
from .loss import CPlotLoss
from .model import CPlotOptions

__all__ = ["CPlot", "CPlotName"]

# the registered sizes (a contract test keeps this equal to iis.list_models("cplot_*"))
CPlotName = Literal["cplot_vit_base", "cplot_vit_xtiny", "cplot_test"]


class CPlot(IISModule):
    """Args: as :class:`iis.lightning.IISModule`; ``alpha``, ``beta``: weights of Eq. 12 (1, 1)."""

    def __init__(self, model: CPlotName = "cplot_vit_base", model_kwargs: CPlotOptions | None = None,
                 lr: float = 5e-5, milestones: Sequence[int] = (50,), alpha: float = 1.0, beta: float = 1.0,
                 **kwargs: Any):
        super().__init__(model=model, model_kwargs=model_kwargs, lr=lr, milestones=milestones, loss=None, **kwargs)
        self.criterion = CPlotLoss(alpha=alpha, beta=beta)

    def compute_loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss, terms = self.criterion(outputs, target)
        return loss, {"loss": loss, **{k: v for k, v in terms.items() if torch.is_floating_point(v)}}
