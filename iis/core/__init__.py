"""Layer 0: conventions, clicker, metrics, protocol, predictor transforms, the interactive loop."""

from .clicker import next_click, next_click_m2n2
from .loop import InstanceResult, interactive_loop, run_instance
from .metrics import iou, miou_curve, nof, noc
from .predictor import ModelPredictor, Predictor
from .protocol import PRESETS, EvalProtocol, ZoomIn, get_protocol
from .types import Click, Sample

__all__ = ["Click", "Sample", "next_click", "next_click_m2n2", "iou", "noc", "nof", "miou_curve", "EvalProtocol",
           "ZoomIn", "PRESETS", "get_protocol", "Predictor", "ModelPredictor", "run_instance", "interactive_loop",
           "InstanceResult"]
