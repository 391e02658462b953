"""``Custom``: fine-tune any registered model on your own folder of images + masks.

The training loop, sampler, simulated clicks and loss are :class:`iis.lightning.IISModule`'s (RITM's
iterative training, NFL). On top of it this module adds what fine-tuning needs:

* ``model``: any registered model name (default ``ritm_effnet_lite0``, our own ImageNet-initialised baseline);
* ``weights``: start from a file: an iis checkpoint (``iis-train`` ``last.ckpt`` or ``iis-convert`` output) or
  an official checkpoint of the authors' code, read by :func:`iis.convert.load_weights` (safe loading,
  converted in memory) and loaded strictly with :func:`iis.eval.checkpoint.load_fitting` (one line naming
  what does not fit);
* ``freeze_backbone``: no gradient for the parameters under ``backbone_prefix`` and their BatchNorm statistics
  kept (eval mode), i.e. train the click stem and decoder only;
* ``backbone_lr_mult``: learning-rate multiplier of the parameters under ``backbone_prefix``.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from ...core.errors import IISError
from ...lightning.module import IISModule, LossName

__all__ = ["Custom", "CustomName"]

# the models registered by this package (a contract test keeps this equal to what iis/methods/custom registers);
# `model` takes any registered name
CustomName = Literal["ritm_effnet_lite0", "ritm_effnet_test"]


class Custom(IISModule):
    """Args: as :class:`iis.lightning.IISModule`, plus

    Args:
        weights: iis or official checkpoint to start from (None = the model's own initialisation).
        freeze_backbone: train everything but ``backbone_prefix`` (whose BN stays in eval mode).
        backbone_lr_mult: lr multiplier of ``backbone_prefix`` (0.1: RITM's LRMult for ImageNet backbones);
            an explicit ``lr_mult`` replaces this rule.
        backbone_prefix: parameter-name prefix of the encoder (``backbone`` for ritm_effnet_lite0 and the
            RITM HRNets, ``segmentor`` for the GPCIS segmentors, ``encoder`` for SimpleClick).
    """

    def __init__(self, model: str = "ritm_effnet_lite0", model_kwargs: dict[str, Any] | None = None,
                 weights: str | None = None, freeze_backbone: bool = False, backbone_lr_mult: float = 0.1,
                 backbone_prefix: str = "backbone", lr: float = 5e-4, lr_mult: dict[str, float] | None = None,
                 loss: LossName | None = "nfl", **kwargs: Any):
        super().__init__(model=model, model_kwargs=model_kwargs, lr=lr, lr_mult=lr_mult, loss=loss, **kwargs)
        if backbone_lr_mult < 0:
            raise IISError(f"model.backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
        prefix = backbone_prefix.rstrip(".")
        names = [n for n, _ in self.model.named_parameters()]
        if (freeze_backbone or lr_mult is None) and not any(n.startswith(prefix + ".") for n in names):
            if freeze_backbone:
                raise IISError(f"model.backbone_prefix {prefix!r}: no parameter of {model!r} starts with it "
                               f"(its top-level parts: {', '.join(sorted({n.split('.')[0] for n in names}))})")
            prefix = ""  # a model without that part: one learning rate
        if lr_mult is None and prefix:
            self.hparams.lr_mult = {prefix + ".": float(backbone_lr_mult)}
        self.hparams.update(weights=weights, freeze_backbone=bool(freeze_backbone),
                            backbone_lr_mult=float(backbone_lr_mult), backbone_prefix=backbone_prefix)
        if weights:
            self._load_weights(weights, model)
        self._frozen: list[nn.Module] = []
        if freeze_backbone:
            part = self.model.get_submodule(prefix)
            for p in part.parameters():
                p.requires_grad_(False)
            self._frozen = [part]

    def _load_weights(self, path: str, model: str) -> None:
        from ...convert.api import load_weights
        from ...eval.checkpoint import clean_state_dict, load_fitting

        sd, _info = load_weights(path, model, what="model.weights")
        load_fitting(self.model, clean_state_dict(sd), f"model.weights {path}", model)

    def train(self, mode: bool = True):
        super().train(mode)
        for part in self._frozen:  # frozen encoder: BatchNorm keeps its ImageNet statistics
            part.eval()
        return self
