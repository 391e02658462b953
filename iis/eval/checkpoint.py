"""Rebuild a model from a checkpoint alone (``iis-eval --ckpt PATH``).

Checkpoints written by :class:`iis.lightning.IISModule` carry an ``"iis"`` entry:
``{"model": {"name": registry name, "kwargs": {...}}, "protocol": preset name, "method": str}``.
The state dict is taken from ``state_dict`` (Lightning) or ``model`` and the wrapper prefixes
``model.``, ``module.`` and ``_orig_mod.`` are stripped (as timm's ``clean_state_dict`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..models.registry import create_model

__all__ = ["load_checkpoint_model", "clean_state_dict"]


def clean_state_dict(sd: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if prefix and not k.startswith(prefix) and any(x.startswith(prefix) for x in sd):
            continue  # e.g. loss buffers stored beside the model in a LightningModule
        for p in (prefix, "module.", "_orig_mod."):
            if p and k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_checkpoint_model(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Returns ``(model in eval mode, the checkpoint's "iis" metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"--ckpt {path}: not a readable torch checkpoint ({e.__class__.__name__}: {e})") from None
    meta = ckpt.get("iis") if isinstance(ckpt, dict) else None
    if not meta or "model" not in meta:
        raise ValueError(f"--ckpt {path}: no 'iis' model description in the checkpoint; it was not written by "
                         "iis-train (use --method NAME with --weights for foreign state dicts)")
    model = create_model(meta["model"]["name"], **meta["model"].get("kwargs", {}))
    sd = ckpt.get("state_dict") or ckpt.get("model")
    missing, unexpected = model.load_state_dict(clean_state_dict(sd), strict=False)
    if missing or unexpected:
        raise ValueError(f"--ckpt {path}: state dict does not match model {meta['model']['name']!r}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval(), meta
