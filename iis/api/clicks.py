"""Click conversions for callers with other conventions (iis: ``Click(x, y, positive)``, original pixels).

* isegm / RITM / SimpleClick: ``Click(is_positive, coords=(y, x))`` objects or ``(y, x, positive)`` rows.
* Label Studio: keypoints with ``x``, ``y`` in percent (0-100) of the image width / height.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from ..core.types import Click
from .errors import InvalidClickError

__all__ = ["clicks_from_yx", "clicks_from_percent", "check_clicks"]


def _num(v: Any, what: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InvalidClickError(f"{what}: expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise InvalidClickError(f"{what}: expected a finite number, got {v!r}")
    return f


def clicks_from_yx(points: Iterable[Any]) -> list[Click]:
    """isegm-style clicks -> iis clicks.

    Args:
        points: objects with ``coords = (y, x)`` and ``is_positive`` (isegm's ``Click``), or rows
            ``(y, x, positive)``.
    """
    out = []
    for i, p in enumerate(points):
        if hasattr(p, "coords") and hasattr(p, "is_positive"):
            (y, x), pos = p.coords, p.is_positive
        else:
            try:
                y, x, pos = p
            except (TypeError, ValueError):
                raise InvalidClickError(f"click {i}: expected (y, x, positive) or an isegm Click, got {p!r}") from None
        out.append(Click(_num(x, f"click {i} x"), _num(y, f"click {i} y"), bool(pos)))
    return out


def clicks_from_percent(points: Iterable[Mapping[str, Any] | Sequence[Any]], width: int, height: int) -> list[Click]:
    """Label Studio keypoints (percent of the image size) -> iis clicks in pixels.

    Args:
        points: mappings with ``x``, ``y`` (percent, 0..100) and ``positive`` (bool) or Label Studio's
            ``keypointlabels`` list (a label named ``negative``/``background``, any case, is negative,
            anything else positive); or rows ``(x_percent, y_percent, positive)``.
        width, height: the image size in pixels (Label Studio's ``original_width``/``original_height``).

    ``x = x_percent / 100 * width``, clamped to ``width - 1`` at 100 % (the right edge).
    """
    out = []
    for i, p in enumerate(points):
        if isinstance(p, Mapping):
            xp, yp = p.get("x"), p.get("y")
            if "positive" in p:
                pos = bool(p["positive"])
            else:
                labels = [str(s).lower() for s in p.get("keypointlabels", [])]
                pos = not any(s in ("negative", "background", "neg", "bg") for s in labels)
        else:
            try:
                xp, yp, pos = p
            except (TypeError, ValueError):
                raise InvalidClickError(f"click {i}: expected {{x, y, positive}} or (x%, y%, positive), got {p!r}") from None
        xp, yp = _num(xp, f"click {i} x"), _num(yp, f"click {i} y")
        if not (0.0 <= xp <= 100.0 and 0.0 <= yp <= 100.0):
            raise InvalidClickError(f"click {i} (x={xp}%, y={yp}%): expected percentages in [0, 100]")
        out.append(Click(min(xp / 100.0 * width, width - 1.0), min(yp / 100.0 * height, height - 1.0), bool(pos)))
    return out


def check_clicks(clicks: Iterable[Any], shape: tuple[int, int]) -> list[Click]:
    """Validate clicks against an image of ``shape = (H, W)``: ``0 <= x < W``, ``0 <= y < H``."""
    H, W = shape
    out = []
    for i, c in enumerate(clicks):
        if not isinstance(c, Click):
            try:
                x, y, pos = c
            except (TypeError, ValueError):
                raise InvalidClickError(f"click {i}: expected iis.Click(x, y, positive) or (x, y, positive), "
                                        f"got {c!r}") from None
            c = Click(x, y, pos)
        x, y = _num(c.x, f"click {i} x"), _num(c.y, f"click {i} y")
        if not (0.0 <= x < W and 0.0 <= y < H):
            raise InvalidClickError(f"click {i} (x={c.x}, y={c.y}): outside the {W}x{H} image; expected "
                                    f"0 <= x < {W} and 0 <= y < {H} (original pixels)")
        # keep the caller's numbers (ints stay ints): the predictors then see exactly what iis-eval passes
        out.append(Click(c.x, c.y, bool(c.positive)))
    return out
