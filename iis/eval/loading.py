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

import ast
import builtins
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.errors import IISError, WeightsMismatchError

__all__ = ["BuiltMethod", "build_method", "builder_keywords", "check_kwargs"]

RANDOM_INIT_SEED = 0
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


def _resolve(node: ast.expr, scope: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return scope.get(node.id, getattr(builtins, node.id, None))
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, scope)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _reads(node: ast.AST, tracked: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in tracked for n in ast.walk(node))


def _annotation(p: inspect.Parameter) -> str | None:
    a = p.annotation
    if a is p.empty:
        return None
    return a if isinstance(a, str) else getattr(a, "__name__", str(a))


def builder_keywords(fn: Callable[..., Any], _depth: int = 0) -> tuple[dict[str, str | None], bool]:
    """Keyword names that ``fn`` accepts (with their annotation text), following ``**kwargs`` into the
    functions and classes it forwards them to, read from the source.

    Returns ``(names, complete)``; ``complete`` is False when some of the ``**kwargs`` go where the
    source cannot tell (a class picked from a table at run time, a C function...).
    """
    is_cls = inspect.isclass(fn)
    target = fn.__init__ if is_cls else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, False
    params = [p for p in sig.parameters.values() if not (is_cls and p.name == "self")]
    names = {p.name: _annotation(p) for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
    if var is None:
        return names, True
    raw = inspect.unwrap(getattr(target, "__func__", target))
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(raw)))
    except (OSError, TypeError, SyntaxError):
        return names, False
    if _depth > 6:
        return names, False
    scope = dict(getattr(raw, "__globals__", {}))
    owner = getattr(target, "__self__", None)
    if inspect.isclass(owner):
        scope["cls"] = owner
    tracked = {var}
    for _ in range(2):  # names assigned from (or updated with) the kwargs carry part of them along
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _reads(node.value, tracked):
                tracked |= {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                    and isinstance(node.func.value, ast.Name) and any(_reads(a, tracked) for a in node.args)):
                tracked.add(node.func.value.id)
    complete, forwarded = True, False
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in tracked
                and f.attr in ("pop", "get", "setdefault") and node.args and isinstance(node.args[0], ast.Constant)):
            names.setdefault(str(node.args[0].value), None)  # a key the builder reads itself
            continue
        if not any(k.arg is None and _reads(k.value, tracked) for k in node.keywords):
            continue
        forwarded = True
        callee = _resolve(f, scope)
        if callee is None or not callable(callee):
            complete = False
            continue
        sub, ok = builder_keywords(callee, _depth + 1)
        complete &= ok
        try:
            cps = [p.name for p in inspect.signature(callee).parameters.values()]
        except (TypeError, ValueError):
            cps = []
        bound = set(cps[:len(node.args)]) | {k.arg for k in node.keywords if k.arg}
        for k, a in sub.items():
            if k not in bound:
                names.setdefault(k, a)
    return names, complete and forwarded


_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(\w+)'")


def _accepted(name: str, fn: Callable[..., Any]) -> str:
    names, complete = builder_keywords(fn)
    listed = ", ".join(sorted(names)) or "none"
    return f"accepted keys of {name}: {listed}" + ("" if complete else " (and those of the classes it builds; "
                                                                         "see the method's README)")


_SIMPLE = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),)}


def _type_ok(value: Any, annotation: str | None) -> bool:
    """Whether ``value`` fits a simple annotation (``int``, ``float | None``...); other annotations pass."""
    if annotation is None:
        return True
    parts = [a.strip() for a in annotation.replace("Optional[", "").rstrip("]").split("|")]
    if not all(a in _SIMPLE for a in parts):
        return True
    if isinstance(value, bool) and "bool" not in parts:
        return False  # True is an int to Python, not to the user
    return any(isinstance(value, _SIMPLE[a]) for a in parts)


