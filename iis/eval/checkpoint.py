"""Rebuild a model from a checkpoint alone (``iis-eval --ckpt PATH``).

Checkpoints written by :class:`iis.lightning.IISModule` and by ``iis-convert`` carry an ``"iis"`` entry:
``{"model": {"name": registry name, "kwargs": {...}}, "protocol": preset name, "method": str}``; converted
ones add ``"source": {"file", "sha256", "family"}`` and ``"conversion"`` (the report).
The state dict is taken from ``state_dict`` (Lightning) or ``model`` and the wrapper prefixes
``model.``, ``module.`` and ``_orig_mod.`` are stripped (as timm's ``clean_state_dict`` does).

Files are read with :func:`iis.core.safe_load.safe_load` (``torch.load(weights_only=True)`` for files
holding only tensors and plain types, which is what iis-train (Lightning 2.6) and iis-convert write;
the restricted unpickler otherwise): loading a checkpoint never runs code from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.safe_load import safe_load
from ..models.registry import create_model

__all__ = ["load_checkpoint_model", "clean_state_dict", "load_strict"]


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
    ckpt = safe_load(path, what="--ckpt", map_location=map_location)
    meta = ckpt.get("iis") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict) or "name" not in meta["model"]:
        hint = ("it looks like an official checkpoint: convert it with iis-convert, or evaluate it with "
                "--method NAME --weights FILE") if isinstance(ckpt, dict) and "state_dict" in ckpt else \
            "use --method NAME with --weights for foreign state dicts"
        raise ValueError(f"--ckpt {path}: no 'iis' model description in the checkpoint; it was not written by "
                         f"iis-train or iis-convert ({hint})")
    name, kwargs = meta["model"]["name"], meta["model"].get("kwargs", {})
    model = create_model(name, **kwargs)
    sd = ckpt.get("state_dict") if isinstance(ckpt.get("state_dict"), dict) else ckpt.get("model")
    if not isinstance(sd, dict):
        raise ValueError(f"--ckpt {path}: no state dict under 'state_dict' or 'model'")
    load_strict(model, clean_state_dict(sd), f"--ckpt {path}", name)
    return model.eval(), meta


def load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str, name: str) -> None:
    """``model.load_state_dict(sd)`` with every key and shape checked; one-line ValueError otherwise."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {list(sd[k].shape)} (expected {list(own[k].shape)})" for k in own
              if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}"
                         f"{', ...' if len(unexpected) > 3 else ''})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape ({'; '.join(shapes[:2])}{'; ...' if len(shapes) > 2 else ''})")
        raise ValueError(f"{where}: state dict does not match model {name!r}: " + ", ".join(parts))
    model.load_state_dict(sd, strict=True)
