"""AdaptiveClick training (Lin et al., TNNLS 2024), deltas on the base iterative loop.

Defaults follow the authors' ViT-B configs (methods.md §1.9): Adam 5e-5, x0.1 at epoch 40 of 60,
448 crops, evaluated with the model's ``simpleclick`` protocol preset; the loss is the set criterion
(Hungarian matching, class CE + AFL + Dice with deep supervision). ``targets``/``class_weights`` select
"fixed" (default, used by every experiment here) or "faithful" (the two upstream quirks of docs/methods.md §1.6).
The paper's ablations are typed switches here: ``mask_loss`` (loss study, Tables VI-VII; ``nfl`` is
"AdaptiveClick + NFL" of Table X), ``afl_adaptive`` / ``afl_use_mu`` (ADA and AGR, Table XI) and
``model_kwargs.click_aware`` (CAMD, Table X).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, TypedDict

import torch

from ...core.errors import IISError
from ...lightning.module import IISModule, LossName
from .loss import AdaptiveClickCriterion
from .model import AdaptiveClickOptions

__all__ = ["AdaptiveClick", "AdaptiveClickName", "CriterionOptions"]

# the registered sizes (a contract test keeps this equal to iis.list_models("adaptiveclick_*"))
AdaptiveClickName = Literal["adaptiveclick_vit_base", "adaptiveclick_vit_huge", "adaptiveclick_test"]


class CriterionOptions(TypedDict, total=False):
    """Further keyword options of :class:`AdaptiveClickCriterion` (defaults and meaning there):
    loss weights, the group mix, AFL's gamma/delta/alpha and class weight, deep supervision, and
    ``mask_loss_kwargs`` for a non-AFL ``mask_loss`` of the loss study."""

    weight_ce: float
    weight_afl: float
    weight_dice: float
    weight_mask: float
    group_mix: Sequence[float]
    no_object_weight: float
    afl_gamma: float
    afl_delta: float
    afl_alpha: float
    afl_class_weight: float | None
    deep_supervision: bool
    mask_loss_kwargs: dict | None


class AdaptiveClick(IISModule):
    """Args: as :class:`iis.lightning.IISModule`, plus:

    Args:
        targets, class_weights: "fixed" or "faithful" target building and CE class weights (methods.md §1.6).
        mask_loss: the per-mask pixel loss; ``afl`` (the paper's) or another loss of the zoo (loss study).
        afl_adaptive: AFL's adaptive gamma (ADA); False = fixed gamma (Table XI "w/o ADA").
        afl_use_mu: AFL's normaliser mu (AGR); False = mu 1 (Table XI "w/o AGR").
        criterion_kwargs: further :class:`CriterionOptions`.
    """

    def __init__(self, model: AdaptiveClickName = "adaptiveclick_vit_base",
                 model_kwargs: AdaptiveClickOptions | None = None, lr: float = 5e-5, milestones: Sequence[int] = (40,),
                 targets: Literal["fixed", "faithful"] = "fixed", class_weights: Literal["fixed", "faithful"] = "fixed",
                 mask_loss: LossName = "afl", afl_adaptive: bool = True, afl_use_mu: bool = True,
                 criterion_kwargs: CriterionOptions | None = None, **kwargs: Any):
        super().__init__(model=model, model_kwargs=model_kwargs, lr=lr, milestones=milestones, loss=None, **kwargs)
        crit = dict(criterion_kwargs or {})
        if mask_loss == "afl":
            crit["mask_loss_kwargs"] = {**(crit.get("mask_loss_kwargs") or {}),
                                        **({} if afl_adaptive else {"adaptive": False}),
                                        **({} if afl_use_mu else {"use_mu": False})}
        elif not (afl_adaptive and afl_use_mu):
            raise IISError(f"model.afl_adaptive / model.afl_use_mu switch parts of AFL; they need mask_loss 'afl', "
                           f"got {mask_loss!r}")
        self.criterion = AdaptiveClickCriterion(targets=targets, class_weights=class_weights, mask_loss=mask_loss,
                                                **crit)

    def compute_loss(self, outputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        total, terms = self.criterion(outputs, target)
        # log the final decoder output's terms; the auxiliary ones are in the total
        return total, {"loss": total, **{k: v for k, v in terms.items() if k in ("loss_ce", "loss_afl", "loss_dice")}}
