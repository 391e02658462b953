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

from ..core.errors import IISError, WeightsMismatchError

__all__ = ["load_checkpoint_model", "clean_state_dict", "load_fitting"]


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


def load_fitting(model: torch.nn.Module, sd: dict[str, Any], what: str, name: str) -> None:
    """``model.load_state_dict(sd)`` after checking that every name and shape fits, so weights of another
    model or another size give one line (``load_state_dict`` raises a multi-line RuntimeError on shapes).

    Raises:
        WeightsMismatchError: names missing or unexpected, or tensors of another shape.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and tuple(getattr(sd[k], "shape", ())) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} tensor(s) of another shape (e.g. {k}: file {tuple(sd[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise WeightsMismatchError(f"{what}: state dict does not fit model {name!r}: {'; '.join(parts)} "
                       "(weights of another model or size?)")
    model.load_state_dict(sd, strict=True)


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
        raise IISError(f"--ckpt {path}: no state dict under 'state_dict' or 'model'")
    load_fitting(model, clean_state_dict(sd), f"--ckpt {path}", name)
    return model.eval(), meta

