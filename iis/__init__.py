"""iis: click-based interactive image segmentation research (see README.md)."""

__version__ = "0.1.0"

import importlib as _importlib  # noqa: E402
import os as _os  # noqa: E402

# Before any MKL call: MKL's CPU GEMM (every nn.Linear) may pick its kernel by the row count on AVX2 code
# paths (AMD CPUs, older Intel), so a sample's logits would depend on how many samples share its forward.
# Strict conditional numerical reproducibility makes each row's result independent of the others, which
# batched evaluation's exactness on CPU relies on (docs/protocol.md §A.12). A user's own MKL_CBWR wins;
# no effect if MKL already ran in this process before iis was imported.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from .core.types import Click  # noqa: E402
from .models import registry as _registry  # noqa: E402
from .models.registry import create_model, create_predictor, list_models, list_predictors  # noqa: E402

# Registration: every method package registers its models/predictors when imported. The registry (a
# lower layer) imports nothing upward; this top-level package tells it what to import, lazily, so that
# `import iis.core` stays light and `create_model` still finds every method.
_registry.add_loader(lambda: _importlib.import_module("iis.methods"))

__all__ = ["Click", "create_model", "create_predictor", "list_models", "list_predictors", "__version__"]

# --- public interactive API (iis.api, issue 14); imported on first use so `import iis` stays light
_API_NAMES = ("load", "Segmenter", "Session", "Prediction", "Polygon", "clicks_from_yx", "clicks_from_percent")
__all__ += list(_API_NAMES)


def __getattr__(name: str):
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'iis' has no attribute {name!r}")
