"""``IISModule``: the LightningModule every trainable method derives from.

It owns the iterative training of RITM/SimpleClick (protocol.md §C.5): for each batch draw
0..``max_num_next_clicks`` extra clicks (one draw for the whole batch), simulate them without
gradients with the model in eval mode (predict -> half-max random click -> soft previous mask),
then do the final forward with gradients. A method only overrides :meth:`compute_loss` (and, if it
needs them, the model's ``forward_train`` outputs).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from ..core.clicker import training_clicks
from ..core.loop import interactive_loop
from ..models.losses import build_loss
from ..models.registry import create_model

__all__ = ["IISModule"]

MAX_POINTS = 24  # slots per sign in the sampler's point tensor (protocol.md §C.4)


class IISModule(L.LightningModule):
    """Base module: model from the registry + loss from the zoo + Adam/MultiStep.

    Args:
        model: registered model name (``iis.list_models()``).
        model_kwargs: keyword arguments of the model builder (e.g. ``pretrained`` path).
        loss: loss name from ``iis.models.losses.LOSSES`` (NFL for SimpleClick, protocol.md §D.5).
        loss_kwargs: keyword arguments of the loss.
        lr: Adam learning rate (5e-5 for SimpleClick ViTs, protocol.md §C.7).
        lr_mult: ``{parameter-name prefix: multiplier}``, e.g. ``{"backbone": 0.1}`` (RITM/GPCIS).
        betas, weight_decay: Adam settings (reference: (0.9, 0.999), no weight decay).
        milestones, gamma: MultiStepLR, stepped once per epoch.
        max_num_next_clicks: extra simulated clicks per batch are drawn from 0..this (inclusive).
        click_thresh: probability threshold of the training clicker (0.49).
        protocol: evaluation preset stored in checkpoints for ``iis-eval --ckpt``.
        seed: seeds the per-step random draws, so a resumed run repeats them.
    """

    def __init__(
        self,
        model: str = "simpleclick_vit_test",
        model_kwargs: dict[str, Any] | None = None,
        loss: str = "nfl",
        loss_kwargs: dict[str, Any] | None = None,
        lr: float = 5e-5,
        lr_mult: dict[str, float] | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        max_num_next_clicks: int = 3,
        click_thresh: float = 0.49,
        protocol: str = "simpleclick",
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()  # the subclass's own arguments (those of the outermost __init__)
        # ... and the values this base class actually uses, after subclasses resolved their defaults
        self.hparams.update(model=model, model_kwargs=model_kwargs, loss=loss, loss_kwargs=loss_kwargs, lr=lr,
                            lr_mult=lr_mult, betas=tuple(betas), weight_decay=weight_decay, milestones=milestones,
                            gamma=gamma, max_num_next_clicks=max_num_next_clicks, click_thresh=click_thresh,
                            protocol=protocol, seed=seed)
        self.model = create_model(model, **(model_kwargs or {}))
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
        """Add ``num_iters`` simulated clicks (protocol.md §C.5); returns (points, prev_mask)."""
        prev = torch.zeros_like(target[:, :1], dtype=image.dtype)
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
                slot = (MAX_POINTS - s["i"]) if c.positive else (2 * MAX_POINTS - s["i"])
                s["points"][b, slot] = s["points"].new_tensor([c.x, c.y, 1.0 if c.positive else 0.0])
            return s

        state = interactive_loop(state, click, predict, num_iters, predict_first=True)
        self.model.train(was_training)
        return state["points"], state["prev"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, points, target = batch["image"], batch["points"], batch["mask"]
        rng = self._rng()
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


def _batch_iou(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.49) -> torch.Tensor:
    pred = torch.sigmoid(logits.float()) > thresh
    valid = target != -1
    gt = target > 0.5
    inter = (pred & gt & valid).sum((1, 2, 3)).float()
    union = ((pred | gt) & valid).sum((1, 2, 3)).float().clamp(min=1)
    return (inter / union).mean()
