"""RITM: the authors' HRNet-OCR models and RITM on the GPCIS backbones (see README.md)."""

from .model import RITMHRNetModel, SegmentorRITMModel, build_ritm_hrnet, build_segmentor_ritm

__all__ = ["RITMHRNetModel", "SegmentorRITMModel", "build_ritm_hrnet", "build_segmentor_ritm"]
