"""RITM's training loss: NFL on the logits + 0.4 x BCE on the OCR auxiliary output (protocol.md §D.5).

The auxiliary term is the authors' ``SigmoidBinaryCrossEntropyLoss``: per-pixel BCE with logits,
ignored pixels (label -1) set to zero, **averaged over all pixels** of each sample (ignored ones
included, unlike :class:`iis.models.losses.BCELoss`, which divides by the valid pixels), then over the
batch (``ISTrainer.add_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.losses import build_loss

__all__ = ["AuxBCELoss", "RITMLoss"]


class AuxBCELoss(nn.Module):
    """``mean_b mean_pixels(valid * BCE(logits, label))``; ``ignore_index`` pixels count as zero loss."""

    def __init__(self, ignore_index: int = -1):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        valid = target != self.ignore_index
        label = torch.where(valid, target, torch.zeros_like(target)).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, label, reduction="none") * valid
        return loss.flatten(1).mean(1).mean()


class RITMLoss(nn.Module):
    """``{"loss", <main>[, "aux"]}``: main loss on ``logits`` [+ ``aux_weight`` x AuxBCE on ``aux_logits``].

    Args:
        main: loss name of :data:`iis.models.losses.LOSSES` on the logits (``"nfl"``, alpha 0.5, gamma 2,
            in every RITM HRNet config; ``models/cocolvis_loss_ablation/`` also tries fl/bce/softiou).
        aux_weight: weight of the auxiliary BCE (0.4 in every RITM HRNet config); 0 disables it. Models
            without ``aux_logits`` (the GPCIS-backbone baselines) get the main loss only.
        **main_kwargs: arguments of the main loss.
    """

    def __init__(self, main: str = "nfl", aux_weight: float = 0.4, **main_kwargs):
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.main_name = str(main)
        self.aux_weight = float(aux_weight)
        self.main = build_loss(main, **main_kwargs)
        self.aux = AuxBCELoss()

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {self.main_name: self.main(outputs["logits"], target)}
        loss = terms[self.main_name]
        if self.aux_weight and "aux_logits" in outputs:
            terms["aux"] = self.aux(outputs["aux_logits"], target)
            loss = loss + self.aux_weight * terms["aux"]
        return {"loss": loss, **terms}
