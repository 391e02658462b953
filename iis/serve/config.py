"""Server limits and options (``iis-serve`` flags map one to one onto these fields)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServeConfig"]


@dataclass(frozen=True)
class ServeConfig:
    """Limits and options of one server.

    Attributes:
        max_body_bytes: largest request body; 32 MiB, the ``maxRequestBodySize`` of CVAT's own Nuclio
            interactor functions (so a frame CVAT can send, this server accepts).
        max_image_pixels: largest decoded image (width x height); checked from the header before decoding.
        max_clicks: most clicks in one request.
        max_queue: requests admitted at once (decoding + waiting for the model); more get 503.
        ls_root: folder Label Studio task images are read from (``/data/local-files/?d=P`` -> ``ls_root/P``,
            ``/data/upload/P`` -> ``ls_root/media/upload/P``, a plain path ``P`` -> ``ls_root/P``); None:
            only ``data:`` URLs are accepted.
        polygon_tolerance: Douglas-Peucker tolerance of the returned polygons, pixels (as
            ``Prediction.to_polygons``).
        model_version: the version string Label Studio shows (default ``iis-<method>``).
    """

    max_body_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_clicks: int = 100
    max_queue: int = 32
    ls_root: Path | None = None
    polygon_tolerance: float = 1.0
    model_version: str | None = None

    def __post_init__(self):
        for name in ("max_body_bytes", "max_image_pixels", "max_clicks", "max_queue"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        if self.polygon_tolerance < 0:
            raise ValueError(f"polygon_tolerance: expected >= 0 pixels, got {self.polygon_tolerance}")
        if self.ls_root is not None:
            root = Path(self.ls_root)
            if not root.is_dir():
                raise FileNotFoundError(f"ls_root {root}: no such folder")
            object.__setattr__(self, "ls_root", root.resolve())
