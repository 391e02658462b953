"""``IISModule``: the LightningModule every trainable method derives from.

It owns the iterative training of RITM/SimpleClick (protocol.md §C.5): for each batch draw
0..``max_num_next_clicks`` extra clicks (one draw for the whole batch), simulate them without
gradients with the model in eval mode (predict -> half-max random click -> soft previous mask),
then do the final forward with gradients. A method only overrides :meth:`compute_loss` (and, if it
needs them, the model's ``forward_train`` outputs).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import lightning as L
import numpy as np
import torch

from ..core.clicker import training_clicks
from ..core.errors import IISError
from ..core.loop import interactive_loop
from ..core.protocol import PRESETS
from ..models.losses import build_loss
from ..models.registry import PRETRAINED_KEY, create_model

__all__ = ["IISModule", "LossName", "NO_PRETRAINED"]

# names of iis.models.losses.LOSSES (a test keeps them equal), typed so a misspelt loss fails at parse time
LossName = Literal["bce", "wbce", "balanced_ce", "soft_iou", "focal", "nfl", "poly", "afl", "dice"]
NO_PRETRAINED = "none"  # `pretrained: none`: start from random weights on purpose


class IISModule(L.LightningModule):
    """Base module: model from the registry + loss from the zoo + Adam/MultiStep.

    Every default of a recipe lives in one signature: this one for the shared loop, a method's module for
    its own (lr, schedule, model size); the experiment files only state what differs.

    Args:
        model: registered model name (``iis.list_models()``).
        model_kwargs: keyword options of the model builder (checked against the model's registered options).
        pretrained: local file of the backbone weights the builder loads (an MAE checkpoint for the ViTs, an
            ImageNet state dict for the GPCIS/RITM backbones), or ``none`` to train from random weights.
            ``iis-train`` refuses to start a model registered with expected weights while this is unset.
        loss: loss name from ``iis.models.losses.LOSSES`` (NFL for SimpleClick, docs/protocol.md §D.5).
        loss_kwargs: keyword arguments of the loss.
        lr: Adam learning rate (5e-5 for SimpleClick ViTs, docs/protocol.md §C.7).
        lr_mult: ``{parameter-name prefix: multiplier}``, e.g. ``{"backbone": 0.1}`` (RITM/GPCIS).
        betas, weight_decay: Adam settings (reference: (0.9, 0.999), no weight decay).
        milestones, gamma: MultiStepLR, stepped once per epoch; no milestones = constant lr.
        max_num_next_clicks: extra simulated clicks per batch are drawn from 0..this (inclusive).
        click_thresh: probability threshold of the training clicker (0.49).
        protocol: evaluation preset stored in checkpoints for ``iis-eval --ckpt``; None = the model's own
            ``default_protocol``.
        seed: seeds the per-step random draws, so a resumed run repeats them.
    """

    def __init__(
        self,
        model: str = "simpleclick_vit_test",
        model_kwargs: dict[str, Any] | None = None,
        pretrained: str | None = None,
        loss: LossName | None = "nfl",
        loss_kwargs: dict[str, Any] | None = None,
        lr: float = 5e-5,
        lr_mult: dict[str, float] | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        max_num_next_clicks: int = 3,
        click_thresh: float = 0.49,
        protocol: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if protocol is not None and protocol not in PRESETS:
            raise IISError(f"model.protocol: unknown preset {protocol!r}; expected one of {', '.join(sorted(PRESETS))}")
        kwargs = dict(model_kwargs or {})
        if pretrained is not None and pretrained.lower() != NO_PRETRAINED:
            if PRETRAINED_KEY in kwargs:
                raise IISError("model.model_kwargs.pretrained and model.pretrained are both set; keep model.pretrained")
            kwargs[PRETRAINED_KEY] = pretrained
        self.model = create_model(model, **kwargs)
        protocol = protocol or getattr(self.model, "default_protocol", "plain")
        self.save_hyperparameters()  # the subclass's own arguments (those of the outermost __init__)
        # ... and the values this base class actually uses, after subclasses resolved their defaults
        self.hparams.update(model=model, model_kwargs=model_kwargs, pretrained=pretrained, loss=loss,
                            loss_kwargs=loss_kwargs, lr=lr, lr_mult=lr_mult, betas=tuple(betas),
                            weight_decay=weight_decay, milestones=list(milestones), gamma=gamma,
                            max_num_next_clicks=max_num_next_clicks, click_thresh=click_thresh,
                            protocol=protocol, seed=seed)
        self.criterion = build_loss(loss, **(loss_kwargs or {})) if loss else None

    # -- the hooks a method overrides -------------------------------------------------------
    def compute_loss(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Loss of the final forward pass. ``target``: (B, 1, H, W) with 1/0 and -1 ignore."""
        loss = self.criterion(outputs["logits"], target)
        return loss, {"loss": loss}

    def simulation_forward(self, image, clicks, prev_mask):
        """Logits used while simulating extra clicks (no grad, eval mode); methods may override."""
        return self.model(image, clicks, prev_mask)

    # -- iterative training -------------------------------------------------------------------
    def forward(self, image, clicks, prev_mask=None):
        return self.model(image, clicks, prev_mask)

    @property
    def _with_prev(self) -> bool:
        return bool(getattr(self.model, "with_prev_mask", True))

    def _rng(self) -> np.random.Generator:
        # per step and rank: identical draws after a resume, different draws on each DDP rank
        return np.random.default_rng([self.hparams.seed, self.global_step, self.global_rank])

    @torch.no_grad()
    def simulate_clicks(self, image, points, target, num_iters: int, rng: np.random.Generator):
        """Add ``num_iters`` simulated clicks (protocol.md §C.5); returns (points, prev_mask).

        ``points`` is the sampler's ``(B, 2 * max_num_points, 3)`` block (positive slots, then negative);
        click ``i`` goes into the ``i``-th slot from the end of its sign's half, as the reference does.
        """
        prev = torch.zeros_like(target[:, :1], dtype=image.dtype)
        slots = _slots_per_sign(points, num_iters)
        if num_iters == 0:
            return points, prev
        points = points.clone()
        gt = target[:, 0].cpu().numpy()
        was_training = self.model.training
        self.model.eval()  # BN/dropout in inference mode while simulating, as the reference does
        state = {"points": points, "prev": prev, "i": 0}

        def predict(s):
            s["prev"] = torch.sigmoid(self.simulation_forward(image, s["points"], s["prev"] if self._with_prev else None))
            return s

        def click(s):
            s["i"] += 1
            clicks = training_clicks(gt, s["prev"][:, 0].float().cpu().numpy(), rng, self.hparams.click_thresh)
            for b, c in enumerate(clicks):
                if c is None:
                    continue
                # written into the tail slots of the pos/neg block, as the reference does
                slot = (slots - s["i"]) if c.positive else (2 * slots - s["i"])
                s["points"][b, slot] = s["points"].new_tensor([c.x, c.y, 1.0 if c.positive else 0.0])
            return s

        state = interactive_loop(state, click, predict, num_iters, predict_first=True)
        self.model.train(was_training)
        return state["points"], state["prev"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, points, target = batch["image"], batch["points"], batch["mask"]
        rng = self._rng()
        _slots_per_sign(points, self.hparams.max_num_next_clicks)  # fails on the first batch, whatever the draw
        num_iters = int(rng.integers(0, self.hparams.max_num_next_clicks + 1))
        points, prev = self.simulate_clicks(image, points, target, num_iters, rng)
        outputs = self.model.forward_train(image, points, prev if self._with_prev else None)
        loss, terms = self.compute_loss(outputs, target)
        bs = image.shape[0]
        for k, v in terms.items():
            self.log(f"train/{k}", v, prog_bar=(k == "loss"), batch_size=bs, on_step=True, on_epoch=True)
        with torch.no_grad():
            self.log("train/iou", _batch_iou(outputs["logits"], target), prog_bar=True, batch_size=bs)
            self.log("train/num_sim_clicks", float(num_iters), batch_size=bs)
        return loss

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        mult = self.hparams.lr_mult or {}
        groups: dict[float, list] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            m = next((v for k, v in mult.items() if name.startswith(k)), 1.0)
            groups.setdefault(m, []).append(p)
        params = [{"params": ps, "lr": self.hparams.lr * m} for m, ps in groups.items()]
        opt = torch.optim.Adam(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas),
                               weight_decay=self.hparams.weight_decay)
        if not self.hparams.milestones:
            return opt
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, self.hparams.milestones, self.hparams.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # -- checkpoints carry what iis-eval --ckpt needs ----------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        spec = getattr(self.model, "iis_spec", {"name": self.hparams.model, "kwargs": {}})
        # weights come from the state dict: drop pretrained-weight paths that need not exist at eval
        kwargs = {k: v for k, v in spec["kwargs"].items() if not (k.startswith("pretrained") or k.endswith("_path"))}
        checkpoint["iis"] = {
            "model": {"name": spec["name"], "kwargs": kwargs},
            "protocol": self.hparams.protocol,
            "method": type(self).__name__,
        }
        # the global torch RNG drives dropout; restoring it makes a resumed run continue identically
        checkpoint["iis_rng"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("iis_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)


def _slots_per_sign(points: torch.Tensor, num_clicks: int) -> int:
    """Click slots per sign in the sampler's point block, checked to hold ``num_clicks`` simulated clicks."""
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[1] % 2:
        raise ValueError(f"points must be (B, 2 * max_num_points, 3), got {tuple(points.shape)}")
    slots = points.shape[1] // 2
    if num_clicks > slots:
        raise IISError(f"model.max_num_next_clicks={num_clicks} simulated clicks do not fit the sampler's "
                       f"{slots} click slots per sign (data.sampler.max_num_points); raise max_num_points or "
                       f"lower max_num_next_clicks")
    return slots


def _batch_iou(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.49) -> torch.Tensor:
    pred = torch.sigmoid(logits.float()) > thresh
    valid = target != -1
    gt = target > 0.5
    inter = (pred & gt & valid).sum((1, 2, 3)).float()
    union = ((pred | gt) & valid).sum((1, 2, 3)).float().clamp(min=1)
    return (inter / union).mean()
