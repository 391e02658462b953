"""Model and method registries (timm-style explicit names).

* ``register_model(name, options=..., pretrained=...)`` decorates a builder ``(**options) -> nn.Module`` of a
  trainable interactive model. Every such model follows the contract in :mod:`iis.models.base`.
  ``options`` is a ``TypedDict`` of the keyword options the builder accepts (their defaults live in the
  builder); :func:`create_model` refuses any other key. ``pretrained`` says which weights the paper's
  recipe starts from (``iis-train`` refuses to start a recipe without them unless told ``pretrained: none``).
* ``register_predictor(name)`` decorates a builder ``(**kwargs) -> Predictor`` of a training-free
  method (classical baselines, M2N2), usable as ``iis-eval --method NAME``.

The registry knows no method: the packages that register models are imported by the loaders added with
:func:`add_loader` (the top-level ``iis`` package adds ``iis.methods``), once, before the first lookup.
"""

from __future__ import annotations

import fnmatch
import typing
from dataclasses import dataclass
from typing import Any, Callable

from ..core.errors import IISError

__all__ = ["register_model", "create_model", "list_models", "register_predictor", "create_predictor",
           "list_predictors", "model_entry", "predictor_entry", "ModelEntry", "add_loader", "PRETRAINED_KEY"]

PRETRAINED_KEY = "pretrained"  # every builder's keyword for a local file of backbone weights


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    Attributes:
        name: registry name (stored in checkpoints).
        builder: ``(**options) -> nn.Module``.
        options: ``TypedDict`` of the builder's keyword options besides ``pretrained``, or None (unchecked).
        pretrained: the weights the paper recipe starts from, in words (file name and source), or None when
            the recipe trains from scratch.
    """

    name: str
    builder: Callable[..., Any]
    options: type | None = None
    pretrained: str | None = None

    def option_names(self) -> list[str] | None:
        if self.options is None:
            return None
        return sorted(set(typing.get_type_hints(self.options)) | {PRETRAINED_KEY})

    def check_options(self, kwargs: dict[str, Any]) -> None:
        """One line naming each unknown option and the accepted ones."""
        allowed = self.option_names()
        if allowed is None:
            return
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise IISError(f"model {self.name!r}: unknown option{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(map(repr, unknown))}; accepted: {', '.join(allowed)}")


_MODELS: dict[str, ModelEntry] = {}
_PREDICTORS: dict[str, Callable[..., Any]] = {}
_LOADERS: list[Callable[[], Any]] = []
_loaded = False


def add_loader(loader: Callable[[], Any]) -> None:
    """Run ``loader()`` (which imports packages that register models/predictors) before the next lookup."""
    global _loaded
    _LOADERS.append(loader)
    _loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: loaders import modules that register (and may look up) models
    for loader in list(_LOADERS):
        loader()


def _register(table: dict, name: str, value: Any, fn: Callable):
    old = table.get(name)
    if old is not None and (old.builder if isinstance(old, ModelEntry) else old) is not fn:
        raise ValueError(f"{name!r} is registered twice")
    table[name] = value


def register_model(name: str, *, options: type | None = None, pretrained: str | None = None):
    """Decorator registering a model builder under ``name`` (see the module docstring)."""
    def deco(fn):
        _register(_MODELS, name, ModelEntry(name, fn, options, pretrained), fn)
        return fn
    return deco


def register_predictor(name: str):
    def deco(fn):
        _register(_PREDICTORS, name, fn, fn)
        return fn
    return deco


def list_models(pattern: str = "*") -> list[str]:
    _load_all()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def list_predictors(pattern: str = "*") -> list[str]:
    _load_all()
    return sorted(n for n in _PREDICTORS if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    _load_all()
    try:
        return _MODELS[name]
    except KeyError:
        raise IISError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS))}") from None


def predictor_entry(name: str) -> Callable[..., Any]:
    _load_all()
    try:
        return _PREDICTORS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; training-free methods: {', '.join(sorted(_PREDICTORS))}") from None


def create_model(name: str, **kwargs: Any):
    """Build a registered model; the result remembers ``(name, kwargs)`` for checkpoints."""
    entry = model_entry(name)
    entry.check_options(kwargs)
    model = entry.builder(**kwargs)
    model.iis_spec = {"name": name, "kwargs": dict(kwargs)}
    return model


def create_predictor(name: str, **kwargs: Any):
    _load_all()
    try:
        return _PREDICTORS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown method {name!r}; training-free methods: {', '.join(sorted(_PREDICTORS))}; "
                         f"models: {', '.join(sorted(_MODELS))}") from None
