"""Official checkpoints of SimpleClick, AdaptiveClick, GPCIS and RITM read safely and converted to iis.

Families live in one module each (``simpleclick``, ``adaptiveclick``, ``gpcis``, ``ritm``), each with
a ``FAMILY`` (:class:`iis.convert.base.Family`).
"""

from .base import ConversionError, ConversionReport, Family

__all__ = ["ConversionError", "ConversionReport", "Family"]
