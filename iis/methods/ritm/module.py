"""RITM training: the base iterative loop with NFL + 0.4 x auxiliary BCE and the authors' schedule.

Defaults are those of ``models/iter_mask/hrnet18_cocolvis_itermask_3p.py`` (protocol.md §C.7, §D.5):
Adam lr 5e-4 (betas 0.9/0.999), the model's LRMult (backbone, aux head and classifier x0.1; OCR layers
and click stem x1), MultiStepLR at epochs [200, 220] x0.1 (230 epochs, set on the trainer), up to 3
extra simulated clicks, loss NFL (alpha 0.5, gamma 2) + 0.4 x BCE on ``aux_logits``, evaluated with
the ``ritm`` preset.

The GPCIS paper's RITM baselines on its backbones (``ritm_gpcis_<backbone>``, and ``ritm_hrnet18s``
for its HRNet18s-S2 row) use this module too; their experiments set GPCIS's settings (lr, milestones,
``protocol: gpcis``) explicitly. ``lr_mult=None`` and ``protocol=None`` take the model's own
``default_lr_mult`` / ``default_protocol``.
"""

from __future__ import annotations

from typing import Any

import torch

from ...lightning.module import IISModule
from .loss import RITMLoss

__all__ = ["RITM"]


class RITM(IISModule):
    """Args: see :class:`iis.lightning.module.IISModule`; ``aux_weight``: weight of the auxiliary BCE."""

    def __init__(self, model: str = "ritm_hrnet18", lr: float = 5e-4, lr_mult: dict[str, float] | None = None,
                 milestones: list[int] | None = None, protocol: str | None = None, loss: str = "nfl",
                 aux_weight: float = 0.4, **kwargs: Any):
        milestones = [200, 220] if milestones is None else milestones
        super().__init__(model=model, lr=lr, lr_mult=lr_mult, milestones=milestones, protocol=protocol or "ritm",
                         loss=loss, **kwargs)
        if lr_mult is None:
            self.hparams.lr_mult = dict(getattr(self.model, "default_lr_mult", {}))
        if protocol is None:
            self.hparams.protocol = getattr(self.model, "default_protocol", "ritm")
        self.hparams.aux_weight = float(aux_weight)
        self.criterion = RITMLoss(loss, aux_weight, **(self.hparams.loss_kwargs or {}))

    def compute_loss(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        terms = self.criterion(outputs, target)
        return terms["loss"], terms
