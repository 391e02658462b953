"""``official-adaptiveclick``: the authors' ``AdaptiveClickModel`` checkpoints (lab206/AdaptiveClick) -> iis.

Sizes B and H (``adaptiveclick_{base,huge}448_{cocolvis,sbd}_itermask.py``). Key layout:

=======================================================================  ==================================
official                                                                 iis (``adaptiveclick_vit_*``)
=======================================================================  ==================================
``backbone.*``, ``patch_embed_coords.*``                                 ``encoder.backbone.*``, ``encoder.patch_embed_coords.*``
``pixel_decoder.neck.*`` (SimpleFPN)                                     ``encoder.neck.*``
``pixel_decoder.transformer.{level_embed,encoder.layers.*}``             ``pixel_decoder.{level_embed,encoder.layers.*}``
``pixel_decoder.{lateral_convs,output_convs}.0.*``                       ``pixel_decoder.{lateral,output}.*``
``pixel_decoder.{input_proj,mask_features}.*``                           same
``click_aware_decoder.transformer_self_attention_layers.N.self_attn.*``  ``decoder.self_attn.N.attn.*``
``click_aware_decoder.transformer_cross_attention_layers.N.multihead_attn.*``  ``decoder.cross_attn.N.attn.*``
``click_aware_decoder.transformer_ffn_layers.N.*``                       ``decoder.ffn.N.*``
``click_aware_decoder.{query_feat,query_embed,level_embed,...}``         ``decoder.*``
=======================================================================  ==================================

Dropped: the ViT's ``cls_token``/``fc_norm``/``head``; ``criterion.empty_weight`` (a buffer of the training
loss saved with the model); ``pixel_decoder.adapter_1.*`` and ``pixel_decoder.layer_1.*``, which Mask2Former
registers a second time under the names ``lateral_convs.0.*`` and ``output_convs.0.*`` (the same tensors; the
converter checks they are equal).
"""

from __future__ import annotations

from typing import Any

import torch

from ._mapping import KeyMap, apply_keymap, target_shapes
from ._vit import VIT_UNUSED, drop_cls_row, vit_size
from .base import ConversionError, ConversionReport, Family, Shapes

__all__ = ["FAMILY", "KEYMAP", "UNUSED"]

NAME = "official-adaptiveclick"
TITLE = "AdaptiveClick"
MODELS = {"base": "adaptiveclick_vit_base", "huge": "adaptiveclick_vit_huge"}

UNUSED = {
    **VIT_UNUSED,
    r"criterion\.empty_weight": "class weights of the training criterion (a loss buffer saved with the model)",
}

_CAD = r"click_aware_decoder\."
KEYMAP = KeyMap(
    renames=(
        (r"backbone\.(.+)", r"encoder.backbone.\1"),
        (r"patch_embed_coords\.(.+)", r"encoder.patch_embed_coords.\1"),
        (r"pixel_decoder\.neck\.(.+)", r"encoder.neck.\1"),
        (r"pixel_decoder\.transformer\.level_embed", r"pixel_decoder.level_embed"),
        (r"pixel_decoder\.transformer\.encoder\.(.+)", r"pixel_decoder.encoder.\1"),
        (r"pixel_decoder\.lateral_convs\.0\.(.+)", r"pixel_decoder.lateral.\1"),
        (r"pixel_decoder\.output_convs\.0\.(.+)", r"pixel_decoder.output.\1"),
        (r"pixel_decoder\.((input_proj|mask_features)\..+)", r"pixel_decoder.\1"),
        (_CAD + r"transformer_self_attention_layers\.(\d+)\.self_attn\.(.+)", r"decoder.self_attn.\1.attn.\2"),
        (_CAD + r"transformer_self_attention_layers\.(\d+)\.norm\.(.+)", r"decoder.self_attn.\1.norm.\2"),
        (_CAD + r"transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.+)", r"decoder.cross_attn.\1.attn.\2"),
        (_CAD + r"transformer_cross_attention_layers\.(\d+)\.norm\.(.+)", r"decoder.cross_attn.\1.norm.\2"),
        (_CAD + r"transformer_ffn_layers\.(\d+)\.(.+)", r"decoder.ffn.\1.\2"),
        (_CAD + r"((decoder_norm|query_feat|query_embed|level_embed|class_embed|mask_embed)\..+)", r"decoder.\1"),
    ),
    unused=UNUSED,
    aliases=(
        (r"pixel_decoder\.adapter_1\.(.+)", r"pixel_decoder.lateral_convs.0.\1"),
        (r"pixel_decoder\.layer_1\.(.+)", r"pixel_decoder.output_convs.0.\1"),
    ),
    transforms={r"encoder\.backbone\.pos_embed": drop_cls_row},
)

_REQUIRED = ("backbone.patch_embed.proj.weight", "patch_embed_coords.proj.weight", "pixel_decoder.neck.down_4.0.weight",
             "click_aware_decoder.query_feat.weight")


def matches(shapes: Shapes) -> bool:
    return all(k in shapes for k in _REQUIRED)


def infer_model(shapes: Shapes) -> tuple[str, dict[str, Any]]:
    shifted = {k.replace("pixel_decoder.neck.", "neck.", 1): v for k, v in shapes.items()}
    variant, img_size, prev = vit_size(shifted, "backbone.", TITLE, allowed=tuple(MODELS))
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
    report.notes.append(f"size inferred from shapes: {name} (embed dim {shapes['backbone.patch_embed.proj.weight'][0]})")
    return out, report


FAMILY = Family(NAME, "simpleclick", matches, infer_model, convert, unused=UNUSED, models=tuple(MODELS.values()),
                title=TITLE)
