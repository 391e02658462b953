"""iis: click-based interactive image segmentation research (see README.md)."""

__version__ = "0.1.0"

from .core.types import Click  # noqa: E402
from .models.registry import create_model, create_predictor, list_models, list_predictors  # noqa: E402

__all__ = ["Click", "create_model", "create_predictor", "list_models", "list_predictors", "__version__"]
