"""Model and method registries (timm-style explicit names).

* ``register_model(name)`` decorates a builder ``(**kwargs) -> nn.Module`` of a trainable interactive
  model. Every such model follows the contract in :mod:`iis.models.base`.
* ``register_predictor(name)`` decorates a builder ``(**kwargs) -> Predictor`` of a training-free
  method (classical baselines, M2N2), usable as ``iis-eval --method NAME``.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable

__all__ = ["register_model", "create_model", "list_models", "register_predictor", "create_predictor",
           "list_predictors", "model_entry", "predictor_entry"]

_MODELS: dict[str, Callable[..., Any]] = {}
_PREDICTORS: dict[str, Callable[..., Any]] = {}


def _register(table: dict, name: str):
    def deco(fn):
        if name in table and table[name] is not fn:
            raise ValueError(f"{name!r} is registered twice")
        table[name] = fn
        return fn
    return deco


def register_model(name: str):
    return _register(_MODELS, name)


def register_predictor(name: str):
    return _register(_PREDICTORS, name)


def _load_all() -> None:
    # methods register themselves on import; importing here keeps `create_model` self-sufficient
    import iis.methods  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    _load_all()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def list_predictors(pattern: str = "*") -> list[str]:
    _load_all()
    return sorted(n for n in _PREDICTORS if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> Callable[..., Any]:
    _load_all()
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS))}") from None


def predictor_entry(name: str) -> Callable[..., Any]:
    _load_all()
    try:
        return _PREDICTORS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; training-free methods: {', '.join(sorted(_PREDICTORS))}") from None


def create_model(name: str, **kwargs: Any):
    """Build a registered model; the result remembers ``(name, kwargs)`` for checkpoints."""
    model = model_entry(name)(**kwargs)
    model.iis_spec = {"name": name, "kwargs": dict(kwargs)}
    return model


def create_predictor(name: str, **kwargs: Any):
    _load_all()
    try:
        return _PREDICTORS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown method {name!r}; training-free methods: {', '.join(sorted(_PREDICTORS))}; "
                         f"models: {', '.join(sorted(_MODELS))}") from None
