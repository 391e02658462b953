"""A refused request: one line and the HTTP status that says why."""

from __future__ import annotations

from ..core.errors import IISError

__all__ = ["RequestError", "bad_request", "too_large", "unsupported", "invalid"]


class RequestError(IISError):
    """Bad input to an endpoint: answered ``{"error": message}`` with ``status``.

    400: undecodable data (not JSON, not base64, not an image); 413: too large (body bytes, image pixels);
    415: wrong content type; 422: well-formed but invalid values (missing or mistyped fields, clicks
    outside the image, too many clicks, a mask of another size).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = int(status)

    def __reduce__(self):
        return type(self), (str(self), self.status)


def bad_request(msg: str) -> RequestError:
    return RequestError(msg, 400)


def too_large(msg: str) -> RequestError:
    return RequestError(msg, 413)


def unsupported(msg: str) -> RequestError:
    return RequestError(msg, 415)


def invalid(msg: str) -> RequestError:
    return RequestError(msg, 422)
