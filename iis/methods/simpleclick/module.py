"""SimpleClick training (Liu et al., ICCV 2023): the base iterative loop with NFL, deltas only.

Defaults are ``plainvit_base448_cocolvis_itermask`` (protocol.md §C.7): Adam 5e-5 on every
parameter, no weight decay, x0.1 at epoch 50 of 55, NFL (alpha 0.5, gamma 2), evaluated with the
``simpleclick`` protocol preset.
"""

from __future__ import annotations

from typing import Any

from ...lightning.module import IISModule

__all__ = ["SimpleClick"]


class SimpleClick(IISModule):
    def __init__(self, model: str = "simpleclick_vit_base", lr: float = 5e-5, milestones: list[int] | None = None,
                 protocol: str = "simpleclick", loss: str = "nfl", **kwargs: Any):
        super().__init__(model=model, lr=lr, milestones=[50] if milestones is None else milestones,
                         protocol=protocol, loss=loss, **kwargs)
