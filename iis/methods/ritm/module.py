"""RITM-style baselines on the GPCIS backbones: the base loop with NFL and the GPCIS schedule.

The paper's "RITM vs GPCIS under the same backbone" comparison is this module with ``ritm_<backbone>``
against :class:`iis.methods.gpcis.module.GPCIS` with ``gpcis_<backbone>``: same data, optimiser and
schedule (methods.md §3.5), only the head and loss differ.
"""

from __future__ import annotations

from typing import Any

from ...lightning.module import IISModule

__all__ = ["RITM"]


class RITM(IISModule):
    def __init__(self, model: str = "ritm_resnet50", lr: float = 5e-3, lr_mult: dict[str, float] | None = None,
                 milestones: list[int] | None = None, protocol: str = "gpcis", loss: str = "nfl", **kwargs: Any):
        lr_mult = {"segmentor.maps_transform": 1.0, "segmentor": 0.1} if lr_mult is None else lr_mult
        super().__init__(model=model, lr=lr, lr_mult=lr_mult, milestones=[190, 220] if milestones is None else milestones,
                         protocol=protocol, loss=loss, **kwargs)
