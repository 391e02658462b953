"""Turn a method description (name, checkpoint, weights) into something that predicts.

One function, :func:`build_method`, used by ``iis-eval``, the public API and the server, so that a
method name, an iis checkpoint or a weights file mean the same thing everywhere.

Every file is read without running code from it (:func:`iis.core.safe_load.safe_load`). A weights file
may be an iis state dict / checkpoint or one of the authors' released checkpoints (SimpleClick,
AdaptiveClick, GPCIS, RITM): the latter is recognised by its key set and converted in memory
(:func:`iis.convert.load_weights`); its file name and SHA-256 go into the method description, and so
into ``results.json``.
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
    from .checkpoint import clean_state_dict, load_checkpoint_model, load_strict

    kw = dict(kwargs or {})
    if ckpt is not None:
        model, meta = load_checkpoint_model(ckpt)
        desc = {"ckpt": str(Path(ckpt).resolve()), "model": meta["model"]}
        if isinstance(meta.get("source"), dict):  # written by iis-convert: the authors' file it came from
            desc["source"] = meta["source"]
        return BuiltMethod(model, desc, meta.get("protocol", getattr(model, "default_protocol", "ritm")))
    if method is None:
        raise ValueError("method: give a method/model name or a checkpoint")
    if method in list_predictors():
        pred = create_predictor(method, **kw)
        return BuiltMethod(pred, {"method": method, "kwargs": kw}, getattr(pred, "default_protocol", "plain"))
    if method in list_models():
        note, info, sd = None, None, None
        if weights:
            from ..convert import load_weights

            sd, info = load_weights(weights, method)
            if info["official"]:
                kw = {**info["kwargs"], **kw}  # sizes read from the file; explicit kwargs win (then checked)
            else:
                sd = clean_state_dict(sd)
        else:
            note = RANDOM_INIT_NOTE
        model = create_model(method, **kw)
        if sd is not None:
            load_strict(model, sd, f"--weights {weights}", method)
        desc: dict[str, Any] = {"method": method, "kwargs": kw, "weights": str(weights) if weights else None,
                                "random_init": not weights}
        if info is not None:
            desc["weights_sha256"] = info["sha256"]
            if info["official"]:
                desc["source"] = {"file": info["file"], "sha256": info["sha256"], "family": info["family"]}
                desc["conversion"] = info["conversion"]
            elif "source" in info:
                desc["source"] = info["source"]
        return BuiltMethod(model.eval(), desc, getattr(model, "default_protocol", "ritm"), note)
    raise ValueError(f"--method {method!r}: unknown; training-free methods: {', '.join(list_predictors())}; "
                     f"models: {', '.join(list_models())}")
