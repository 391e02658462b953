"""``FolderEvaluation``: the interactive evaluation of a fine-tuning run on its own validation images.

The training folder is the datamodule's (``--data.root``), so it is not written twice: the held-out split
(``data.source_kwargs.val_fraction`` / ``split_seed``, the same deterministic split the training source
leaves out, :func:`iis.data.folder.split_files`) or, with ``val_root``, a second folder of images + masks,
decoded with the training folder's mask encoding (mode, threshold, ignore value, min_area, components).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from ...core.errors import IISError
from ...lightning.callbacks import InteractiveEvaluation

__all__ = ["FolderEvaluation", "ENCODING_KEYS"]

ENCODING_KEYS = ("images", "masks", "mode", "threshold", "ignore_value", "min_area", "components")


class FolderEvaluation(InteractiveEvaluation):
    """:class:`iis.lightning.callbacks.InteractiveEvaluation` on the run's validation folder.

    Args:
        val_root: a folder with ``images/`` + ``masks/`` to validate on; None = the held-out part of
            ``--data.root`` (needs ``data.source_kwargs.val_fraction > 0``).
        others: as :class:`InteractiveEvaluation` (whose ``datasets``, ``data_root`` and ``dataset_kwargs``
            are derived here).
    """

    def __init__(self, val_root: str | None = None, protocol: str | None = None, every_n_epochs: int = 1,
                 max_clicks: int = 20, iou_analysis: bool = True, limit: int | None = None, num_vis: int = 4,
                 eval_at_start: bool = False, skip_invalid: bool = True):
        super().__init__(datasets=("folder",), protocol=protocol, every_n_epochs=every_n_epochs,
                         max_clicks=max_clicks, iou_analysis=iou_analysis, limit=limit, num_vis=num_vis,
                         eval_at_start=eval_at_start, skip_invalid=skip_invalid)
        self.val_root = val_root
        self._resolved = False

    def _resolve(self, trainer: L.Trainer) -> None:
        if self._resolved:
            return
        dm = getattr(trainer, "datamodule", None)
        h = getattr(dm, "hparams", None)
        if h is None or h.get("source") != "folder":
            raise IISError("FolderEvaluation: needs the folder training source (data.source: folder)")
        src = dict(h.get("source_kwargs") or {})
        enc = {k: src[k] for k in ENCODING_KEYS if k in src}
        if self.val_root:
            self.data_root, kw = self.val_root, enc
        else:
            frac = src.get("val_fraction", 0.0)
            if not frac:
                raise IISError("FolderEvaluation: no validation images: set data.source_kwargs.val_fraction "
                               "(e.g. 0.1) or give a validation folder (val_root)")
            self.data_root = h.get("root")
            kw = {**enc, "split": "val", "val_fraction": frac, "split_seed": src.get("split_seed", 0)}
        self.dataset_kwargs = {"folder": kw}
        self._resolved = True

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule, log: bool = True) -> dict[str, dict[str, Any]]:
        self._resolve(trainer)
        return super().run(trainer, pl_module, log=log)
