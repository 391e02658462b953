"""What every official-checkpoint family provides, and the report a conversion produces.

A *family* (``official-simpleclick``, ``official-adaptiveclick``, ``official-gpcis``,
``official-ritm``) is a module in :mod:`iis.convert` exposing one :class:`Family` value named
``FAMILY``. Conversion is pure data: a state dict in, a state dict of an iis model out, every official
tensor either mapped or dropped from a named list of known-unused tensors; anything else is a
:class:`ConversionError` naming the keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..core.errors import IISError

__all__ = ["ConversionError", "ConversionReport", "Family", "Shapes"]

Shapes = Mapping[str, tuple[int, ...]]  # official key -> tensor shape


class ConversionError(IISError):
    """A file that is not (or not entirely) an official checkpoint of the expected family/size."""


@dataclass
class ConversionReport:
    """What happened to every official tensor (printed by ``iis-convert`` and stored in the output).

    Attributes:
        family: ``FAMILY.name``.
        model: iis registry name of the target model; ``model_kwargs`` its builder arguments.
        mapped: number of official tensors copied (possibly renamed) into the iis state dict.
        dropped: official keys left out because the authors' forward never uses them (from the
            family's named list, each with the reason).
        reshaped: ``(key, old shape, new shape, how)`` for tensors changed on the way (e.g. the
            class-token row of ``pos_embed`` removed, channels cropped).
        notes: anything else a user should know (e.g. an inferred size).
    """

    family: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    mapped: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)
    reshaped: list[tuple[str, list[int], list[int], str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "model": self.model, "model_kwargs": self.model_kwargs,
                "mapped": self.mapped, "dropped": [list(d) for d in self.dropped],
                "reshaped": [list(r) for r in self.reshaped], "notes": list(self.notes)}


@dataclass(frozen=True)
class Family:
    """One official checkpoint family.

    Attributes:
        name: ``official-<family>`` (the ``iis-convert --from`` value).
        protocol: the paper's protocol preset recorded in the converted checkpoint.
        matches: key-set detection on the official state dict's ``{key: shape}``; must not rely on
            file names.
        infer_model: ``shapes -> (iis model name, builder kwargs)``, the size (xTiny/B/L/H, HRNet
            width, ...) read from shapes; raises :class:`ConversionError` naming what does not fit.
        convert: ``(official state dict, iis model name) -> (iis state dict, report)``; strict.
        unused: the family's named list of known-unused official tensors, ``{regex on the official key:
            reason}`` (documentation and tests; ``convert`` applies it). Optional (added after the first
            version of this interface; default empty).
        models: iis registry names ``infer_model`` can return (for ``--model`` checks and listings).
            Optional, default empty.
        title: human-readable name used in messages (e.g. ``"SimpleClick"``); default ``name``.
    """

    name: str
    protocol: str
    matches: Callable[[Shapes], bool]
    infer_model: Callable[[Shapes], tuple[str, dict[str, Any]]]
    convert: Callable[[dict[str, torch.Tensor], str], tuple[dict[str, torch.Tensor], ConversionReport]]
    unused: Mapping[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    title: str = ""

    @property
    def display(self) -> str:
        return self.title or self.name
