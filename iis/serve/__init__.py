"""``iis-serve``: an HTTP server over the public API (:mod:`iis.api`) for annotation tools and a browser demo.

Endpoints (see the README section "Annotation server and demo"):

* ``POST /predict``: image + clicks (+ starting mask) -> mask PNG, polygons, COCO RLE;
* ``POST /cvat``: CVAT's interactor contract (``iis-serve cvat-function`` writes the Nuclio function);
* ``/labelstudio/{health,setup,predict}``: the Label Studio ML-backend contract (brush RLE answers);
* ``GET /``: the browser demo (plain HTML/JS shipped in ``iis/serve/static``, works offline).

The server is a thin adapter: every prediction is ``Segmenter.predict(image, clicks, init_mask=)`` (the
stateless replay that gives a session's and ``iis-eval``'s masks), the image-state cache is the API's LRU
(bounded in images and bytes), and the Segmenter's lock serialises predictor calls. Only
:mod:`iis.serve.app` needs FastAPI/uvicorn (the ``serve`` extra); the adapters (:mod:`~iis.serve.cvat`,
:mod:`~iis.serve.labelstudio`, :mod:`~iis.serve.brush`, :mod:`~iis.serve.codec`) need only the core
dependencies, so the generated Nuclio function runs without them.
"""

from .config import ServeConfig
from .errors import RequestError

__all__ = ["ServeConfig", "RequestError", "create_app"]


def __getattr__(name: str):
    if name == "create_app":  # FastAPI is an optional extra: import it only when an app is built
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'iis.serve' has no attribute {name!r}")
