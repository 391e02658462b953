"""SimpleClick baseline: plain ViT + SimpleFPN + SegFormer head (see README.md)."""

from .model import (VARIANTS, SimpleClickEncoder, SimpleClickModel, build_simpleclick,
                    build_simpleclick_encoder)

__all__ = ["VARIANTS", "SimpleClickEncoder", "SimpleClickModel", "build_simpleclick", "build_simpleclick_encoder"]
