"""RITM training: the base iterative loop with NFL + 0.4 x auxiliary BCE and the authors' schedule.

Defaults are those of ``models/iter_mask/hrnet18_cocolvis_itermask_3p.py`` (docs/protocol.md §C.7, §D.5):
Adam lr 5e-4 (betas 0.9/0.999), the model's LRMult (``default_lr_mult``: backbone, aux head and classifier
x0.1; OCR layers and click stem x1), MultiStepLR at epochs [200, 220] x0.1 (230 epochs, set on the
trainer), up to 3 extra simulated clicks, loss NFL (alpha 0.5, gamma 2) + 0.4 x BCE on ``aux_logits``,
evaluated with the model's preset (``ritm``).

The GPCIS paper's RITM baselines on its backbones (``ritm_gpcis_<backbone>``, and ``ritm_hrnet18s`` for
its HRNet18s-S2 row) use this module too; their experiments (``experiments/ritm/gpcis_*.yaml``) set
GPCIS's optimiser, schedule and ``protocol: gpcis`` explicitly.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch

from ...lightning.module import IISModule, LossName
from .loss import RITMLoss
from .model import RITMTestOptions

__all__ = ["RITM", "RITMName"]

# the registered sizes (a contract test keeps this equal to iis.list_models("ritm_*"))
RITMName = Literal["ritm_hrnet18", "ritm_hrnet18s", "ritm_hrnet32", "ritm_hrnet18_baseline", "ritm_hrnet_test",
                   "ritm_gpcis_resnet50", "ritm_gpcis_segformer_b0", "ritm_gpcis_test"]


class RITM(IISModule):
    """Args: as :class:`iis.lightning.IISModule`; ``lr_mult`` None = the model's ``default_lr_mult``;
    ``aux_weight``: weight of the auxiliary BCE (0.4, RITM's ``instance_aux_loss_weight``)."""

    def __init__(self, model: RITMName = "ritm_hrnet18", model_kwargs: RITMTestOptions | None = None,
                 lr: float = 5e-4, lr_mult: dict[str, float] | None = None, milestones: Sequence[int] = (200, 220),
                 loss: LossName = "nfl", aux_weight: float = 0.4, **kwargs: Any):
        super().__init__(model=model, model_kwargs=model_kwargs, lr=lr, lr_mult=lr_mult, milestones=milestones,
                         loss=loss, **kwargs)
        if lr_mult is None:
            self.hparams.lr_mult = dict(getattr(self.model, "default_lr_mult", {}))
        self.hparams.aux_weight = float(aux_weight)
        self.criterion = RITMLoss(loss, aux_weight, **(self.hparams.loss_kwargs or {}))

    def compute_loss(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        terms = self.criterion(outputs, target)
        return terms["loss"], terms
