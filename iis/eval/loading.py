"""Turn a method description (name, checkpoint, weights) into something that predicts.

One function, :func:`build_method`, used by ``iis-eval``, the public API and the server, so that a
method name, an iis checkpoint or a weights file mean the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["BuiltMethod", "build_method"]

RANDOM_INIT_NOTE = ("NOTE: randomly initialised weights (no --ckpt/--weights): numbers are for smoke runs and "
                    "timing only")


@dataclass
class BuiltMethod:
    """What :func:`build_method` returns.

    Attributes:
        obj: an ``nn.Module`` following :mod:`iis.models.base` (wrap it in ``ModelPredictor``) or a
            ready training-free predictor.
        desc: JSON-able description stored in result files (method/ckpt/weights, kwargs, ...).
        default_protocol: the method's own protocol preset name.
        note: a line printed under result tables (e.g. random weights), or None.
    """

    obj: Any
    desc: dict[str, Any]
    default_protocol: str
    note: str | None = None

    @property
    def is_model(self) -> bool:
        return isinstance(self.obj, torch.nn.Module)

    @property
    def title(self) -> str:
        return self.desc.get("method") or self.desc["model"]["name"]


def build_method(method: str | None = None, *, ckpt: str | Path | None = None, weights: str | Path | None = None,
                 kwargs: dict[str, Any] | None = None) -> BuiltMethod:
    """Build a training-free method, a registered model (optionally with ``weights``) or a checkpoint.

    Args:
        method: registered training-free method or model name; exclusive with ``ckpt``.
        ckpt: checkpoint written by ``iis-train`` (model, kwargs and protocol are read from it).
        weights: state dict for ``method`` (a model).
        kwargs: keyword arguments of the method/model builder.
    """
    from ..models.registry import create_model, create_predictor, list_models, list_predictors
    from .checkpoint import clean_state_dict, load_checkpoint_model

    kw = dict(kwargs or {})
    if ckpt is not None:
        model, meta = load_checkpoint_model(ckpt)
        desc = {"ckpt": str(Path(ckpt).resolve()), "model": meta["model"]}
        return BuiltMethod(model, desc, meta.get("protocol", getattr(model, "default_protocol", "ritm")))
    if method is None:
        raise ValueError("method: give a method/model name or a checkpoint")
    if method in list_predictors():
        pred = create_predictor(method, **kw)
        return BuiltMethod(pred, {"method": method, "kwargs": kw}, getattr(pred, "default_protocol", "plain"))
    if method in list_models():
        model = create_model(method, **kw)
        note = None
        if weights:
            sd = torch.load(weights, map_location="cpu", weights_only=False)
            model.load_state_dict(clean_state_dict(sd.get("state_dict", sd) if isinstance(sd, dict) else sd))
        else:
            note = RANDOM_INIT_NOTE
        desc = {"method": method, "kwargs": kw, "weights": str(weights) if weights else None,
                "random_init": not weights}
        return BuiltMethod(model.eval(), desc, getattr(model, "default_protocol", "ritm"), note)
    raise ValueError(f"--method {method!r}: unknown; training-free methods: {', '.join(list_predictors())}; "
                     f"models: {', '.join(list_models())}")
