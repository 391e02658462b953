"""Errors of the public API: one line naming the value and what was expected (all are ``IISError``, a
``ValueError``; missing files raise ``FileNotFoundError``). A refused call leaves a session unchanged."""

from __future__ import annotations

from ..core.errors import IISError, WeightsMismatchError

__all__ = ["InvalidImageError", "InvalidClickError", "InvalidMaskError", "UnknownMethodError",
           "WeightsMismatchError", "NothingToUndoError", "ProtocolOptionError"]


class InvalidImageError(IISError):
    """The image is not a ``uint8 (H, W, 3)`` RGB array."""


class InvalidClickError(IISError):
    """A click outside the image, or not a number."""


class InvalidMaskError(IISError):
    """A starting mask of the wrong shape or values."""


class UnknownMethodError(IISError):
    """Neither a registered model, a training-free method, nor an existing checkpoint / ONNX file."""


class NothingToUndoError(IISError):
    """``Session.undo()`` with no click to take back."""


class ProtocolOptionError(IISError):
    """A protocol override that does not apply (e.g. flip TTA for a training-free method)."""
