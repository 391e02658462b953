"""Your own data: ``ritm_effnet_lite0`` (our own baseline) and the fine-tuning recipe on a folder (see README.md)."""

from .model import EffNetRITMModel, effnet_lite0_weights, load_effnet_lite0

__all__ = ["EffNetRITMModel", "effnet_lite0_weights", "load_effnet_lite0"]
