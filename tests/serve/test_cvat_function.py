"""``iis-serve cvat-function``: the Nuclio files CVAT deploys, and the generated handler run with a stand-in
for Nuclio's context (the handler is the one behind ``POST /cvat``)."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from iis_serve_helpers import png_b64

from iis.cli.serve import main


def _env(doc):
    return {e["name"]: e["value"] for e in doc["spec"]["env"]}


def test_function_files(tmp_path, capsys):
    out = tmp_path / "fn"
    assert main(["cvat-function", "--method", "random_walker", "--out", str(out), "--threshold", "0.4"]) == 0
    printed = capsys.readouterr()
    assert "nuctl deploy --project-name cvat" in printed.out and "placeholder" in printed.err
    assert sorted(p.name for p in out.iterdir()) == ["function-gpu.yaml", "function.yaml", "main.py"]
    cpu_text = (out / "function.yaml").read_text()
    cpu, gpu = yaml.safe_load(cpu_text), yaml.safe_load((out / "function-gpu.yaml").read_text())
    for doc in (cpu, gpu):
        a = doc["metadata"]["annotations"]
        assert a["type"] == "interactor" and a["min_pos_points"] == 1 and a["min_neg_points"] == 0
        assert a["version"] == 2 and a["framework"] == "pytorch" and "spec" in a and a["help_message"]
        assert "random_walker" in a["name"] and doc["metadata"]["namespace"] == "cvat"
        assert doc["spec"]["handler"] == "main:handler"
        assert doc["spec"]["triggers"]["myHttpTrigger"]["attributes"]["maxRequestBodySize"] >= 32 << 20
        steps = [d["value"] for d in doc["spec"]["build"]["directives"]["preCopy"]]
        assert any("pip install" in s and s.rstrip().endswith(" iis") for s in steps)
        assert _env(doc)["IIS_METHOD"] == "random_walker" and _env(doc)["IIS_THRESHOLD"] == "0.4"
    assert _env(cpu)["IIS_DEVICE"] == "cpu" and _env(gpu)["IIS_DEVICE"] == "cuda"
    assert gpu["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert cpu["metadata"]["name"] == "iis-random-walker" and gpu["metadata"]["name"] == "iis-random-walker-gpu"
    assert "PLACEHOLDER" in cpu_text and "wget" not in cpu_text and "volumes" not in cpu  # nothing to mount
    main_py = (out / "main.py").read_text()
    assert "random_walker" in main_py and "from iis.serve.nuclio import handler, init_context" in main_py
    compile(main_py, "main.py", "exec")


def test_weights_are_mounted_not_downloaded(tmp_path):
    import torch

    import iis

    w = tmp_path / "weights" / "w.pth"
    w.parent.mkdir()
    torch.save(iis.create_model("simpleclick_vit_test").state_dict(), w)
    out = tmp_path / "fn"
    assert main(["cvat-function", "--method", "simpleclick_vit_test", "--weights", str(w), "--out", str(out),
                 "--pip-spec", "/wheels/iis-0.1.0-py3-none-any.whl"]) == 0
    doc = yaml.safe_load((out / "function.yaml").read_text())
    (vol,) = doc["spec"]["volumes"]
    assert vol["volume"]["hostPath"]["path"] == str(w.parent.resolve())
    assert vol["volumeMount"]["mountPath"] == "/opt/nuclio/weights" and vol["volumeMount"]["readOnly"] is True
    assert _env(doc)["IIS_WEIGHTS"] == "/opt/nuclio/weights/w.pth"
    steps = [d["value"] for d in doc["spec"]["build"]["directives"]["preCopy"]]
    assert any(s.endswith("/wheels/iis-0.1.0-py3-none-any.whl") for s in steps)


@pytest.mark.parametrize("argv, fragment", [
    (["--method", "random_walkr"], "did you mean 'random_walker'"),
    (["--method", "random_walker", "--weights", "nope.pth"], "training-free"),
    (["--ckpt", "missing.ckpt"], "no such file"),
])
def test_bad_arguments(tmp_path, capsys, argv, fragment):
    assert main(["cvat-function", *argv, "--out", str(tmp_path / "fn")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iis-serve: error: ") and fragment in err and "\n" not in err


class _Ctx:
    """What Nuclio hands a Python handler: a logger, user_data and the Response type."""

    def __init__(self):
        self.logger = logging.getLogger("nuclio-standin")
        self.user_data = SimpleNamespace()
        self.Response = lambda **kw: SimpleNamespace(**kw)


def test_generated_handler_answers_cvat(tmp_path, monkeypatch):
    from iis.serve.sample import make_sample

    out = tmp_path / "fn"
    assert main(["cvat-function", "--method", "random_walker", "--out", str(out)]) == 0
    for k, v in _env(yaml.safe_load((out / "function.yaml").read_text())).items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("iis_cvat_main", out / "main.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "iis_cvat_main", mod)
    spec.loader.exec_module(mod)
    ctx = _Ctx()
    mod.init_context(ctx)
    assert ctx.user_data.segmenter.name == "random_walker"

    image, target, (x, y) = make_sample()
    body = {"image": png_b64(image), "pos_points": [[x, y]], "neg_points": [], "obj_bbox": None}
    for event_body in (body, json.dumps(body).encode()):  # Nuclio passes JSON parsed, or the raw bytes
        resp = mod.handler(ctx, SimpleNamespace(body=event_body))
        assert resp.status_code == 200 and resp.content_type == "application/json"
        ans = json.loads(resp.body)
        mask = np.array(ans["mask"], bool)
        assert mask.shape == target.shape and mask[y, x] and len(ans["points"]) >= 3
        assert (mask & target).sum() / (mask | target).sum() > 0.9  # one click segments the sample's target
    bad = mod.handler(ctx, SimpleNamespace(body={"image": base64.b64encode(b"no").decode(), "pos_points": [[1, 1]]}))
    assert bad.status_code == 400 and set(json.loads(bad.body)) == {"error"}
    bad = mod.handler(ctx, SimpleNamespace(body=b"{not json"))
    assert bad.status_code == 400
    # a method that raises: one line (500) to CVAT, the traceback to the function's log

    class Boom:
        name = "boom"

        def predict(self, *args, **kwargs):
            raise RuntimeError("kaput\nmore")

    ctx.user_data.segmenter = Boom()
    resp = mod.handler(ctx, SimpleNamespace(body=body))
    err = json.loads(resp.body)["error"]
    assert resp.status_code == 500 and "kaput" in err and "\n" not in err
