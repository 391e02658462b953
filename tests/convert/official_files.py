"""Test helpers: official-layout state dicts from the stored manifests, files saved the way the authors'
``save_checkpoint`` does (with a config object of a class from a module that does not exist here), and
hostile pickles whose unpickling would run ``os.system``.

``data/official_state_dicts.json.gz`` holds, per official configuration, only the keys, shapes, dtypes and
aliased keys read from the authors' models (docs/official-checkpoints.md*.json); no weights.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import types
from functools import lru_cache
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data" / "official_state_dicts.json.gz"

SIZES = {  # manifest -> (family, iis model)
    "simpleclick_vit_xtiny_448": ("official-simpleclick", "simpleclick_vit_xtiny"),
    "simpleclick_vit_base_448": ("official-simpleclick", "simpleclick_vit_base"),
    "simpleclick_vit_large_448": ("official-simpleclick", "simpleclick_vit_large"),
    "simpleclick_vit_huge_448": ("official-simpleclick", "simpleclick_vit_huge"),
    "adaptiveclick_vit_base_448": ("official-adaptiveclick", "adaptiveclick_vit_base"),
    "adaptiveclick_vit_huge_448": ("official-adaptiveclick", "adaptiveclick_vit_huge"),
    "gpcis_resnet50": ("official-gpcis", "gpcis_resnet50"),
}


@lru_cache(maxsize=1)
def manifests() -> dict:
    with gzip.open(DATA, "rt") as f:
        return json.load(f)


def official_state_dict(name: str, *, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Random tensors of the official shapes (``device="meta"``: shapes only); aliased keys share a tensor,
    as in the authors' models."""
    m = manifests()[name]
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape, dtype in m["tensors"]:
        dt = getattr(torch, dtype)
        if device == "meta":
            sd[key] = torch.empty(shape, dtype=dt, device="meta")
        elif dt.is_floating_point:
            sd[key] = torch.randn(shape, generator=g, dtype=dt) * 0.02
        else:
            sd[key] = torch.zeros(shape, dtype=dt)
    for alias, original in m["aliased_keys"]:
        sd[alias] = sd[original]
    return sd


def _fake_module(name: str) -> types.ModuleType:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    return sys.modules[name]


def save_like_authors(sd: dict[str, torch.Tensor], path: Path, *, legacy: bool = False) -> None:
    """``torch.save({'state_dict': sd, 'config': cfg})`` as ``isegm.utils.misc.save_checkpoint`` does, where
    ``cfg`` holds instances of classes from modules that exist only while saving (``isegm.*``, ``easydict``):
    loading must cope without them."""
    ser = _fake_module("isegm.utils.serialization")
    ed = _fake_module("easydict")

    class EasyDict(dict):  # pickled as a dict subclass with a __dict__ mirror, like the real one
        def __setattr__(self, k, v):
            super().__setattr__(k, v)
            self[k] = v

    class ModelConfig:
        def __reduce__(self):  # the real loader would import and call this; ours must not
            return (ModelConfig, (), self.__dict__)

    for cls, mod in ((EasyDict, ed), (ModelConfig, ser)):
        cls.__module__, cls.__qualname__ = mod.__name__, cls.__name__
        setattr(mod, cls.__name__, cls)
    cfg = ModelConfig()
    params = EasyDict()
    params.backbone_params = {"img_size": (448, 448), "norm_layer": torch.nn.LayerNorm}
    params.with_prev_mask = True
    cfg.__dict__.update({"class": "isegm.model.is_plainvit_model.PlainVitModel", "params": params})
    try:
        torch.save({"state_dict": sd, "config": cfg}, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for k in [k for k in sys.modules if k == "easydict" or k == "isegm" or k.startswith(("isegm.", "easydict."))]:
            del sys.modules[k]


class _Hostile:
    """Unpickling this calls ``os.system(command)`` (what a hostile checkpoint does)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def hostile_file(path: Path, marker: Path, *, legacy: bool = False, sd: dict | None = None,
                 iis_meta: dict | None = None) -> Path:
    """A checkpoint whose pickle would create ``marker`` through ``os.system`` when loaded unsafely.

    ``sd``: the state dict stored beside the payload (default: one tensor); ``iis_meta``: an ``"iis"`` entry,
    so that the file passes for an iis checkpoint.
    """
    obj = {"state_dict": sd if sd is not None else {"w": torch.zeros(2)}, "payload": _Hostile(f"touch {marker}")}
    if iis_meta is not None:
        obj["iis"] = iis_meta
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def hostile_raw_pickle(path: Path, marker: Path) -> Path:
    """A bare pickle (not written by torch.save) whose first object runs ``os.system``."""
    import pickle

    path.write_bytes(pickle.dumps(_Hostile(f"touch {marker}"), protocol=2))
    return path
