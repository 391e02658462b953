"""RITM-style baselines on the GPCIS backbones (see README.md)."""

from .model import RITMModel, build_ritm

__all__ = ["RITMModel", "build_ritm"]
