"""Run a model exported by ``iis-export`` (ONNX) through the evaluation's own transforms.

:class:`OnnxModel` is an ONNX Runtime session with the model contract of :mod:`iis.models.base`
(``model(image, clicks, prev_mask) -> logits``), so :class:`~iis.core.predictor.ModelPredictor` drives it
with exactly the zoom-in, resize, flip TTA, sigmoid, paste-back and previous-mask code that ``iis-eval``
uses; no PyTorch model is built. ``iis.load("model.onnx")`` gives the same thing as a
:class:`~iis.api.Segmenter`.

    pred = iis.runtime.predictor("simpleclick.onnx")      # a ModelPredictor (set_image / predict)
    seg = iis.load("simpleclick.onnx"); sess = seg.session(image); sess.click(120, 80)

The file's metadata (written by :func:`iis.export.export_onnx`) names the model, its default protocol and
the input size it was exported for; a protocol that would feed another size is refused with one line.
ONNX Runtime sessions accept concurrent ``run`` calls, so one :class:`OnnxModel` may serve several threads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import IISError
from ..core.predictor import ModelPredictor
from ..core.protocol import EvalProtocol, get_protocol

__all__ = ["OnnxModel", "predictor", "read_metadata"]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``iis.*`` metadata of an exported file (JSON values), without building a session."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key[4:]: json.loads(p.value) for p in m.metadata_props if p.key.startswith("iis.")}


class OnnxModel:
    """An exported ONNX file as an interactive model callable (CPU by default).

    Attributes:
        meta: the ``iis.*`` metadata (``model``, ``protocol``, ``input_size``, ``with_prev_mask``, ...).
        with_prev_mask: whether the graph takes a previous mask.
        default_protocol: the protocol preset the model is evaluated with.
        input_size: ``(H, W)`` the graph was exported for, or None when H and W are dynamic.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:  # optional dependency
            raise IISError("onnxruntime is not installed; pip install 'iis[export]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
            raise IISError(f"{self.path}: not a loadable ONNX model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]})") from None
        raw = self.session.get_modelmeta().custom_metadata_map
        self.meta = {k[4:]: json.loads(v) for k, v in raw.items() if k.startswith("iis.")}
        names = [i.name for i in self.session.get_inputs()]
        if "image" not in names or "clicks" not in names:
            raise IISError(f"{self.path}: inputs {names}; expected image, clicks[, prev_mask] (an iis-export file)")
        self.with_prev_mask = "prev_mask" in names
        self.default_protocol = self.meta.get("protocol", "ritm")
        size = self.meta.get("input_size")
        self.input_size = tuple(size) if size else None

    # ModelPredictor calls .eval()/.to() only on nn.Modules; these keep the object usable as one anyway
    def eval(self) -> "OnnxModel":
        return self

    def __call__(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.input_size is not None and tuple(image.shape[-2:]) != self.input_size:
            raise IISError(f"{self.path.name}: exported for {self.input_size[0]}x{self.input_size[1]} inputs, the "
                           f"protocol fed {image.shape[-2]}x{image.shape[-1]}; use the protocol it was exported for "
                           f"({self.default_protocol!r}) or re-export with --size")
        feeds = {"image": image.detach().float().cpu().numpy(), "clicks": clicks.detach().float().cpu().numpy()}
        if self.with_prev_mask:
            prev = prev_mask if prev_mask is not None else image.new_zeros(image.shape[0], 1, *image.shape[-2:])
            feeds["prev_mask"] = prev.detach().float().cpu().numpy()
        out = self.session.run(["logits"], feeds)[0]
        return torch.from_numpy(np.asarray(out)).to(image.device)


def predictor(path: str | Path, protocol: str | EvalProtocol | None = None, dataset: str | None = None,
              threads: int | None = None) -> ModelPredictor:
    """A :class:`ModelPredictor` (``set_image``/``predict``, what ``iis-eval`` drives) over an ONNX file.

    Args:
        protocol: preset name or ``EvalProtocol``; default: the one stored in the file.
        dataset: resolve the preset's per-dataset overrides.
    """
    model = OnnxModel(path, threads=threads)
    base = protocol if isinstance(protocol, EvalProtocol) else get_protocol(protocol or model.default_protocol)
    return ModelPredictor(model, base.for_dataset(dataset or ""), "cpu")
