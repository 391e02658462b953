"""Label Studio's ML-backend contract, served under ``/labelstudio`` (the URL given to Label Studio is
``http://HOST:PORT/labelstudio``).

* ``GET /labelstudio/health`` (and ``GET /labelstudio/``): ``{"status": "UP", "model_class": ...}``.
* ``POST /labelstudio/setup`` ``{"project", "schema" (the labeling config), ...}`` ->
  ``{"model_version": ...}``; a config without a ``<BrushLabels>`` tag is refused (422) so the
  mistake shows when the backend is connected, not at the first click.
* ``POST /labelstudio/predict`` ``{"tasks": [task], "label_config": ..., "params": {"context": {"result":
  [keypoint, ...]}}}``: the interactive call. Each context keypoint (``type: "keypointlabels"``,
  ``value.x``/``value.y`` in percent of the image, ``is_positive``) is a click, in order; the answer is
  ``{"results": [{"result": [brush], "model_version": ...}]}`` with one
  ``brushlabels`` region: ``value: {"format": "rle", "rle": [...], "brushlabels": [label]}``,
  ``original_width``/``original_height``, ``from_name``/``to_name`` of the config's BrushLabels and
  Image tags. ``rle`` is Label Studio's brush RLE (:mod:`iis.serve.brush`), not COCO RLE. Without
  keypoints (a non-interactive "retrieve predictions" call) the answer is ``{"results": []}``;
  rectangles in the context are ignored (the iis methods take clicks only).

The task's image (``task["data"][<the Image tag's $value key>]``) is read from a ``data:`` URL, or from a
file under ``ServeConfig.ls_root``: ``/data/local-files/?d=P`` (Label Studio's local-files storage:
``ls_root`` = its ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``), ``/data/upload/P`` (uploads:
``ls_root/media/upload/P``, ``ls_root`` = Label Studio's data directory), the same two with Label
Studio's host in front (``http://host:8080/data/...``: only the path is used), or a plain path. Nothing
else is read: no URL is fetched (http, s3, ...), and no path outside ``ls_root``.
"""

from __future__ import annotations

import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..api import Segmenter, clicks_from_percent
from ..api.errors import InvalidClickError
from .brush import mask_to_rle
from .codec import b64decode_field, decode_image
from .config import ServeConfig
from .errors import invalid, too_large
from .predict import check_object, run_segmenter

__all__ = ["BrushTarget", "parse_label_config", "resolve_task_image", "handle_ls_predict", "handle_ls_setup",
           "MAX_LABEL_CONFIG"]

MAX_LABEL_CONFIG = 1 << 20  # a labeling config is a few kB; refuse megabytes of XML


@dataclass(frozen=True)
class BrushTarget:
    """Where the answer goes: ``<BrushLabels name=from_name toName=to_name>`` on ``<Image name=to_name
    value="$data_key">``; ``labels``: the BrushLabels' label values."""

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]


def parse_label_config(xml: Any, field: str = "label_config") -> BrushTarget:
    """The first ``<BrushLabels>`` of a labeling config and the ``<Image>`` it points at."""
    if not isinstance(xml, str) or not xml.strip():
        raise invalid(f"{field}: expected the project's labeling config (XML text), got {xml!r:.80}")
    if len(xml) > MAX_LABEL_CONFIG:
        raise too_large(f"{field}: {len(xml)} characters; the limit is {MAX_LABEL_CONFIG}")
    try:
        root = ET.fromstring(xml)  # expat >= 2.4 refuses entity-expansion bombs
    except ET.ParseError as e:
        raise invalid(f"{field}: not valid XML ({e})") from None
    elems = list(root.iter())
    brush = next((e for e in elems if e.tag.lower() == "brushlabels"), None)
    if brush is None:
        raise invalid(f"{field}: no <BrushLabels> tag; iis answers brush masks, so the config needs "
                      '<BrushLabels name=... toName="image"> (plus <KeyPointLabels smart="true"> for the clicks)')
    from_name, to_name = brush.get("name"), brush.get("toName")
    if not from_name or not to_name:
        raise invalid(f"{field}: <BrushLabels> needs name= and toName= attributes")
    image = next((e for e in elems if e.tag.lower() == "image" and e.get("name") == to_name), None)
    if image is None:
        raise invalid(f"{field}: <BrushLabels toName={to_name!r}> names no <Image name={to_name!r}> tag")
    value = image.get("value") or ""
    if not value.startswith("$") or len(value) < 2:
        raise invalid(f"{field}: <Image name={to_name!r}> value={value!r}; expected value=\"$key\" (a task data key)")
    labels = tuple(e.get("value") for e in brush if e.tag.lower() == "label" and e.get("value"))
    return BrushTarget(from_name, to_name, value[1:], labels)


def _under_root(rel: str, cfg: ServeConfig, what: str) -> Path:
    if cfg.ls_root is None:
        raise invalid(f"{what}: a file, but this server reads no files (start it with --ls-root DIR to serve "
                      "Label Studio's local files or uploads); or import tasks with data: URLs")
    cand = Path(rel)
    p = (cand if cand.is_absolute() else cfg.ls_root / cand).resolve()
    if not p.is_relative_to(cfg.ls_root):
        raise invalid(f"{what}: outside --ls-root; refused")
    if not p.is_file():
        raise invalid(f"{what}: no such file under --ls-root")
    size = p.stat().st_size
    if size > cfg.max_body_bytes:
        raise too_large(f"{what}: {size} bytes; the limit is {cfg.max_body_bytes} (iis-serve --max-body-mb)")
    return p


