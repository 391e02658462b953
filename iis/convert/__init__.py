"""Official checkpoints of SimpleClick, AdaptiveClick, GPCIS and RITM read safely and converted to iis.

Families live in one module each (``simpleclick``, ``adaptiveclick``, ``gpcis``, ``ritm``), each with
a ``FAMILY`` (:class:`iis.convert.base.Family`); :func:`families` finds every such module present.

Public API (used by ``iis-convert``, ``iis-eval --weights`` and :func:`iis.eval.loading.build_method`):

* :func:`convert_file` ``(src, dst=None, *, family="auto", model=None) -> Conversion``
* :func:`convert_state_dict` ``(sd, *, family="auto", model=None, where=...) -> Conversion``
* :func:`load_weights` ``(path, model, *, what="--weights") -> (state dict, info)``
* :func:`safe_load` ``(path, *, what, map_location, foreign) -> object`` (never runs code from the file)
"""

from ..core.safe_load import UnreadableFileError, safe_load
from .api import (Conversion, convert_file, convert_state_dict, detect_family, extract_state_dict, families,
                  get_family, is_official, load_weights, read_checkpoint, sha256_of)
from .base import ConversionError, ConversionReport, Family

__all__ = ["ConversionError", "ConversionReport", "Family", "Conversion", "convert_file", "convert_state_dict",
           "detect_family", "extract_state_dict", "families", "get_family", "is_official", "load_weights",
           "read_checkpoint", "sha256_of", "safe_load", "UnreadableFileError"]
