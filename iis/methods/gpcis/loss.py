"""GPCIS training loss: L = L_NFL(logits, gt) + α·L_VI with α = 1e-3 (paper Eq. 13, §4.4).

The code (``models/gp_sbd_resnet50.py``) uses RITM's ``NormalizedFocalLossSigmoid(alpha=0.5, gamma=2)``
on the full-resolution GP logits and adds ``0.001·u_loss`` unweighted; L_VI itself is computed by the GP
head (:meth:`iis.methods.gpcis.gp.GPHead._vi_loss`, code or paper form) and returned as ``out["kl"]``.
"""

from __future__ import annotations

import torch
from torch import nn

from iis.models.losses import build_loss

__all__ = ["GPCISLoss"]


class GPCISLoss(nn.Module):
    """NFL on the output logits plus ``vi_weight`` times the GP head's L_VI.

    Args:
        vi_weight: α of Eq. 13 (1e-3).
        seg_loss: name of the pixel loss in :func:`iis.models.losses.build_loss` ("nfl": alpha 0.5, gamma 2,
            ignore -1, as RITM).
        **seg_kwargs: passed to the pixel loss.
    """

    def __init__(self, vi_weight: float = 1e-3, seg_loss: str = "nfl", **seg_kwargs):
        super().__init__()
        if vi_weight < 0:
            raise ValueError(f"vi_weight must be >= 0, got {vi_weight}")
        self.vi_weight = float(vi_weight)
        self.seg = build_loss(seg_loss, **seg_kwargs)

    def forward(self, out: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Total and parts.

        Args:
            out: :meth:`GPCISModel.forward_train` output (needs ``logits (B, 1, H, W)`` and ``kl``).
            target: ``(B, 1, H, W)`` GT, 1 object / 0 background / -1 ignore.

        Returns:
            dict ``loss`` (to backpropagate), ``nfl`` and ``vi`` (unweighted L_VI), all scalars.
        """
        if "logits" not in out or "kl" not in out:
            raise KeyError(f"out must contain 'logits' and 'kl' (GPCISModel.forward_train), got {sorted(out)}")
        seg = self.seg(out["logits"], target)
        vi = out["kl"]
        return {"loss": seg + self.vi_weight * vi, "nfl": seg, "vi": vi}