def resolve_task_image(ref: Any, cfg: ServeConfig) -> bytes:
    """The encoded bytes of a task's image reference (see the module doc for what is accepted)."""
    if not isinstance(ref, str) or not ref:
        raise invalid(f"task image: expected a data: URL or a file path, got {ref!r:.80}")
    what = f"task image {ref[:120]!r}"
    if ref[:5].lower() == "data:":
        return b64decode_field(ref, "task image")
    u = urllib.parse.urlsplit(ref)
    ls_path = u.path.rstrip("/") == "/data/local-files" or u.path.startswith("/data/upload/")
    if (u.scheme or u.netloc) and not (u.scheme in ("http", "https") and ls_path):
        raise invalid(f"{what}: a URL; this server fetches nothing over the network. Use data: URLs, or "
                      "Label Studio local-files storage / uploads with iis-serve --ls-root DIR")
    # Label Studio's own file URLs (also with its host in front, when LABEL_STUDIO_HOST is set) name a file
    # under its document root / data folder: read from --ls-root, never fetched
    if u.path.rstrip("/") == "/data/local-files":
        d = urllib.parse.parse_qs(u.query).get("d")
        if not d:
            raise invalid(f"{what}: a local-files URL without ?d=PATH")
        return _under_root(d[0].lstrip("/"), cfg, what).read_bytes()
    if u.path.startswith("/data/upload/"):
        rest = urllib.parse.unquote(u.path[len("/data/upload/"):]).lstrip("/")
        return _under_root("media/upload/" + rest, cfg, what).read_bytes()
    return _under_root(ref, cfg, what).read_bytes()


def _keypoints(context: Any) -> list[Mapping[str, Any]]:
    if context is None:
        return []
    if not isinstance(context, Mapping):
        raise invalid(f"params.context: expected an object, got {type(context).__name__}")
    result = context.get("result") or []
    if not isinstance(result, list):
        raise invalid(f"params.context.result: expected a list, got {type(result).__name__}")
    out = []
    for i, r in enumerate(result):
        if not isinstance(r, Mapping):
            raise invalid(f"params.context.result[{i}]: expected an object, got {r!r:.80}")
        if str(r.get("type", "")).lower() == "keypointlabels":
            if not isinstance(r.get("value"), Mapping):
                raise invalid(f"params.context.result[{i}].value: expected {{x, y, ...}}, got {r.get('value')!r:.80}")
            out.append(r)
    return out


def handle_ls_setup(seg: Segmenter, payload: Any, cfg: ServeConfig) -> dict[str, Any]:
    payload = check_object(payload, "/labelstudio/setup body")
    if payload.get("schema"):
        parse_label_config(payload["schema"], "schema")
    return {"model_version": model_version(seg, cfg)}


def model_version(seg: Segmenter, cfg: ServeConfig) -> str:
    return cfg.model_version or f"iis-{seg.name}"


def handle_ls_predict(seg: Segmenter, payload: Any, cfg: ServeConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    payload = check_object(payload, "/labelstudio/predict body")
    tasks = payload.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise invalid(f"tasks: expected a non-empty list of tasks, got {tasks!r:.80}")
    params = payload.get("params") or {}
    if not isinstance(params, Mapping):
        raise invalid(f"params: expected an object, got {type(params).__name__}")
    # Label Studio sends the context in params.context; accept a top-level context too
    kps = _keypoints(params.get("context", payload.get("context")))
    if not kps:
        return {"results": [], "model_version": model_version(seg, cfg)}
    if len(tasks) != 1:
        raise invalid(f"tasks: {len(tasks)} tasks with an interactive context; expected 1")
    if len(kps) > cfg.max_clicks:
        raise invalid(f"params.context.result: {len(kps)} keypoints; the limit is {cfg.max_clicks} "
                      "(iis-serve --max-clicks)")
    target = parse_label_config(payload.get("label_config"))
    task = check_object(tasks[0], "tasks[0]")
    data = task.get("data")
    if not isinstance(data, Mapping) or target.data_key not in data:
        raise invalid(f"tasks[0].data: no {target.data_key!r} field (the <Image value=\"${target.data_key}\"> of the "
                      "labeling config)")
    image = decode_image(resolve_task_image(data[target.data_key], cfg), "task image", cfg)
    H, W = image.shape[:2]
    points = []
    for r in kps:
        v = r["value"]
        p = {"x": v.get("x"), "y": v.get("y"), "keypointlabels": v.get("keypointlabels") or []}
        if "is_positive" in r:  # Label Studio's smart keypoints: is_positive false = negative (alt-click)
            p["positive"] = bool(r["is_positive"])
        points.append(p)
    try:
        clicks = clicks_from_percent(points, W, H)
    except InvalidClickError as e:
        raise invalid(f"params.context.result: {e}") from None
    pred = run_segmenter(seg, image, clicks)
    kp_labels = [lab for r in kps for lab in (r["value"].get("keypointlabels") or [])]
    label = next((lab for lab in reversed(kp_labels) if lab in target.labels), None)
    label = label or (target.labels[0] if target.labels else (kp_labels[-1] if kp_labels else "object"))
    region = {
        "from_name": target.from_name, "to_name": target.to_name, "type": "brushlabels",
        "original_width": int(W), "original_height": int(H), "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_rle(pred.mask), "brushlabels": [label]},
        "readonly": False,
    }
    mv = model_version(seg, cfg)
    return {"results": [{"result": [region], "model_version": mv}], "model_version": mv,
            "latency_ms": round((time.perf_counter() - t0) * 1000.0, 2)}
