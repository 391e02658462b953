"""``official-gpcis``: the authors' ``is_gp_resnet50.GpModel`` checkpoint (zmhhmz/GPCIS_CVPR2023) -> iis.

Only the ResNet-50 model is released (``checkpoints/GPCIS_Resnet50.pth``). Key layout:

==========================================================  =========================================
official                                                    iis (``gpcis_resnet50``)
==========================================================  =========================================
``model.backbone.*`` (ResNet-50 v1s, dilated)               ``segmentor.backbone.*``
``model.aspp.concurent.{0..3}.*``                           ``segmentor.aspp.branches.{0..3}.*``
``model.aspp.concurent.4.gap.{1,2}.*``                      ``segmentor.aspp.pool.1.{0,1}.*``
``model.aspp.project.{0,1}.*``                              ``segmentor.aspp.project.0.{0,1}.*``
``model.skip_project.skip_project.*``                       ``segmentor.skip_project.*``
``model.head.block.{0,1}.body.*`` / ``model.head.block.2``  ``segmentor.head.{0,1}.*`` / ``segmentor.head.2``
``maps_transform.*``                                        ``segmentor.maps_transform.*``
``theta``, ``u_mlp.{0,2}``                                  ``gp.theta``, ``gp.mlp.{0,2}``
``omega`` [256, 1]                                          ``gp.mu_w`` [256]
``omega_var`` []                                            ``gp.sigma_w`` [] (training only)
``logsigma2`` [48]                                          ``gp.log_prec`` [48]
``weights`` [1]                                             ``gp.rgb_weight`` []
==========================================================  =========================================

``maps_transform``: the authors' click stem makes 256 channels and their ResNet adds it to the 128-channel
stem output after ``F.pad(x, [0, 0, 0, 0, 0, 128 - 256])``, a negative pad that keeps channels 0..127 and
discards the rest; iis builds the 128 channels directly, so the converter keeps rows 0..127 of
``maps_transform.2.{weight,bias}`` (the per-channel ``|scale|`` that follows commutes with the crop).
``omega_var`` is read only in training mode (the std of the noise added to ``omega``); it is kept as
``sigma_w`` so that fine-tuning starts from the authors' value.
"""

from __future__ import annotations

from typing import Any

import torch

from ._mapping import KeyMap, apply_keymap, count_indexed, target_shapes
from .base import ConversionError, ConversionReport, Family, Shapes

__all__ = ["FAMILY", "KEYMAP", "UNUSED"]

NAME = "official-gpcis"
TITLE = "GPCIS"
MODEL = "gpcis_resnet50"

UNUSED: dict[str, str] = {}  # every official tensor has an iis counterpart (omega_var -> sigma_w, training only)


def _crop_rows(t: torch.Tensor, want: tuple[int, ...]) -> tuple[torch.Tensor, str]:
    if t.ndim == len(want) and t.shape[0] > want[0] and tuple(t.shape[1:]) == tuple(want[1:]):
        return t[: want[0]].clone(), (f"output channels {want[0]}..{t.shape[0] - 1} dropped: the authors' ResNet "
                                      f"crops the {t.shape[0]}-channel click features to its {want[0]}-channel stem "
                                      "(negative F.pad)")
    raise ValueError(f"cannot crop {list(t.shape)} to {list(want)}")


def _reshape(t: torch.Tensor, want: tuple[int, ...]) -> tuple[torch.Tensor, str]:
    if t.numel() != int(torch.Size(want).numel()):
        raise ValueError(f"{t.numel()} elements cannot be reshaped to {list(want)}")
    return t.reshape(want).clone(), f"reshaped {list(t.shape)} -> {list(want)} (same values)"


KEYMAP = KeyMap(
    renames=(
        (r"model\.backbone\.(.+)", r"segmentor.backbone.\1"),
        (r"model\.aspp\.concurent\.([0-3])\.(.+)", r"segmentor.aspp.branches.\1.\2"),
        (r"model\.aspp\.concurent\.4\.gap\.1\.(.+)", r"segmentor.aspp.pool.1.0.\1"),
        (r"model\.aspp\.concurent\.4\.gap\.2\.(.+)", r"segmentor.aspp.pool.1.1.\1"),
        (r"model\.aspp\.project\.([01])\.(.+)", r"segmentor.aspp.project.0.\1.\2"),
        (r"model\.skip_project\.skip_project\.(.+)", r"segmentor.skip_project.\1"),
        (r"model\.head\.block\.([01])\.body\.(.+)", r"segmentor.head.\1.\2"),
        (r"model\.head\.block\.2\.(.+)", r"segmentor.head.2.\1"),
        (r"maps_transform\.(.+)", r"segmentor.maps_transform.\1"),
        (r"theta\.(.+)", r"gp.theta.\1"),
        (r"u_mlp\.(.+)", r"gp.mlp.\1"),
        (r"omega", r"gp.mu_w"),
        (r"omega_var", r"gp.sigma_w"),
        (r"logsigma2", r"gp.log_prec"),
        (r"weights", r"gp.rgb_weight"),
    ),
    unused=UNUSED,
    transforms={r"segmentor\.maps_transform\.2\.(weight|bias)": _crop_rows,
                r"gp\.(mu_w|rgb_weight)": _reshape},
)

_REQUIRED = ("model.backbone.conv1.0.weight", "maps_transform.0.weight", "theta.weight", "omega", "logsigma2",
             "u_mlp.0.weight")


def matches(shapes: Shapes) -> bool:
    return all(k in shapes for k in _REQUIRED)


def infer_model(shapes: Shapes) -> tuple[str, dict[str, Any]]:
    blocks = [count_indexed(shapes, f"model.backbone.layer{i}.") for i in (1, 2, 3, 4)]
    if blocks != [3, 4, 6, 3]:
        raise ConversionError(f"{TITLE}: the backbone has {blocks} blocks per stage; the released GPCIS model is "
                              "ResNet-50 ([3, 4, 6, 3]), the only backbone iis converts")
    feat, theta = shapes["logsigma2"], shapes["theta.weight"]
    if tuple(feat) != (48,) or tuple(theta) != (256, 51):
        raise ConversionError(f"{TITLE}: feature dim {list(feat)} / theta {list(theta)}; the released ResNet-50 "
                              "model has 48 features and 256 random Fourier features (theta [256, 51])")
    return MODEL, {}


def convert(sd: dict[str, torch.Tensor], model: str) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    name, kwargs = infer_model({k: tuple(v.shape) for k, v in sd.items()})
    if model != name:
        raise ConversionError(f"{TITLE}: the file holds {name} (from its shapes), not {model}")
    out, report = apply_keymap(sd, KEYMAP, target_shapes(name, kwargs), family=NAME, model=name,
                               model_kwargs=kwargs, title=TITLE)
    report.notes.append("omega_var (the training-time std of the omega noise) kept as gp.sigma_w; unused at inference")
    return out, report


FAMILY = Family(NAME, "gpcis", matches, infer_model, convert, unused=UNUSED, models=(MODEL,), title=TITLE)
