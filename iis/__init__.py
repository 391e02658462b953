"""iis: click-based interactive image segmentation research (see README.md)."""

__version__ = "0.1.0"

from .core.types import Click  # noqa: E402
from .models.registry import create_model, create_predictor, list_models, list_predictors  # noqa: E402

__all__ = ["Click", "create_model", "create_predictor", "list_models", "list_predictors", "__version__"]

# --- public interactive API (iis.api, issue 14); imported on first use so `import iis` stays light
_API_NAMES = ("load", "Segmenter", "Session", "Prediction", "Polygon", "clicks_from_yx", "clicks_from_percent")
__all__ += list(_API_NAMES)


def __getattr__(name: str):
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'iis' has no attribute {name!r}")
