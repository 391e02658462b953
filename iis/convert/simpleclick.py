"""``official-simpleclick``: the authors' ``PlainVitModel`` checkpoints (uncbiag/SimpleClick) -> iis.

Sizes xTiny/B/L/H (``plainvit_{xtiny,base,large,huge}448_{cocolvis,sbd}_itermask.py``; the SBD and
COCO+LVIS configs build the same state dict, docs/official-checkpoints.md). Key layout:

=====================================  ====================================
official                               iis (``simpleclick_vit_*``)
=====================================  ====================================
``backbone.*`` (timm ViT)              ``encoder.backbone.*``
``patch_embed_coords.*``               ``encoder.patch_embed_coords.*``
``neck.down_{4,8,16,32}.*``            ``encoder.neck.*``
``head.{convs,fusion_conv,conv_seg}``  ``head.*``
``backbone.pos_embed`` [1, 1+s², D]    ``encoder.backbone.pos_embed`` [1, s², D] (class row removed)
=====================================  ====================================

Dropped (21 keys, the same in every size): ``backbone.cls_token``, ``backbone.fc_norm.*``,
``backbone.head.*`` and ``head.up_conv{1,2}.*`` (built only for ``upsample='x2'/'x4'``; the released
configs use ``'x1'``).
"""

from __future__ import annotations

from typing import Any

import torch

from ._mapping import KeyMap, apply_keymap, target_shapes
from ._vit import VIT_UNUSED, drop_cls_row, vit_size
from .base import ConversionError, ConversionReport, Family, Shapes

__all__ = ["FAMILY", "KEYMAP", "UNUSED"]

NAME = "official-simpleclick"
TITLE = "SimpleClick"
MODELS = {"xtiny": "simpleclick_vit_xtiny", "base": "simpleclick_vit_base", "large": "simpleclick_vit_large",
          "huge": "simpleclick_vit_huge"}

UNUSED = {
    **VIT_UNUSED,
    r"head\.up_conv[12]\.\d+\.(weight|bias)": "SegFormer head up-convs: built by the authors' head but used only "
                                              "with upsample='x2'/'x4'; the released configs use 'x1'",
}

KEYMAP = KeyMap(
    renames=(
        (r"backbone\.(.+)", r"encoder.backbone.\1"),
        (r"patch_embed_coords\.(.+)", r"encoder.patch_embed_coords.\1"),
        (r"neck\.(.+)", r"encoder.neck.\1"),
        (r"head\.((convs|fusion_conv|conv_seg)\..+)", r"head.\1"),
    ),
    unused=UNUSED,
    transforms={r"encoder\.backbone\.pos_embed": drop_cls_row},
)

_REQUIRED = ("backbone.patch_embed.proj.weight", "patch_embed_coords.proj.weight", "neck.down_4.0.weight",
             "head.conv_seg.weight")


def matches(shapes: Shapes) -> bool:
    return all(k in shapes for k in _REQUIRED) and not any(k.startswith("pixel_decoder.") for k in shapes)


def infer_model(shapes: Shapes) -> tuple[str, dict[str, Any]]:
    variant, img_size, prev = vit_size(shapes, "backbone.", TITLE)
    kwargs: dict[str, Any] = {}
    if img_size != 448:
        kwargs["img_size"] = img_size
    if not prev:
        kwargs["with_prev_mask"] = False
    return MODELS[variant], kwargs


def convert(sd: dict[str, torch.Tensor], model: str) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    name, kwargs = infer_model(shapes)
    if model != name:
        raise ConversionError(f"{TITLE}: the file holds {name} (from its shapes), not {model}")
    out, report = apply_keymap(sd, KEYMAP, target_shapes(name, kwargs), family=NAME, model=name,
                               model_kwargs=kwargs, title=TITLE)
    pe, rows = shapes["backbone.patch_embed.proj.weight"], shapes["backbone.pos_embed"][1]
    report.notes.append(f"size inferred from shapes: {name} (embed dim {pe[0]}, patch {pe[2]}, "
                        f"{rows} pos_embed rows)")
    return out, report


FAMILY = Family(NAME, "simpleclick", matches, infer_model, convert, unused=UNUSED, models=tuple(MODELS.values()),
                title=TITLE)
