"""AdaptiveClick's set criterion: Hungarian matching, then class CE + AFL + Dice with deep supervision.

Weights (paper §IV-B "Implementation Details"; upstream weight dict, docs/methods.md §1.8):
``lambda_cli = 2`` (class CE), ``lambda_afl = 5``, ``lambda_dice = 5``, ``lambda_mask = 1`` (multiplies
AFL and Dice, Eq. (21)-(22)); AFL gamma 2, delta 0.4, alpha 1. Every one of the 9 auxiliary CAMD
outputs gets the same terms with the same weights, matched separately (methods.md §1.6).

The scalar is upstream's ``loss_inference`` mix (methods.md §1.8, kept per §1.11):
``0.3 * sum(weighted CE) + 0.3 * sum(weighted Dice) + 0.4 * sum(weighted AFL)`` over the 10 outputs.
``group_mix=(1, 1, 1)`` gives the plain sum of the paper's Eq. (22).

Two upstream target quirks (methods.md §1.6) are switchable, default "fixed":

* ``targets``: "fixed" downsamples the GT by area averaging and thresholds at 0.5, giving one target
  (label 1) per image with foreground, none otherwise. "faithful" reproduces upstream: bilinear
  downsampling, then one target per distinct value of the soft map after the first, each labelled
  ``floor(value)``. Soft edge values become extra copies of the background channel with label 0, and
  only pixels equal to 1 count as foreground.
* ``class_weights``: "fixed" weights the CE as Mask2Former does (no-object 0.1, target 1). "faithful"
  uses upstream's ``[1, eos_coef]``, which down-weights the target class instead.

Ignore pixels (-1) are ours: upstream has no ignore label. In both modes a 1/4-resolution pixel is
ignored by the mask losses and the matching costs when at least half of it is ignore, and ignore
counts as background when the faithful soft map is built.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iis.models.losses import AdaptiveFocalLoss, DiceLoss, build_loss

from .matcher import HungarianMatcher
from .model import TARGET_CLASS

__all__ = ["AdaptiveClickCriterion", "build_targets"]

_MODES = ("fixed", "faithful")


def _check_mode(name: str, value: str) -> str:
    if value not in _MODES:
        raise ValueError(f"{name} must be one of {_MODES}, got {value!r}")
    return value


def build_targets(target_mask: torch.Tensor, size: tuple[int, int], mode: str = "fixed",
                  padded_size: tuple[int, int] | None = None) -> list[dict]:
    """Per-image matching targets at the prediction resolution.

    Args:
        target_mask: ``(B, 1, H, W)`` GT, 1 object / 0 background / -1 ignore.
        size: prediction size ``(h, w)`` (1/4 of the padded input).
        mode: "fixed" or "faithful" (module docstring).
        padded_size: canvas ``(Hp, Wp)`` the predictions cover when the model padded its input; the
            GT is padded bottom/right with ignore to it first.

    Returns:
        B dicts with ``labels (M,)`` int64, ``masks (M, h, w)`` float {0, 1} and ``valid (h, w)`` bool.
    """
    _check_mode("targets", mode)
    if target_mask.dim() != 4 or target_mask.shape[1] != 1:
        raise ValueError(f"target_mask must be (B, 1, H, W), got {tuple(target_mask.shape)}")
    t = target_mask.float()
    if padded_size is not None and tuple(padded_size) != tuple(t.shape[-2:]):
        Hp, Wp = padded_size
        t = F.pad(t, (0, Wp - t.shape[-1], 0, Hp - t.shape[-2]), value=-1.0)
    ignore = F.interpolate((t == -1).float(), size=size, mode="area")[:, 0]
    valid = ignore < 0.5
    out = []
    if mode == "fixed":
        fg = F.interpolate((t == 1).float(), size=size, mode="area")[:, 0]
        # majority vote among the valid sub-pixels of each output pixel
        fg_mask = fg >= 0.5 * (1.0 - ignore).clamp_min(1e-6)
        for b in range(t.shape[0]):
            m = (fg_mask[b] & valid[b]).float()
            has = bool(m.any())
            out.append({"labels": torch.ones(int(has), dtype=torch.int64, device=t.device),
                        "masks": m[None] if has else m.new_zeros(0, *size), "valid": valid[b]})
        return out
    soft = F.interpolate(t.clamp_min(0.0), size=size, mode="bilinear", align_corners=False)[:, 0]
    for b in range(t.shape[0]):
        cls = soft[b].long()  # floor: soft edges -> 0
        labels = torch.unique(soft[b]).long()[1:]  # one target per distinct value after the first
        masks = torch.stack([(cls == c).float() for c in labels]) if labels.numel() else soft.new_zeros(0, *size)
        out.append({"labels": labels, "masks": masks, "valid": valid[b]})
    return out


class AdaptiveClickCriterion(nn.Module):
    """``criterion(outputs, target_mask) -> (total_loss, terms)``.

    Args:
        weight_ce, weight_afl, weight_dice: lambda_cli 2, lambda_afl 5, lambda_dice 5 (paper §IV-B).
        weight_mask: lambda_mask 1, multiplies AFL and Dice (paper Eq. (22), Table XIII).
        group_mix: (CE, Dice, AFL) multipliers of the summed groups; upstream (0.3, 0.3, 0.4).
        no_object_weight: CE weight of the down-weighted class (eos_coef 0.1).
        targets, class_weights: "fixed" (default) or "faithful" (module docstring).
        afl_gamma, afl_delta, afl_alpha: AFL defaults 2, 0.4, 1 (paper §IV-B).
        afl_class_weight: 0.5 as in upstream's criterion (halves the AFL); None = paper's form.
        mask_loss, mask_loss_kwargs: the per-mask pixel loss; ``afl`` (default) or any name of
            ``iis.models.losses.LOSSES`` for the loss study (Tables VI-VII; the term keeps the
            ``loss_afl`` key and weight). The matching cost keeps AFL.
        deep_supervision: also supervise ``outputs["aux_outputs"]``.
        matcher: a :class:`HungarianMatcher`; default uses the same 2/5/5 cost weights.

    ``outputs`` is :meth:`AdaptiveClickModel.forward_train`'s dict. ``terms`` holds the unweighted
    ``loss_ce``, ``loss_afl``, ``loss_dice`` of the final output and ``loss_*_{i}`` for aux output i.
    """

    def __init__(self, *, weight_ce: float = 2.0, weight_afl: float = 5.0, weight_dice: float = 5.0,
                 weight_mask: float = 1.0, group_mix: Sequence[float] = (0.3, 0.3, 0.4),
                 no_object_weight: float = 0.1, targets: str = "fixed", class_weights: str = "fixed",
                 afl_gamma: float = 2.0, afl_delta: float = 0.4, afl_alpha: float = 1.0,
                 afl_class_weight: float | None = 0.5, deep_supervision: bool = True,
                 matcher: HungarianMatcher | None = None, mask_loss: str = "afl",
                 mask_loss_kwargs: dict | None = None):
        super().__init__()
        if len(group_mix) != 3:
            raise ValueError(f"group_mix must be 3 numbers (ce, dice, afl), got {group_mix!r}")
        self.targets = _check_mode("targets", targets)
        self.class_weights = _check_mode("class_weights", class_weights)
        self.weight_dict = {"loss_ce": weight_ce, "loss_afl": weight_mask * weight_afl,
                            "loss_dice": weight_mask * weight_dice}
        self.group_mix = {"loss_ce": group_mix[0], "loss_dice": group_mix[1], "loss_afl": group_mix[2]}
        self.deep_supervision = deep_supervision
        self.matcher = matcher or HungarianMatcher(cost_class=weight_ce, cost_mask=weight_afl, cost_dice=weight_dice,
                                                   afl_kwargs=dict(gamma=afl_gamma, delta=afl_delta, alpha=afl_alpha))
        if mask_loss == "afl":
            # mask_loss_kwargs may switch off ADA (adaptive=False) or AGR (use_mu=False): Table XI
            self.afl = AdaptiveFocalLoss(gamma=afl_gamma, delta=afl_delta, alpha=afl_alpha,
                                         class_weight=afl_class_weight, reduction="none", **(mask_loss_kwargs or {}))
        else:  # the loss study of Tables VI-VII: the AFL term replaced by another loss of the zoo
            self.afl = build_loss(mask_loss, reduction="none", **(mask_loss_kwargs or {}))
        self.dice = DiceLoss(reduction="none")
        ce_w = torch.ones(2)
        # fixed: Mask2Former's convention (no-object down-weighted); faithful: upstream's inverted vector
        ce_w[1 - TARGET_CLASS if self.class_weights == "fixed" else TARGET_CLASS] = no_object_weight
        self.register_buffer("ce_weight", ce_w, persistent=False)

    @staticmethod
    def _num_masks(targets: list[dict], device: torch.device) -> float:
        n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # average over ranks
            torch.distributed.all_reduce(n)
            n = n / torch.distributed.get_world_size()
        return max(float(n.item()), 1.0)

    def single_output(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[dict],
                      num_masks: float) -> dict[str, torch.Tensor]:
        """Unweighted CE / AFL / Dice of one decoder output (matched on its own)."""
        indices = self.matcher({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
        B, Q = pred_logits.shape[:2]
        classes = torch.full((B, Q), 1 - TARGET_CLASS, dtype=torch.int64, device=pred_logits.device)
        src_b, src_q, tgt_masks = [], [], []
        for b, ((qi, ti), tgt) in enumerate(zip(indices, targets)):
            qi, ti = qi.to(pred_logits.device), ti.to(pred_logits.device)
            classes[b, qi] = tgt["labels"][ti].to(pred_logits.device)
            src_b.append(torch.full_like(qi, b))
            src_q.append(qi)
            # ignored pixels become -1 so the pixel losses skip them
            tgt_masks.append(torch.where(tgt["valid"], tgt["masks"][ti], torch.full_like(tgt["masks"][ti], -1.0)))
        loss_ce = F.cross_entropy(pred_logits.float().transpose(1, 2), classes, self.ce_weight.to(pred_logits.device))
        src_b, src_q = torch.cat(src_b), torch.cat(src_q)
        if src_b.numel() == 0:  # no targets anywhere: mask losses are 0 but keep the graph
            zero = pred_masks.sum() * 0.0
            return {"loss_ce": loss_ce, "loss_afl": zero, "loss_dice": zero}
        src = pred_masks[src_b, src_q].float().unsqueeze(1)  # (K, 1, h, w)
        tgt = torch.cat(tgt_masks).to(src).unsqueeze(1)
        return {"loss_ce": loss_ce, "loss_afl": self.afl(src, tgt).sum() / num_masks,
                "loss_dice": self.dice(src, tgt).sum() / num_masks}

    def forward(self, outputs: dict, target_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            outputs: ``pred_logits (B,Q,2)``, ``pred_masks (B,Q,h,w)``, optional ``aux_outputs`` and
                ``padded_size``.
            target_mask: ``(B, 1, H, W)`` GT with -1 ignore, at the model's input resolution.

        Returns:
            total loss (scalar) and the unweighted named terms.
        """
        for key in ("pred_logits", "pred_masks"):
            if key not in outputs:
                raise KeyError(f"outputs lacks {key!r}; pass AdaptiveClickModel.forward_train's dict")
        pred_masks = outputs["pred_masks"]
        if target_mask.shape[0] != pred_masks.shape[0]:
            raise ValueError(f"target_mask batch {target_mask.shape[0]} != prediction batch {pred_masks.shape[0]}")
        with torch.no_grad():
            targets = build_targets(target_mask.to(pred_masks.device), tuple(pred_masks.shape[-2:]), self.targets,
                                    outputs.get("padded_size"))
        num_masks = self._num_masks(targets, pred_masks.device)
        terms = self.single_output(outputs["pred_logits"], pred_masks, targets, num_masks)
        if self.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_terms = self.single_output(aux["pred_logits"], aux["pred_masks"], targets, num_masks)
                terms.update({f"{k}_{i}": v for k, v in aux_terms.items()})
        total = pred_masks.new_zeros(())
        for name, value in terms.items():
            base = name if name in self.weight_dict else name.rsplit("_", 1)[0]
            total = total + self.group_mix[base] * self.weight_dict[base] * value
        return total, terms
