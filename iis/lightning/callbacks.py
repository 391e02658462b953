"""``InteractiveEvaluation``: the NoC protocol of ``iis-eval`` run from inside training.

Every ``every_n_epochs`` epochs (and at the end of fit) the callback evaluates the module's model on
the configured datasets with :func:`iis.eval.runner.evaluate_dataset`, the same function
``iis-eval`` uses. Under DDP, instance ``i`` goes to rank ``i % world_size``; the per-instance
records are gathered and de-duplicated by id, so every instance is counted exactly once.

An evaluation instance the reader refuses (``InvalidSampleError``: empty object, bad mask values,
corrupt image) is skipped and reported (a warning naming it and its reason, once per dataset and
instance, and ``val/<dataset>/skipped``) rather than crashing a training run at its evaluation; it is
never counted in the logged NoC/NoF/mIoU. ``skip_invalid=False`` makes it an error instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence
from weakref import proxy

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

from ..core.protocol import get_protocol
from ..data import get_dataset
from ..eval.report import overlay
from ..eval.runner import evaluate_step

__all__ = ["InteractiveEvaluation", "RunCheckpoint", "gather_records"]


def gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All ranks' per-instance records, each instance once, in id order (identical on every rank)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, records)
        records = [r for part in parts for r in part]
    unique = {r["id"]: r for r in records}
    return [unique[k] for k in sorted(unique)]


class InteractiveEvaluation(L.Callback):
    """Runs the interactive protocol during training and logs NoC@85/90, NoF, mIoU@k and overlays.

    Args:
        datasets: dataset names (``iis.data.list_datasets()``).
        data_root: folder holding the datasets (unused for ``synthetic``).
        protocol: preset name; None = the module's ``protocol`` hyper-parameter.
        every_n_epochs: evaluate after every N-th epoch (0 = only at the end of fit).
        max_clicks: clicks per instance.
        iou_analysis: no early stop, so the full mIoU@k curve is logged.
        limit: evaluate only the first N instances of each dataset.
        num_vis: overlays (final mask + clicks) logged per dataset, when the logger takes images.
        dataset_kwargs: extra keyword arguments per dataset name for ``get_dataset``.
        eval_at_start: also evaluate the untrained model (kept in ``self.first``; printed at the end
            next to the final numbers, so a run shows what training changed).
        skip_invalid: skip and report invalid evaluation instances (default) instead of failing.
        batch_size: instances evaluated in lockstep (one forward for all their crops), as
            ``iis-eval --batch-size``; the numbers do not depend on it on CPU.
    """

    def __init__(self, datasets: Sequence[str] = ("synthetic",), data_root: str | None = None,
                 protocol: str | None = None, every_n_epochs: int = 1, max_clicks: int = 20,
                 iou_analysis: bool = True, limit: int | None = None, num_vis: int = 4,
                 dataset_kwargs: dict[str, dict[str, Any]] | None = None, eval_at_start: bool = False,
                 skip_invalid: bool = True, batch_size: int = 1):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.datasets = list(datasets)
        self.data_root = data_root
        self.protocol = protocol
        self.every_n_epochs = every_n_epochs
        self.max_clicks = max_clicks
        self.iou_analysis = iou_analysis
        self.limit = limit
        self.num_vis = num_vis
        self.dataset_kwargs = dataset_kwargs or {}
        self.eval_at_start = eval_at_start
        self.skip_invalid = skip_invalid
        self._warned: set[tuple[str, str]] = set()
        self.first: dict[str, dict[str, Any]] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self._last_epoch = -1

    # kept in checkpoints: a resumed run neither re-evaluates the untrained model nor forgets its numbers
    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "last_epoch": self._last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first = state_dict.get("first") or {}
        self.last = state_dict.get("last") or {}
        self._last_epoch = int(state_dict.get("last_epoch", -1))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.eval_at_start and trainer.current_epoch == 0 and not self.first:
            self.first = self.run(trainer, pl_module, log=False)
            self._last_epoch = -1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = self.every_n_epochs
        if n and (trainer.current_epoch + 1) % n == 0:
            self.run(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # evaluate the final weights unless the last epoch already did, then print the table
        if self._last_epoch != trainer.current_epoch - 1:
            self.run(trainer, pl_module, log=False)
            self._last_epoch = trainer.current_epoch - 1  # at fit end current_epoch counts the finished epochs
        if trainer.global_rank == 0 and self.last:
            from ..eval.io import atomic_write_json
            from ..eval.report import results_table

            model_name = getattr(pl_module.hparams, "model", "model")
            if self.first:
                print("\n" + results_table(f"{model_name} before training", self.first))
            print("\n" + results_table(f"{model_name} after epoch {self._last_epoch + 1}", self.last))
            atomic_write_json(Path(trainer.default_root_dir) / "noc_final.json",
                              {"before": self.first or None, "after": self.last})

    @torch.no_grad()
    def run(self, trainer: L.Trainer, pl_module: L.LightningModule, log: bool = True) -> dict[str, dict[str, Any]]:
        """Evaluate now; returns ``{dataset: summary}`` (also kept in ``self.last``)."""
        self._last_epoch = trainer.current_epoch
        name = self.protocol or getattr(pl_module.hparams, "protocol", "ritm")
        base = get_protocol(name).with_options(max_clicks=self.max_clicks,
                                               target_iou=1.01 if self.iou_analysis else None)
        model = pl_module.model
        was_training = model.training
        rank, world = trainer.global_rank, trainer.world_size
        out: dict[str, dict[str, Any]] = {}
        for ds_name in self.datasets:
            ds = get_dataset(ds_name, self.data_root, **self.dataset_kwargs.get(ds_name, {}))
            pics: list[np.ndarray] = []

            def keep(i: int) -> bool:
                return len(pics) < self.num_vis

            def on_instance(i, sample, res, pics=pics):
                if res.preds and len(pics) < self.num_vis:
                    pics.append(overlay(sample.image, res.preds[-1], res.clicks, sample.gt))

            r = evaluate_step(model, ds, base, device=pl_module.device, limit=self.limit, rank=rank,
                              world_size=world, gather=gather_records, on_instance=on_instance, keep_preds=keep,
                              skip_invalid=self.skip_invalid, batch_size=self.batch_size)
            summary = r.summary
            self._report_skipped(trainer, ds.name, summary)
            out[ds.name] = summary
            if log:
                self._log(trainer, pl_module, ds.name, summary, pics)
        model.train(was_training)
        self.last = out
        return out

    def _report_skipped(self, trainer: L.Trainer, name: str, s: dict[str, Any]) -> None:
        new = [x for x in s.get("skipped", []) if (name, x["id"]) not in self._warned]
        self._warned |= {(name, x["id"]) for x in new}
        if new and trainer.global_rank == 0:
            from lightning.pytorch.utilities import rank_zero_warn

            listed = "; ".join(f"{x['id']}: {x['reason']}" for x in new[:5])
            rank_zero_warn(f"InteractiveEvaluation: {name}: {len(new)} invalid instance(s) skipped, not counted "
                           f"in NoC/NoF/mIoU: {listed}" + (" ..." if len(new) > 5 else ""))

    def _log(self, trainer, pl_module, name: str, s: dict[str, Any], pics: list[np.ndarray]) -> None:
        metrics = {f"val/{name}/noc85": s["noc"]["85"], f"val/{name}/noc90": s["noc"]["90"],
                   f"val/{name}/nof85": float(s["nof"]["85"]), f"val/{name}/nof90": float(s["nof"]["90"]),
                   f"val/{name}/noic": s["noic"], f"val/{name}/skipped": float(s.get("num_skipped", 0))}
        curve = s["miou"] or s["miou_early_stopped"] or []
        for k in (1, 3, 5, 10, 20):
            if k <= len(curve):
                metrics[f"val/{name}/miou@{k}"] = curve[k - 1]
        # values are identical on every rank after the gather; no reduction needed
        for k, v in metrics.items():
            pl_module.log(k, float(v), sync_dist=False, rank_zero_only=False)
        if trainer.global_rank != 0:
            return
        for logger in trainer.loggers:
            if hasattr(logger, "log_image") and type(logger).__name__.endswith("WandbLogger"):
                if pics:
                    logger.log_image(key=f"val/{name}/overlays", images=list(pics), step=trainer.global_step)
                if curve:
                    import wandb

                    table = wandb.Table(data=[[k + 1, v] for k, v in enumerate(curve)], columns=["clicks", "miou"])
                    logger.experiment.log({f"val/{name}/miou_curve": wandb.plot.line(
                        table, "clicks", "miou", title=f"{name} mIoU vs clicks")})


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always current, always complete and never versioned.

    * ``last.ckpt`` is written every ``last_every_n_train_steps`` optimizer steps **and** at the end of every
      epoch (plain ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes it only when training ends, so a
      killed run lost everything). Numbered checkpoints keep ``ModelCheckpoint``'s own triggers
      (``every_n_epochs``, ``save_top_k``).
    * every file is written to ``<name>.tmp`` and renamed over the old one (``os.replace``, atomic on one
      filesystem): a kill during a save leaves the previous complete ``last.ckpt``, never a truncated one.
    * ``enable_version_counter`` defaults to False: a run directory has one ``last.ckpt`` (no ``last-v1.ckpt``)
      and it belongs to the run whose ``config.yaml`` lies beside it (``iis-train`` gives every fresh run its
      own directory).

    Args:
        last_every_n_train_steps: step cadence of ``last.ckpt`` (0 = epoch ends only).
        save_top_k, enable_version_counter: as in ``ModelCheckpoint``, other defaults (no numbered files,
            no ``-v1`` names).
        **kwargs: further ``ModelCheckpoint`` arguments (``save_last`` is always on).
    """

    def __init__(self, last_every_n_train_steps: int = 1000, save_top_k: int = 0,
                 enable_version_counter: bool = False, **kwargs: Any):
        if last_every_n_train_steps < 0:
            raise ValueError(f"last_every_n_train_steps: expected >= 0, got {last_every_n_train_steps}")
        if kwargs.get("save_last") not in (None, True):
            raise ValueError("RunCheckpoint: save_last is always on (it is the resumable checkpoint)")
        kwargs["save_last"] = True
        super().__init__(save_top_k=save_top_k, enable_version_counter=enable_version_counter, **kwargs)
        self.last_every_n_train_steps = last_every_n_train_steps
        self._last_step_of_last = -1  # global step of the newest last.ckpt

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_step_of_last = trainer.global_step

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if self._last_step_of_last == trainer.global_step or trainer.sanity_checking or trainer.fast_dev_run:
            return
        # keep ModelCheckpoint's step bookkeeping, so its numbered save at this step is not skipped
        step = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_train_steps
        if n and trainer.global_step % n == 0 and trainer.global_step > 0:
            self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_now(trainer)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not _is_local_file_protocol(filepath):  # remote storage: fsspec's own semantics
            return super()._save_checkpoint(trainer, filepath)
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)  # collective; rank 0 writes, then a barrier
        if trainer.is_global_zero:
            with open(tmp, "rb+") as f:  # on disk before the rename makes it the checkpoint
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        trainer.strategy.barrier("RunCheckpoint.replace")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
