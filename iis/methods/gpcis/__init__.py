"""GPCIS: interactive segmentation as Gaussian-process classification (see README.md)."""

from .gp import GPHead, gather_click_features
from .loss import GPCISLoss
from .model import GPCISModel, build_gpcis

__all__ = ["GPHead", "gather_click_features", "GPCISLoss", "GPCISModel", "build_gpcis"]
