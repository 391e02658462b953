"""SimpleClick training (Liu et al., ICCV 2023): the base iterative loop with NFL, deltas only.

Defaults are ``plainvit_base448_cocolvis_itermask`` (protocol.md §C.7): Adam 5e-5 on every
parameter, no weight decay, x0.1 at epoch 50 of 55, NFL (alpha 0.5, gamma 2), evaluated with the
model's ``simpleclick`` protocol preset. The experiment files state only what differs from here.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from ...lightning.module import IISModule, LossName
from .model import SimpleClickOptions

__all__ = ["SimpleClick", "SimpleClickName"]

# the registered sizes (a contract test keeps this equal to iis.list_models("simpleclick_*"))
SimpleClickName = Literal["simpleclick_vit_test", "simpleclick_vit_nano", "simpleclick_vit_xtiny",
                          "simpleclick_vit_base", "simpleclick_vit_large", "simpleclick_vit_huge"]


class SimpleClick(IISModule):
    """Args: as :class:`iis.lightning.IISModule`; ``model_kwargs`` are :class:`SimpleClickOptions`."""

    def __init__(self, model: SimpleClickName = "simpleclick_vit_base", model_kwargs: SimpleClickOptions | None = None,
                 lr: float = 5e-5, milestones: Sequence[int] = (50,), loss: LossName = "nfl", **kwargs: Any):
        super().__init__(model=model, model_kwargs=model_kwargs, lr=lr, milestones=milestones, loss=loss, **kwargs)
