"""iis-export: every trainable family's `_test` variant exports and passes its own parity check;
iis.runtime runs the ONNX file through the evaluation transforms and reproduces PyTorch's masks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import iis  # noqa: E402
from iis.cli.export import main as export_main  # noqa: E402
from iis.export import PARITY_RTOL, ExportError, export_onnx, export_torchscript  # noqa: E402

from iis_api_fixtures import sharpened_weights  # noqa: E402  (tests/api, put on the path by conftest.py)

FAMILIES = ["simpleclick_vit_test", "ritm_hrnet_test", "gpcis_test", "cplot_test", "adaptiveclick_test"]


def _check(rep):
    assert rep.checks and rep.passed
    for c in rep.checks:
        assert c["max_abs_diff"] <= PARITY_RTOL * c["max_abs_logit"]
    assert {c["clicks"] for c in rep.checks} >= {1, 3, 8, 20} and {c["batch"] for c in rep.checks} == {1, 2}


@pytest.fixture(scope="module")
def ritm_export(tmp_path_factory):
    """ritm_hrnet_test (sharpened random weights) exported once by the CLI: (weights, onnx path, stdout)."""
    import contextlib
    import io

    d = tmp_path_factory.mktemp("ritm_export")
    w = sharpened_weights("ritm_hrnet_test", d / "ritm_hrnet_test.pth")
    out = d / "ritm_hrnet_test.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = export_main(["--method", "ritm_hrnet_test", "--weights", str(w), "--format", "onnx", "--out", str(out),
                          "--size", "64"])
    assert rc == 0
    return w, out, buf.getvalue()


def test_cli_onnx(ritm_export):
    w, out, text = ritm_export
    assert "PASS" in text and "max|diff|" in text and "dynamic H, W" in text
    from iis.runtime import read_metadata

    meta = read_metadata(out)
    assert meta["model"]["name"] == "ritm_hrnet_test" and meta["protocol"] == "ritm"
    assert meta["input_size"] is None and meta["opset"] >= 17 and meta["custom_ops"] == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["ritm_hrnet_test.onnx", "ritm_hrnet_test.pth"]  # no temporaries


def test_cli_errors(tmp_path, capsys):
    assert export_main(["--method", "random_walker", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "training-free" in capsys.readouterr().err
    assert export_main(["--method", "ritm_hrnet_test", "--out", str(tmp_path / "no" / "x.onnx"), "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iis-export: error: ") and "does not exist" in err and err.count("\n") == 1
    assert export_main(["--method", "ritm_hrnet_test", "--opset", "13", "--out", str(tmp_path / "x.onnx")]) == 2
    assert ">= 17" in capsys.readouterr().err


def test_torchscript_ritm(tmp_path):
    torch.manual_seed(0)
    m = iis.create_model("ritm_hrnet_test")
    rep = export_torchscript(m, tmp_path / "r.pt", size=64)
    _check(rep)
    extra = {"iis.json": ""}
    loaded = torch.jit.load(str(tmp_path / "r.pt"), _extra_files=extra)
    assert json.loads(extra["iis.json"])["model"]["name"] == "ritm_hrnet_test"
    x, c, p = torch.rand(1, 3, 64, 64), torch.tensor([[[10.0, 20.0, 1.0], [30.0, 5.0, 0.0]]]), torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x, c, p), m.eval()(x, c, p), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_onnx_parity(name, tmp_path):
    torch.manual_seed(0)
    rep = export_onnx(iis.create_model(name), tmp_path / f"{name}.onnx", size=64)
    _check(rep)
    assert rep.custom_ops == (["com.microsoft::Inverse"] if name.startswith("gpcis") else [])
    assert (rep.input_size is None) == name.startswith(("ritm", "gpcis"))


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_torchscript_parity(name, tmp_path):
    torch.manual_seed(0)
    _check(export_torchscript(iis.create_model(name), tmp_path / f"{name}.pt", size=64))


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    import iis.export as ex

    real = ex.parity_check

    def off_by_a_lot(run, model, size, fixed, seed=0):
        rows = real(run, model, size, fixed, seed)
        return [{**r, "max_abs_diff": r["max_abs_logit"], "ratio": 1.0} for r in rows]

    monkeypatch.setattr(ex, "parity_check", off_by_a_lot)
    with pytest.raises(ExportError, match="nothing written") as e:
        export_torchscript(iis.create_model("ritm_hrnet_test"), tmp_path / "r.pt", size=64)
    assert e.value.report is not None and not e.value.report.passed
    assert list(tmp_path.iterdir()) == []


def _runtime_vs_pytorch(name, weights, onnx_path, sample):
    """iis.runtime (ONNX Runtime + ModelPredictor transforms) vs PyTorch, click by click on a real image."""
    from iis.core.loop import run_instance
    from iis.core.predictor import ModelPredictor
    from iis.core.protocol import get_protocol
    from iis.eval.loading import build_method
    from iis.runtime import predictor as onnx_predictor

    built = build_method(name, weights=weights)
    proto = dataclasses.replace(get_protocol(built.default_protocol).for_dataset("grabcut"), max_clicks=4,
                                target_iou=1.01)
    if proto.zoom_in is not None and proto.zoom_in.target_size is not None:  # small zoom target: fast on CPU
        proto = dataclasses.replace(proto, zoom_in=dataclasses.replace(proto.zoom_in, target_size=96, min_crop_size=40))
    res = run_instance(ModelPredictor(built.obj, proto, "cpu"), sample.image, sample.gt, proto, keep_preds=True)
    rt = onnx_predictor(onnx_path, protocol=proto)
    rt.set_image(sample.image)
    areas = []
    for k in range(len(res.clicks)):
        mask = rt.predict(res.clicks[:k + 1]) > proto.threshold
        areas.append(int(mask.sum()))
        assert np.array_equal(mask, res.preds[k]), f"{name}: click {k + 1}: {(mask != res.preds[k]).sum()} pixels differ"
    assert 0 < min(areas) and max(areas) < mask.size
    # the same file through the public API
    seg = iis.load(onnx_path, protocol=proto)
    assert seg.is_model and np.array_equal(seg.predict(sample.image, res.clicks).mask, res.preds[-1])


def test_runtime_masks_equal_pytorch(ritm_export, grabcut_sample):
    w, out, _ = ritm_export
    _runtime_vs_pytorch("ritm_hrnet_test", w, out, grabcut_sample)


@pytest.mark.slow
def test_runtime_masks_equal_pytorch_gpcis(tmp_path, grabcut_sample):
    torch.manual_seed(0)
    w = tmp_path / "gpcis_test.pth"
    torch.save(iis.create_model("gpcis_test").state_dict(), w)
    from iis.eval.loading import build_method

    export_onnx(build_method("gpcis_test", weights=w).obj, tmp_path / "gpcis_test.onnx", size=64)
    _runtime_vs_pytorch("gpcis_test", w, tmp_path / "gpcis_test.onnx", grabcut_sample)


@pytest.mark.slow
def test_runtime_refuses_other_sizes(tmp_path, grabcut_sample):
    from iis.core.errors import IISError

    export_onnx(iis.create_model("simpleclick_vit_test"), tmp_path / "sc.onnx", size=64)
    seg = iis.load(tmp_path / "sc.onnx")  # its protocol squashes to 448², the file takes 64²
    with pytest.raises(IISError, match="exported for 64x64 inputs"):
        seg.session(grabcut_sample.image).click(10, 10)
    ok = iis.load(tmp_path / "sc.onnx", zoom_in={"target_size": (64, 64)})
    assert ok.session(grabcut_sample.image).click(10, 10).mask.shape == grabcut_sample.gt.shape