def check_kwargs(name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Refuse keys ``fn`` (a registry builder) cannot take, and values of the wrong simple type, before
    building, where its source tells.

    Raises:
        IISError: ``--method-arg KEY: NAME does not take it; accepted keys of NAME: ...``.
    """
    names, complete = builder_keywords(fn)
    bad = sorted(k for k in kwargs if k not in names)
    if complete and bad:
        raise IISError(f"--method-arg {bad[0]}: {name} does not take it; {_accepted(name, fn)}")
    for k, v in kwargs.items():
        if not _type_ok(v, names.get(k)):
            raise IISError(f"--method-arg {k}={v!r}: {name} expects {names[k]}")


def _create(name: str, fn: Callable[..., Any], create: Callable[..., Any], kw: dict[str, Any]) -> Any:
    check_kwargs(name, fn, kw)
    try:
        return create(name, **kw)
    except TypeError as e:
        # a key that passed the static check (or whose target the source could not tell) and was
        # refused where it arrived: still the user's key, so the user's error; anything else is a bug
        m = _UNEXPECTED.search(str(e))
        if not (m and m.group(1) in kw):
            raise
        key = m.group(1)
        if key in builder_keywords(fn)[0]:  # taken by one variant of what the builder forwards to, not this one
            raise IISError(f"--method-arg {key}: {name} does not take it ({e})") from None
        raise IISError(f"--method-arg {key}: {name} does not take it; {_accepted(name, fn)}") from None


def _value_fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits ``hint`` where the hint is simple (int, float, bool, str, None, Literal, unions
    and tuples of those); other hints pass (the builder decides)."""
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_value_fits(value, a) for a in args)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_value_fits(v, a) for v, a in zip(value, args))
        return all(_value_fits(v, args[0]) for v in value) if args else True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _check_option_types(name: str, options: type | None, kw: dict[str, Any]) -> None:
    """One line for a model option of the wrong type (its TypedDict says which), before building."""
    import typing

    if options is None:
        return
    hints = typing.get_type_hints(options)
    for k, v in kw.items():
        if k in hints and not _value_fits(v, hints[k]):
            shown = getattr(hints[k], "__name__", None) or str(hints[k]).replace("typing.", "")
            raise IISError(f"--method-arg {k}={v!r}: {name} expects {shown}")


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
    from .checkpoint import clean_state_dict, load_checkpoint_model, load_fitting

    kw = dict(kwargs or {})
    if ckpt is not None:
        if kw:
            raise IISError(f"--method-arg {next(iter(kw))}: a --ckpt carries its model's arguments; "
                           "pass none")
        if weights:
            raise IISError("--weights: a --ckpt carries its weights; pass one of them")
        model, meta = load_checkpoint_model(ckpt)
        desc = {"ckpt": str(Path(ckpt).resolve()), "model": meta["model"]}
        if isinstance(meta.get("source"), dict):  # written by iis-convert: the authors' file it came from
            desc["source"] = meta["source"]
        return BuiltMethod(model, desc, meta.get("protocol", getattr(model, "default_protocol", "ritm")))
    if method is None:
        raise ValueError("method: give a method/model name or a checkpoint")
    from ..models.registry import model_entry, predictor_entry

    if method in list_predictors():
        if weights:
            raise IISError(f"--weights: {method} is a training-free method and takes no weights")
        pred = _create(method, predictor_entry(method), create_predictor, kw)
        desc = {"method": method, "kwargs": kw}
        if callable(getattr(pred, "description", None)):  # settings beyond the kwargs that change numbers
            desc["settings"] = pred.description()
        return BuiltMethod(pred, desc, getattr(pred, "default_protocol", "plain"))
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
        allowed = model_entry(method).option_names()  # the model's registered (typed) options
        unknown = sorted(set(kw) - set(allowed)) if allowed is not None else []
        if unknown:
            raise IISError(f"--method-arg {unknown[0]}: {method} does not take it; accepted keys of {method}: "
                           f"{', '.join(allowed)}")
        _check_option_types(method, model_entry(method).options, kw)
        if sd is None:  # random init from a fixed seed: the same name + kwargs is the same function, in any
            # process (the identity of a resumable log records only `random_init`)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                model = create_model(method, **kw)
        else:
            model = create_model(method, **kw)
        if sd is not None:
            load_fitting(model, sd, f"--weights {weights}", method)
        desc: dict[str, Any] = {"method": method, "kwargs": kw, "weights": str(weights) if weights else None,
                                "random_init": not weights}
        if not weights:
            desc["init_seed"] = RANDOM_INIT_SEED
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
