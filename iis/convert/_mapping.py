"""The strict key mapper every family uses: rename rules, named unused keys, aliases, reshapes.

A :class:`KeyMap` says, for one family, how each official key becomes an iis key. :func:`apply_keymap`
runs it against the target model's own ``{key: shape}`` (built on the meta device, so even ViT-H costs
no memory) and fails with ONE :class:`ConversionError` line naming every key that is neither mapped nor
in the family's known-unused list, every iis tensor left unfilled and every shape that does not fit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

import torch

from .base import ConversionError, ConversionReport

__all__ = ["KeyMap", "apply_keymap", "target_shapes", "shapes_of", "count_indexed", "short_list"]

# (tensor, target shape) -> (new tensor, how it was changed)
Transform = Callable[[torch.Tensor, tuple[int, ...]], tuple[torch.Tensor, str]]


@dataclass(frozen=True)
class KeyMap:
    """How one family's official keys become iis keys.

    Attributes:
        renames: ``(regex, replacement)`` tried in order; the first whose regex matches the whole official
            key gives the iis key (``re.fullmatch`` + ``Match.expand``).
        unused: ``{regex: reason}``: official keys the authors' forward never reads; dropped, with reason.
        aliases: ``(regex, replacement)``: official keys that are a second registration of another official
            key (same tensor stored twice); the replacement names that key, and the two must be equal.
        transforms: ``{iis key regex: transform}`` for tensors whose layout differs (reshape, crop).
    """

    renames: tuple[tuple[str, str], ...]
    unused: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[tuple[str, str], ...] = ()
    transforms: Mapping[str, Transform] = field(default_factory=dict)


def short_list(items: list[str], n: int = 4) -> str:
    """``a, b, c, d (+5 more)``: keeps error lines short."""
    head = ", ".join(items[:n])
    return head + (f" (+{len(items) - n} more)" if len(items) > n else "")


def shapes_of(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}


def count_indexed(shapes: Mapping[str, Any], prefix: str) -> int:
    """Number of distinct ``N`` in keys ``<prefix>N.<...>`` (e.g. ViT blocks, ResNet layer blocks)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in shapes if (m := pat.match(k))})


@lru_cache(maxsize=32)
def _target_shapes_cached(name: str, kwargs_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from ..models.registry import create_model

    with torch.device("meta"):
        model = create_model(name, **json.loads(kwargs_json))
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def target_shapes(name: str, kwargs: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the iis model ``name(**kwargs)``, built on the meta device (no memory, no init)."""
    return dict(_target_shapes_cached(name, json.dumps(dict(kwargs or {}), sort_keys=True)))


def _first(rules: tuple[tuple[str, str], ...], key: str) -> str | None:
    for pat, repl in rules:
        m = re.fullmatch(pat, key)
        if m:
            return m.expand(repl)
    return None


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device.type == "meta":
        return True
    return a.data_ptr() == b.data_ptr() or torch.equal(a, b)


def apply_keymap(sd: Mapping[str, torch.Tensor], keymap: KeyMap, target: Mapping[str, tuple[int, ...]], *,
                 family: str, model: str, model_kwargs: dict[str, Any] | None = None,
                 title: str | None = None) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map ``sd`` onto ``target`` strictly; returns the iis state dict and the report.

    Raises:
        ConversionError: one line listing the unrecognised official keys, the iis keys left missing,
            shape mismatches and aliases that differ from their original.
    """
    report = ConversionReport(family=family, model=model, model_kwargs=dict(model_kwargs or {}))
    out: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}
    unknown: list[str] = []
    bad_shape: list[str] = []
    bad_alias: list[str] = []
    clash: list[str] = []
    unused = [(re.compile(p), r) for p, r in keymap.unused.items()]
    transforms = [(re.compile(p), f) for p, f in keymap.transforms.items()]
    for k, v in sd.items():
        reason = next((r for p, r in unused if p.fullmatch(k)), None)
        if reason is not None:
            report.dropped.append((k, reason))
            continue
        original = _first(keymap.aliases, k)
        if original is not None:
            if original in sd and _same_tensor(sd[original], v):
                report.dropped.append((k, f"second registration of {original} (the same tensor)"))
            else:
                bad_alias.append(f"{k} (differs from {original})" if original in sd else f"{k} (no {original})")
            continue
        new = _first(keymap.renames, k)
        if new is None or new not in target:
            unknown.append(k)
            continue
        if new in source_of:
            clash.append(f"{source_of[new]} and {k} -> {new}")
            continue
        want = tuple(target[new])
        fn = next((f for p, f in transforms if p.fullmatch(new)), None)
        if fn is not None and tuple(v.shape) != want:
            old = list(v.shape)
            try:
                v, how = fn(v, want)
            except (ValueError, RuntimeError) as e:
                bad_shape.append(f"{k} {old} (expected {list(want)}: {e})")
                continue
            report.reshaped.append((k, old, list(v.shape), how))
        if tuple(v.shape) != want:
            bad_shape.append(f"{k} {list(v.shape)} (expected {list(want)} for {new})")
            continue
        out[new] = v
        source_of[new] = k
    missing = [k for k in target if k not in out]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} official tensor(s) not recognised: {short_list(unknown)}")
    if missing:
        problems.append(f"{len(missing)} tensor(s) of {model} not in the file: {short_list(missing)}")
    if bad_shape:
        problems.append(f"{len(bad_shape)} shape mismatch(es): {short_list(bad_shape, 3)}")
    if bad_alias:
        problems.append(f"{len(bad_alias)} aliased key(s) that are not copies: {short_list(bad_alias, 3)}")
    if clash:
        problems.append(f"keys mapped twice: {short_list(clash, 2)}")
    if problems:
        raise ConversionError(f"not a complete {title or family} checkpoint for {model}: " + "; ".join(problems))
    report.mapped = len(out)
    return out, report
