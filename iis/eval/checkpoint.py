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
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)  # never runs code from the file
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"--ckpt {path}: not a readable torch checkpoint ({e.__class__.__name__}: {first})") from None
    meta = ckpt.get("iis") if isinstance(ckpt, dict) else None
    if not meta or "model" not in meta:
        raise ValueError(f"--ckpt {path}: no 'iis' model description in the checkpoint; it was not written by "
                         "iis-train (use --method NAME with --weights for foreign state dicts)")
    model = create_model(meta["model"]["name"], **meta["model"].get("kwargs", {}))
    sd = ckpt.get("state_dict") or ckpt.get("model")
    if not isinstance(sd, dict):
        raise IISError(f"--ckpt {path}: no 'state_dict' or 'model' entry holding the weights")
    load_fitting(model, clean_state_dict(sd), f"--ckpt {path}", meta["model"]["name"])
    return model.eval(), meta
