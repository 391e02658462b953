"""``official-ritm``: the authors' RITM ``HRNetModel`` checkpoints -> :class:`iis.methods.ritm.RITMHRNetModel`.

Released files (RITM README, GitHub release v1.0): ``sbd_h18_itermask.pth`` and
``coco_lvis_h18_itermask.pth`` (HRNet18 IT-M), ``coco_lvis_h18s_itermask.pth`` (HRNet18s IT-M),
``coco_lvis_h32_itermask.pth`` (HRNet32 IT-M), ``coco_lvis_h18_baseline.pth`` (HRNet18, no previous
mask). Each holds ``{"state_dict": ..., "config": ...}``; this module sees the state dict.

The mapping is one to one (no tensor is dropped or reshaped):

* ``maps_transform.*`` keeps its name;
* the HRNet (``feature_extractor.{conv1,bn1,conv2,bn2,layer1,transition*,stage*}``) moves to
  ``backbone.*`` with the same names (HRNet-Image-Classification names, shared by iis and timm);
* the OCR head moves to ``head.*``: ``aux_head`` -> ``aux``, ``conv3x3_ocr`` -> ``pixel``,
  ``ocr_distri_head.object_context_block.{f_pixel,f_object,f_down,f_up}`` ->
  ``attention.{query,key,value,out}``, ``ocr_distri_head.conv_bn_dropout`` -> ``fuse``, ``cls_head`` ->
  ``classifier``. The authors wrap each BN + ReLU in its own ``nn.Sequential`` (index ``1.0``); iis
  uses flat conv-BN-ReLU sequences, hence the index renames below.
* BN ``num_batches_tracked`` buffers map like the other BN tensors.
* ``f_pixel``/``f_object`` (``attention.query``/``key``) have no effect on the output (the attention
  softmax runs over one object region); iis keeps them so the module is the OCR paper's and every
  official tensor has a home.

The model (HRNet18 / 18s / 32 IT-M, HRNet18 baseline) is read from shapes: the width of
``transition1``, the number of stage-1 blocks and of stage modules, the OCR key width and the input
channels of ``maps_transform`` (3 with the previous mask, 2 without).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import torch

from .base import ConversionError, ConversionReport, Family, Shapes

__all__ = ["FAMILY", "matches", "infer_model", "convert", "official_to_iis_key"]

_OCR = "feature_extractor.ocr_distri_head."
_ONE = {"0": "0", "1.0": "1"}  # [conv, Sequential(BN, ReLU)] -> [conv, BN, ReLU]
_TWO = {"0": "0", "1.0": "1", "2": "3", "3.0": "4"}  # the same twice
# (official prefix, iis prefix, index renames below the prefix); first match wins
_RULES: list[tuple[str, str, dict[str, str] | None]] = [
    ("maps_transform.", "maps_transform.", None),
    ("feature_extractor.aux_head.", "head.aux.", None),
    ("feature_extractor.conv3x3_ocr.", "head.pixel.", None),
    (_OCR + "object_context_block.f_pixel.", "head.attention.query.", _TWO),
    (_OCR + "object_context_block.f_object.", "head.attention.key.", _TWO),
    (_OCR + "object_context_block.f_down.", "head.attention.value.", _ONE),
    (_OCR + "object_context_block.f_up.", "head.attention.out.", _ONE),
    (_OCR + "conv_bn_dropout.", "head.fuse.", _ONE),
    ("feature_extractor.cls_head.", "head.classifier.", None),
    ("feature_extractor.", "backbone.", None),
]
# keys whose presence identifies the layout (HRNetModel with use_rgb_conv=False)
_SIGNATURE = ("maps_transform.0.weight", "feature_extractor.conv1.weight", "feature_extractor.transition1.0.0.weight",
              "feature_extractor.stage2.0.fuse_layers.0.1.0.weight")


def official_to_iis_key(key: str) -> str | None:
    """The iis name of an official key, or None if no rule covers it."""
    for src, dst, index in _RULES:
        if key.startswith(src):
            rest = key[len(src):]
            if index is None:
                return dst + rest
            head, _, leaf = rest.rpartition(".")
            return dst + index[head] + "." + leaf if head in index else None
    return None


def _listing(keys: list[str], n: int = 3) -> str:
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def matches(shapes: Shapes) -> bool:
    """True for the state dict of the authors' ``HRNetModel`` (any size)."""
    return all(k in shapes for k in _SIGNATURE)


def _count(shapes: Shapes, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in shapes if (m := pat.match(k))})


def _describe(sig: tuple) -> str:
    width, blocks, modules, ocr, coord = sig
    return (f"HRNet width {width}, {blocks} blocks per branch, stage modules {list(modules)}, ocr_width {ocr}, "
            f"{coord} click-map channels ({'with' if coord == 3 else 'without'} previous mask)")


