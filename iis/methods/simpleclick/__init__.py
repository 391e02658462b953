"""SimpleClick baseline: plain ViT + SimpleFPN + SegFormer head (see README.md)."""

from .model import (VARIANTS, SimpleClickEncoder, SimpleClickModel, build_simpleclick,
                    build_simpleclick_encoder)

__all__ = ["VARIANTS", "SimpleClickEncoder", "SimpleClickModel", "build_simpleclick", "build_simpleclick_encoder"]

# the LightningModule is imported lazily so `create_model` works without importing Lightning
def __getattr__(name):
    if name == "SimpleClick":
        from .module import SimpleClick

        return SimpleClick
    raise AttributeError(name)
