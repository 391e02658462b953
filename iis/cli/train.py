"""``iis-train``: LightningCLI over :class:`iis.lightning.IISModule` subclasses and ``IISDataModule``.

Examples::

    iis-train fit --config experiments/quickstart.yaml
    iis-train fit --config experiments/simpleclick/_base.yaml --config experiments/simpleclick/default.yaml \
        --data.root /data/cocolvis
    iis-train fit --config experiments/quickstart.yaml --ckpt_path last     # resume a killed run

Every run lives in ``trainer.default_root_dir``: ``config.yaml`` (resolved), ``checkpoints/``
(``last.ckpt`` for resuming), the W&B run and ``noc_final.json``. Checkpoint and logger folders left
unset in a config are placed there, so ``--ckpt_path last`` finds the run's own last checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _cli_class():
    from lightning.pytorch.cli import LightningCLI

    class IISCLI(LightningCLI):
        def before_instantiate_classes(self) -> None:
            cfg = self.config.get(self.subcommand, self.config)
            root = cfg.trainer.get("default_root_dir") or "runs/default"
            logger = cfg.trainer.get("logger")
            for lg in logger if isinstance(logger, list) else [logger]:
                init = getattr(lg, "init_args", None) if lg is not None and not isinstance(lg, bool) else None
                if init is not None and "save_dir" in init and not init.save_dir:
                    init.save_dir = root

        def before_fit(self) -> None:
            root = Path(self.trainer.default_root_dir)
            for cb in self.trainer.checkpoint_callbacks:
                if getattr(cb, "dirpath", None) is None:
                    cb.dirpath = str(root / "checkpoints")

        def after_fit(self) -> None:
            # close the W&B run so an offline run directory is complete (summary written, syncable)
            if any(type(lg).__name__.endswith("WandbLogger") for lg in self.trainer.loggers):
                import wandb

                if wandb.run is not None:
                    wandb.finish()

    return IISCLI


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    import iis.methods  # noqa: F401  (registers models and method modules)
    from ..lightning.datamodule import IISDataModule
    from ..lightning.module import IISModule

    _cli_class()(IISModule, IISDataModule, subclass_mode_model=True,
                 args=list(argv) if argv is not None else None, save_config_kwargs={"overwrite": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
