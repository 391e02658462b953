"""W&B logging that works on machines without credentials or network."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

__all__ = ["IISWandbLogger", "wandb_should_be_offline"]


def wandb_should_be_offline() -> bool:
    """Offline when WANDB_MODE says so, or when there is no API key in the env or ~/.netrc."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        rc = netrc.netrc(Path.home() / ".netrc")
        return rc.authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


class IISWandbLogger(WandbLogger):
    """``WandbLogger`` that goes offline by itself without credentials; never uploads models offline.

    The offline run directory (``<save_dir>/wandb/offline-run-*``) can be uploaded later with
    ``wandb sync``.
    """

    def __init__(self, project: str = "iis", name: str | None = None, save_dir: str | None = None,
                 offline: bool | None = None, log_model: bool | str = False, **kwargs):
        offline = wandb_should_be_offline() if offline is None else offline
        save_dir = save_dir or "runs"  # iis-train fills in the run's default_root_dir
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, name=name, save_dir=save_dir, offline=offline,
                         log_model=False if offline else log_model, **kwargs)
