"""The CVAT interactor as a Nuclio function: the handler it runs and the files ``iis-serve cvat-function``
writes (``function.yaml``, ``function-gpu.yaml``, ``main.py``).

The function runs the same adapter as ``POST /cvat`` (:func:`iis.serve.cvat.handle_cvat`), configured by
environment variables that the YAML sets:

* ``IIS_METHOD``: a method name, or the mounted path of an ``iis-train`` checkpoint / ``.onnx`` file;
* ``IIS_WEIGHTS``: the mounted path of a state dict for a model name (optional);
* ``IIS_DEVICE``: ``cpu`` (``function.yaml``) or ``cuda`` (``function-gpu.yaml``);
* ``IIS_THRESHOLD``, ``IIS_METHOD_ARGS`` (a JSON object of builder arguments), ``IIS_MAX_CLICKS``: optional.

Weights are never downloaded: they come from a host folder mounted read-only at ``/opt/nuclio/weights``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from .config import ServeConfig
from .errors import RequestError

__all__ = ["init_context", "handler", "write_cvat_function", "MOUNT"]

MOUNT = "/opt/nuclio/weights"  # where the host's weights folder is mounted inside the function


# ---------------------------------------------------------------------------------------------- runtime
def init_context(context: Any) -> None:
    """Nuclio's init hook: load the method once per worker (weights from the mounted folder)."""
    import iis

    method = os.environ.get("IIS_METHOD")
    if not method:
        raise ValueError("IIS_METHOD: not set; expected the iis method name (set by function.yaml)")
    kw: dict[str, Any] = {"device": os.environ.get("IIS_DEVICE", "cpu")}
    if os.environ.get("IIS_WEIGHTS"):
        kw["weights"] = os.environ["IIS_WEIGHTS"]
    if os.environ.get("IIS_THRESHOLD"):
        kw["threshold"] = float(os.environ["IIS_THRESHOLD"])
    if os.environ.get("IIS_METHOD_ARGS"):
        kw["kwargs"] = json.loads(os.environ["IIS_METHOD_ARGS"])
    context.logger.info(f"iis {__version__}: loading {method} ({kw})")
    seg = iis.load(method, **kw)
    if seg.note:
        context.logger.info(f"iis: {seg.note}")
    cfg = ServeConfig(max_clicks=int(os.environ.get("IIS_MAX_CLICKS", ServeConfig.max_clicks)))
    context.user_data.segmenter, context.user_data.config = seg, cfg
    context.logger.info(f"iis: {seg!r} ready")


def handler(context: Any, event: Any) -> Any:
    """Nuclio's request hook: CVAT's interactor payload in, ``{mask, points}`` out (4xx one-line errors)."""
    from .cvat import handle_cvat

    def respond(body: Mapping[str, Any], status: int) -> Any:
        return context.Response(body=json.dumps(body), headers={}, content_type="application/json",
                                status_code=status)

    body = event.body
    try:
        if isinstance(body, (bytes, bytearray, str)):
            try:
                body = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise RequestError(f"request body: not valid JSON ({e})", 400) from None
        out = handle_cvat(context.user_data.segmenter, body, context.user_data.config)
    except RequestError as e:
        context.logger.info(f"iis: refused ({e.status}): {e}")
        return respond({"error": str(e)}, e.status)
    except Exception as e:  # noqa: BLE001 - one line to CVAT, the traceback to the function's log
        import traceback

        context.logger.error(f"iis: {type(e).__name__} in the method:\n{traceback.format_exc()}")
        first = str(e).splitlines()[0][:300] if str(e) else ""
        return respond({"error": f"iis method failed on this request ({type(e).__name__}: {first})"}, 500)
    return respond(out, 200)


