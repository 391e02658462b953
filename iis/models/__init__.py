"""Reusable ``nn.Module`` parts and the model registry (no Lightning here)."""

from .base import InteractiveModel, disk_maps, normalize_image
from .registry import create_model, create_predictor, list_models, list_predictors, register_model, register_predictor

__all__ = ["InteractiveModel", "disk_maps", "normalize_image", "create_model", "create_predictor", "list_models",
           "list_predictors", "register_model", "register_predictor"]
