"""User-facing errors, written once.

Every error a user can cause (a bad file, argument or value) is an :class:`IISError` whose message is
one line naming the file, argument or value and what was expected. The console scripts print that
line and exit 2; the Python API lets it propagate (it is a ``ValueError``).
"""

from __future__ import annotations

__all__ = ["IISError", "InvalidSampleError", "WeightsMismatchError"]


class IISError(ValueError):
    """One-line, user-facing error (bad input, not a bug)."""


class InvalidSampleError(IISError):
    """An evaluation or training instance that must not be scored (empty object, unexpected mask
    values, undecodable image...). ``iis-eval --skip-invalid`` records it as skipped instead of failing.

    Attributes:
        sample_id: the instance id (``<image stem>`` or ``<image stem>#<instance>``) or file name.
        reason: what was found and what was expected, one line.
    """

    def __init__(self, sample_id: str, reason: str):
        super().__init__(f"{sample_id}: {reason}")
        self.sample_id = sample_id
        self.reason = reason

    def __reduce__(self):  # survive pickling (DataLoader workers, multiprocessing ranks)
        return type(self), (self.sample_id, self.reason)


class WeightsMismatchError(IISError):
    """A weights file or checkpoint whose state dict does not belong to the requested model (another
    model, another size, or not a state dict at all)."""
