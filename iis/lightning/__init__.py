"""Layer 2: the Lightning adapter (module base class, DataModule, evaluation callback, loggers)."""

from .callbacks import InteractiveEvaluation
from .datamodule import IISDataModule
from .loggers import IISWandbLogger
from .module import IISModule

__all__ = ["IISModule", "IISDataModule", "InteractiveEvaluation", "IISWandbLogger"]