# ---------------------------------------------------------------------------------------------- writer
def _q(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def _function_name(method: str) -> str:
    stem = Path(method).stem if ("/" in method or "." in method) else method
    return "iis-" + (re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "method")


def _yaml(*, name: str, title: str, description: str, env: dict[str, str], gpu: bool, pip_spec: str,
          host_dir: Path | None, python: str, timeout_s: int) -> str:
    env_lines = "\n".join(f"    - name: {k}\n      value: {_q(v)}" for k, v in env.items())
    volume = ""
    if host_dir is not None:
        volume = f"""
  # the weights: a host folder mounted read-only (nothing is downloaded at build or run time)
  volumes:
    - volume:
        name: iis-weights
        hostPath:
          path: {_q(str(host_dir))}
      volumeMount:
        name: iis-weights
        mountPath: {MOUNT}
        readOnly: true
"""
    resources = "    limits:\n      nvidia.com/gpu: 1" if gpu else "    limits:\n      cpu: 2"
    image = f"cvat.{name}{'-gpu' if gpu else ''}"
    return f"""# Nuclio function for CVAT's AI tools (interactor), written by `iis-serve cvat-function` (iis {__version__}).
# Deploy:  nuctl deploy --project-name cvat --path . --file {'function-gpu.yaml' if gpu else 'function.yaml'} --platform local
metadata:
  name: {name}{'-gpu' if gpu else ''}
  namespace: cvat
  annotations:
    name: {_q(title)}
    version: 2
    type: interactor
    spec: ""
    framework: pytorch
    min_pos_points: 1
    min_neg_points: 0
    help_message: {_q("Left click: object (positive) points; right click: background (negative) points. "
                      "All points are sent each time; iis replays them, positives first.")}

spec:
  description: {_q(description)}
  runtime: "python:{python}"
  handler: main:handler
  eventTimeout: {timeout_s}s
  env:
{env_lines}

  build:
    image: {image}
    baseImage: "python:{python}-slim"
    directives:
      preCopy:
        - kind: RUN
          value: pip install --no-cache-dir --upgrade pip
        # PLACEHOLDER: iis is not on PyPI yet. Replace {pip_spec!r} below by where your iis package comes
        # from (a wheel copied next to this file and ADDed, a path, or your repository's pip URL).
        - kind: RUN
          value: {_q("pip install --no-cache-dir " + pip_spec)}
        - kind: WORKDIR
          value: /opt/nuclio
{volume}
  triggers:
    myHttpTrigger:
      numWorkers: 1
      kind: "http"
      workerAvailabilityTimeoutMilliseconds: 10000
      attributes:
        maxRequestBodySize: {ServeConfig.max_body_bytes}

  platform:
    attributes:
      restartPolicy:
        name: always
        maximumRetryCount: 3
      mountMode: volume

  resources:
{resources}
"""


_MAIN = '''"""CVAT interactor (Nuclio handler) running iis, written by `iis-serve cvat-function` (iis {version}).

Method: {method}. Configured by the environment set in function.yaml / function-gpu.yaml (IIS_METHOD,
IIS_WEIGHTS, IIS_DEVICE, IIS_THRESHOLD, IIS_METHOD_ARGS, IIS_MAX_CLICKS); the handler is the one
`iis-serve` answers POST /cvat with (iis.serve.cvat.handle_cvat).
"""

from iis.serve.nuclio import handler, init_context  # noqa: F401
'''


def write_cvat_function(out: str | os.PathLike, method: str, *, weights: str | os.PathLike | None = None,
                        threshold: float | None = None, kwargs: Mapping[str, Any] | None = None,
                        pip_spec: str = "iis", python: str = "3.11", timeout_s: int = 60) -> list[Path]:
    """Write ``function.yaml``, ``function-gpu.yaml`` and ``main.py`` into ``out`` (created).

    Args:
        method: a registered model or training-free method name, or an ``iis-train`` checkpoint / ``.onnx``
            file (its folder is mounted; the function loads it from the mount).
        weights: a state dict for a model name (its folder is mounted read-only at :data:`MOUNT`).
        pip_spec: what ``pip install`` gets iis from in the image build (a marked placeholder: iis is not
            on PyPI yet).
    """
    from ..models.registry import list_models, list_predictors

    out = Path(out)
    names = list_models() + list_predictors()
    env: dict[str, str] = {}
    host_dir = None
    src = Path(method)
    if method in names:
        env["IIS_METHOD"] = method
        if weights is not None:
            if method in list_predictors():
                raise ValueError(f"--weights: {method!r} is a training-free method without weights")
            w = Path(weights)
            if not w.is_file():
                raise FileNotFoundError(f"--weights {w}: no such file")
            host_dir = w.resolve().parent
            env["IIS_WEIGHTS"] = f"{MOUNT}/{w.name}"
    elif src.is_file():
        if weights is not None:
            raise ValueError(f"--weights: only for a method name; {method} is a file that carries its own weights")
        host_dir = src.resolve().parent
        env["IIS_METHOD"] = f"{MOUNT}/{src.name}"
    elif src.suffix in (".ckpt", ".pt", ".pth", ".onnx") or "/" in method:
        raise FileNotFoundError(f"--ckpt {method}: no such file")
    else:
        import difflib

        close = difflib.get_close_matches(method, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"--method {method!r}: unknown{hint}; expected one of {', '.join(names)}")
    if threshold is not None:
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"--threshold {threshold}: expected a probability in [0, 1)")
        env["IIS_THRESHOLD"] = repr(float(threshold))
    if kwargs:
        env["IIS_METHOD_ARGS"] = json.dumps(dict(kwargs))
    if not str(pip_spec).strip():
        raise ValueError("--pip-spec: empty; expected what `pip install` installs iis from")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    label = Path(method).name if host_dir is not None and method not in names else method
    name = _function_name(label)
    title = f"iis {label}"
    desc = f"iis {__version__}: click-based interactive segmentation with {label}"
    written = []
    for fname, gpu in (("function.yaml", False), ("function-gpu.yaml", True)):
        text = _yaml(name=name, title=title + (" (GPU)" if gpu else ""), description=desc,
                     env={**env, "IIS_DEVICE": "cuda" if gpu else "cpu"}, gpu=gpu, pip_spec=pip_spec,
                     host_dir=host_dir, python=python, timeout_s=timeout_s)
        written.append(_write(out / fname, text))
    written.append(_write(out / "main.py", _MAIN.format(version=__version__, method=label)))
    return written


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