def _signature(shapes: Shapes) -> tuple:
    """(width, blocks, stage modules, ocr_width, click-map channels) read from shapes."""
    if "rgb_conv.0.weight" in shapes:
        raise ConversionError("official-ritm: this HRNetModel uses use_rgb_conv=True (rgb_conv.*), which no released "
                              "checkpoint and no iis model uses; expected maps_transform.* (use_rgb_conv=False)")
    f_down = _OCR + "object_context_block.f_down.0.weight"
    if f_down not in shapes:
        raise ConversionError(f"official-ritm: no OCR head ({f_down} missing; ocr_width=0?); every released RITM "
                              "HRNet and every iis RITM HRNet has one")
    return (shapes["feature_extractor.transition1.0.0.weight"][0], _count(shapes, "feature_extractor.layer1."),
            tuple(_count(shapes, f"feature_extractor.stage{s}.") for s in (2, 3, 4)), shapes[f_down][0],
            shapes["maps_transform.0.weight"][1])


@lru_cache(maxsize=None)
def _target(name: str) -> tuple[tuple, dict[str, tuple[int, ...]]]:
    """Signature and ``{key: shape}`` of the iis model ``name``, built on the meta device (no memory)."""
    from ..models.registry import create_model
    with torch.device("meta"):
        model = create_model(name)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    bb = model.backbone
    sig = (bb.channels[0], len(bb.layer1), (len(bb.stage2), len(bb.stage3), len(bb.stage4)),
           model.head.attention.key_channels, model.maps_transform[0].in_channels)
    return sig, shapes


def _candidates() -> list[str]:
    from ..models.registry import list_models  # the registry, not iis.methods: convert sits below methods

    return list_models("ritm_hrnet*")


def infer_model(shapes: Shapes) -> tuple[str, dict[str, Any]]:
    """``(iis model name, builder kwargs)`` of an official RITM state dict, read from its shapes."""
    if not matches(shapes):
        missing = [k for k in _SIGNATURE if k not in shapes]
        raise ConversionError(f"official-ritm: not a RITM HRNetModel state dict ({_listing(missing)} missing)")
    sig = _signature(shapes)
    for name in _candidates():
        if _target(name)[0] == sig:
            return name, {}
    known = "; ".join(f"{n}: {_describe(_target(n)[0])}" for n in _candidates() if not n.endswith("_test"))
    raise ConversionError(f"official-ritm: {_describe(sig)} is not a released RITM configuration (known: {known})")


def convert(sd: dict[str, torch.Tensor], model_name: str) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename every official tensor to its iis key; strict (see the module docstring).

    Raises:
        ConversionError: not RITM, a size other than ``model_name``, or keys/shapes that do not map.
    """
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    inferred, kwargs = infer_model(shapes)
    model_name = model_name or inferred
    if model_name != inferred:
        raise ConversionError(f"official-ritm: the state dict is {inferred} ({_describe(_signature(shapes))}), "
                              f"not {model_name}")
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in sd.items():
        new = official_to_iis_key(key)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    _, want = _target(model_name)
    unexpected = unmapped + [k for k in sd if (n := official_to_iis_key(k)) is not None and n not in want]
    if unexpected:
        raise ConversionError(f"official-ritm: {len(unexpected)} key(s) of the state dict have no place in "
                              f"{model_name}: {_listing(unexpected)}")
    missing = [k for k in want if k not in out]
    if missing:
        raise ConversionError(f"official-ritm: the state dict lacks {len(missing)} tensor(s) of {model_name} "
                              f"(iis names): {_listing(missing)}")
    bad = [f"{k} {list(shapes[k])} (expected {list(want[official_to_iis_key(k)])})" for k in sd
           if shapes[k] != want[official_to_iis_key(k)]]
    if bad:
        raise ConversionError(f"official-ritm: {len(bad)} tensor(s) have the wrong shape for {model_name}: "
                              f"{_listing(bad)}")
    report = ConversionReport(
        family=FAMILY.name, model=model_name, model_kwargs=kwargs, mapped=len(out),
        notes=[f"inferred from shapes: {_describe(_signature(shapes))}",
               "renamed feature_extractor.* -> backbone.* (HRNet) and head.* (OCR); nothing dropped or reshaped",
               "head.attention.query/key (official f_pixel/f_object) are kept although they cannot change the "
               "output (softmax over one object region)"])
    return out, report


FAMILY = Family(name="official-ritm", protocol="ritm", matches=matches, infer_model=infer_model, convert=convert,
                models=("ritm_hrnet18", "ritm_hrnet18s", "ritm_hrnet32", "ritm_hrnet18_baseline"), title="RITM")
