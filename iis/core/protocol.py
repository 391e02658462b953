"""The evaluation protocol as one recorded value, with the presets of the reference codebases.

Every knob that changes a published number lives in :class:`EvalProtocol`; ``iis-eval`` and the
training callback store ``protocol.to_dict()`` in every result file. Sources: docs/protocol.md §A.4-A.5
(RITM/SimpleClick), §A.10-A.11 (ClickSEG/GPCIS), docs/methods.md §2.10 (M2N2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["ZoomIn", "EvalProtocol", "PRESETS", "get_protocol"]


@dataclass(frozen=True)
class ZoomIn:
    """RITM's ZoomIn transform (``inference/transforms/zoom_in.py``) and ClickSEG's crop-only variant.

    Attributes:
        skip_clicks: no zoom while the number of clicks is <= this; < 0 means the whole image is the
            ROI when there is no usable previous mask (SimpleClick).
        target_size: int = resize the crop's longer side to it; ``[h, w]`` = squash to exactly that;
            None = no resize inside the zoom (ClickSEG; ``EvalProtocol.infer_size`` resizes instead).
        expansion_ratio: the ROI box is grown around its centre by this factor ...
        min_crop_size: ... to at least this side length (pixels).
        recompute_thresh_iou: keep the stored ROI unless the new one's box IoU with it is below this.
        prob_thresh: threshold of the previous probability map that defines the ROI (0.5 in RITM,
            separate from the evaluation threshold).
        always_update: ClickSEG recomputes the ROI at every click.
    """

    skip_clicks: int = 1
    target_size: int | tuple[int, int] | None = 400
    expansion_ratio: float = 1.4
    min_crop_size: int = 200
    recompute_thresh_iou: float = 0.5
    prob_thresh: float = 0.5
    always_update: bool = False

    def __post_init__(self):
        if isinstance(self.target_size, list):  # JSON round trip turns tuples into lists
            object.__setattr__(self, "target_size", tuple(self.target_size))


@dataclass(frozen=True)
class EvalProtocol:
    """Every knob of the interactive evaluation.

    Attributes:
        name: preset name (recorded).
        threshold: probability threshold that binarises predictions (0.49 in RITM/SimpleClick).
        max_clicks: clicks per instance.
        target_iou: stop an instance once IoU >= this (and >= min_clicks); > 1 disables early stop.
        min_clicks: never stop before this many clicks.
        flip: horizontal-flip TTA; logits of both passes are averaged, then the sigmoid applied.
        zoom_in: ZoomIn parameters or None.
        infer_size: square size the (zoomed) input is squashed to before the network (ClickSEG/GPCIS).
        prev_mask: feed the previous soft probability map back to models that take one.
        clicker: ``ritm`` or ``m2n2``.
        ignore_as_background: count ignore (-1) pixels as background in IoU (M2N2) instead of leaving
            them out.
        dataset_overrides: per-dataset replacements, e.g. DAVIS evaluates at 600/672.
    """

    name: str = "ritm"
    threshold: float = 0.49
    max_clicks: int = 20
    target_iou: float = 0.90
    min_clicks: int = 1
    flip: bool = True
    zoom_in: ZoomIn | None = field(default_factory=ZoomIn)
    infer_size: int | None = None
    prev_mask: bool = True
    clicker: str = "ritm"
    ignore_as_background: bool = False
    dataset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_dataset(self, dataset: str) -> "EvalProtocol":
        """The protocol as applied to ``dataset`` (overrides resolved, none left)."""
        over = dict(self.dataset_overrides.get(dataset.lower(), {}))
        zoom = over.pop("zoom_in", None)
        p = replace(self, dataset_overrides={}, **over)
        if zoom is not None and p.zoom_in is not None:
            p = replace(p, zoom_in=replace(p.zoom_in, **zoom))
        return p

    def with_options(self, **kw: Any) -> "EvalProtocol":
        """A copy with some fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    @property
    def early_stop(self) -> bool:
        return self.target_iou <= 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalProtocol":
        d = dict(d)
        z = d.get("zoom_in")
        if isinstance(z, dict):
            d["zoom_in"] = ZoomIn(**z)
        d["dataset_overrides"] = {
            k: {**v, "zoom_in": {kk: tuple(vv) if isinstance(vv, list) else vv for kk, vv in v["zoom_in"].items()}}
            if "zoom_in" in v else v for k, v in d.get("dataset_overrides", {}).items()}
        return cls(**d)


PRESETS: dict[str, EvalProtocol] = {
    # RITM `cvpr` mode: no zoom on click 1, then longer side 400 (600 for DAVIS), flip TTA, 0.49.
    "ritm": EvalProtocol(
        name="ritm",
        zoom_in=ZoomIn(skip_clicks=1, target_size=400),
        dataset_overrides={"davis": {"zoom_in": {"target_size": 600}}},
    ),
    # SimpleClick/AdaptiveClick `cvpr` mode: always squash the ROI (whole image on click 1) to 448².
    "simpleclick": EvalProtocol(
        name="simpleclick",
        zoom_in=ZoomIn(skip_clicks=-1, target_size=(448, 448)),
        dataset_overrides={"davis": {"zoom_in": {"target_size": (672, 672)}}},
    ),
    # GPCIS (ClickSEG Baseline predictor): 0.50, no flip, crop-only zoom (min crop 10, ROI thresh
    # 0.49, updated every click), then squash to 384² (256² on SBD).
    "gpcis": EvalProtocol(
        name="gpcis",
        threshold=0.50,
        flip=False,
        zoom_in=ZoomIn(skip_clicks=1, target_size=None, min_crop_size=10, prob_thresh=0.49,
                       always_update=True),
        infer_size=384,
        dataset_overrides={"sbd": {"infer_size": 256}},
    ),
    # M2N2: its own clicker, always 20 clicks, ignore pixels counted as background, no TTA/zoom.
    "m2n2": EvalProtocol(
        name="m2n2",
        threshold=0.5,
        target_iou=1.01,
        flip=False,
        zoom_in=None,
        clicker="m2n2",
        ignore_as_background=True,
    ),
    # Plain protocol for training-free baselines and quick checks: RITM clicker and metrics, no TTA.
    "plain": EvalProtocol(name="plain", flip=False, zoom_in=None),
}


def get_protocol(name: str) -> EvalProtocol:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; expected one of {sorted(PRESETS)}") from None
