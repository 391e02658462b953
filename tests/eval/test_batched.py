"""Batched evaluation (``--batch-size B``) computes exactly what the sequential one does.

Every model family (``_test`` variants with sharpened random logits, so masks are partial and change
with the clicks) under its own preset, on real GrabCut and Berkeley instances: ``batch_size=8`` gives
the same clicks and per-click IoUs as ``batch_size=1``. The default suite shrinks the images and the
preset's network sizes (same zoom/flip/threshold logic) and lowers the target IoU, so that instances
stop early at different clicks and are replaced mid-batch; the ``slow`` test runs the presets as they
are. Also: out-of-order finishing keeps results in index order, an interrupted batched run resumes from
its log, and training-free predictors run one at a time.
"""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from iis.core.protocol import get_protocol
from iis.core.types import Sample
from iis.data import get_dataset
from iis.models.registry import create_model, create_predictor
from iis.models.testing import Sharpened
from iis.eval.runner import deterministic_record, evaluate_step

FAMILIES = ["simpleclick_vit_test", "adaptiveclick_test", "cplot_test", "gpcis_test", "ritm_hrnet_test",
            "ritm_gpcis_test"]


class Shrunk:
    """A real dataset's instances at 1/``factor`` of their size (nearest-neighbour masks), same ids."""

    def __init__(self, ds, factor: int, limit: int):
        self.ds, self.factor, self.n = ds, factor, min(limit, len(ds))
        self.name = ds.name

    def __len__(self) -> int:
        return self.n

    def ids(self) -> list[str]:
        return self.ds.ids()[:self.n]

    def __getitem__(self, i: int) -> Sample:
        s = self.ds[i]
        if self.factor == 1:
            return s
        h, w = s.gt.shape
        size = (w // self.factor, h // self.factor)
        image = cv2.resize(s.image, size, interpolation=cv2.INTER_AREA)
        ys, xs = np.arange(size[1]) * self.factor, np.arange(size[0]) * self.factor
        return Sample(image, np.ascontiguousarray(s.gt[ys][:, xs]), s.id)


def _small_preset(name: str):
    """The preset with its network sizes scaled down (448 -> 48, 400 -> 64, 384 -> 48) for CPU speed."""
    p = get_protocol(name)
    if p.zoom_in is not None:
        ts = p.zoom_in.target_size
        ts = (48, 48) if isinstance(ts, tuple) else (64 if isinstance(ts, int) else None)
        p = replace(p, zoom_in=replace(p.zoom_in, target_size=ts, min_crop_size=min(p.zoom_in.min_crop_size, 30)))
    if p.infer_size:
        p = replace(p, infer_size=48)
    return p


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(one_torch_thread):
    return {name: Sharpened(name).eval() for name in FAMILIES}


def _records(model, ds, proto, batch_size, **kw):
    r = evaluate_step(model, ds, proto, batch_size=batch_size, **kw)
    return [deterministic_record(x) for x in r.instances], r


def _check_same(seq, bat, label):
    assert [r["id"] for r in seq] == [r["id"] for r in bat], label  # index order, whatever finished first
    for a, b in zip(seq, bat):
        assert a["clicks"] == b["clicks"], f"{label} {a['id']}: clicks differ"
        assert np.allclose(a["ious"], b["ious"], rtol=0, atol=1e-6), f"{label} {a['id']}: IoUs differ"
        assert a["noic"] == b["noic"], f"{label} {a['id']}"


@pytest.mark.parametrize("name", FAMILIES)
def test_batch_8_equals_sequential(name, models, data_root, monkeypatch):
    from iis.core.predictor import ModelPredictor

    model = models[name]
    proto = _small_preset(model.default_protocol).with_options(max_clicks=5, target_iou=0.3)
    sizes: list[int] = []
    real_run = ModelPredictor._run
    monkeypatch.setattr(ModelPredictor, "_run", lambda self, x, pts: sizes.append(x.shape[0]) or real_run(self, x, pts))
    lengths, orders = [], []
    for ds_name in ("grabcut", "berkeley"):
        ds = Shrunk(get_dataset(ds_name, data_root), factor=6, limit=12)
        sizes.clear()
        seq, _ = _records(model, ds, proto, 1)
        assert max(sizes) == 2  # sequential: the flip pair, or one sample padded to two
        order: list[int] = []
        bat, _ = _records(model, ds, proto, 8, on_instance=lambda i, s, r: order.append(i))
        _check_same(seq, bat, f"{name} {ds_name}")
        lengths += [len(r["ious"]) for r in seq]
        orders.append(order)
        assert max(sizes) > 4, sizes  # it did batch
    # instances stopped early (and were replaced while others ran on) and finished out of order
    assert min(lengths) < proto.max_clicks, f"{name}: no instance stopped early ({lengths})"
    assert any(o != sorted(o) for o in orders), orders


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_batch_8_equals_sequential_full_preset(name, models, data_root):
    model = models[name]
    proto = get_protocol(model.default_protocol).with_options(max_clicks=20)
    for ds_name in ("grabcut", "berkeley"):
        ds = Shrunk(get_dataset(ds_name, data_root), factor=1, limit=10 ** 6)
        seq, _ = _records(model, ds, proto, 1)
        bat, _ = _records(model, ds, proto, 8)
        _check_same(seq, bat, f"{name} {ds_name}")


def test_predict_batch_groups_shapes_exactly(models, data_root):
    """Instances of different crop shapes in one predict_batch (RITM's longer side) equal separate calls."""
    from iis.core.predictor import ModelPredictor
    from iis.core.types import Click

    model = models["ritm_hrnet_test"]
    proto = _small_preset("ritm")
    ds = Shrunk(get_dataset("berkeley", data_root), factor=4, limit=4)
    samples = [ds[i] for i in range(4)]
    pred = ModelPredictor(model, proto, min_forward_batch=2)
    clicks = [[Click(s.gt.shape[1] // 2, s.gt.shape[0] // 2, True)] for s in samples]
    states = [pred.new_state(s.image) for s in samples]
    batched = pred.predict_batch(states, clicks)
    for s, c, b in zip(samples, clicks, batched):
        pred.set_image(s.image)
        assert np.array_equal(pred.predict(c), b)


class _StopAfter(Exception):
    pass


def test_batched_run_resumes_after_interruption(models, data_root, tmp_path, monkeypatch):
    import iis.eval.runner as runner

    model = models["simpleclick_vit_test"]
    proto = _small_preset("simpleclick").with_options(max_clicks=5, target_iou=0.3)
    ds = Shrunk(get_dataset("grabcut", data_root), factor=6, limit=12)
    ref, _ = _records(model, ds, proto, 1)
    log = tmp_path / "grabcut.jsonl"
    seen = []

    def interrupt(i, sample, res):
        seen.append(i)
        if len(seen) == 5:
            raise _StopAfter  # killed mid-batch: 5 written, the others in flight are lost

    with pytest.raises(_StopAfter):
        _records(model, ds, proto, 8, log_path=log, on_instance=interrupt)
    written = [json.loads(x)["id"] for x in log.read_text().splitlines()[1:]]
    assert len(written) == 5
    calls = []
    real = runner.run_instances
    monkeypatch.setattr(runner, "run_instances",
                        lambda p, items, *a, **k: real(p, (calls.append(it.id) or it for it in items), *a, **k))
    got, r = _records(model, ds, proto, 8, log_path=log)
    assert sorted(calls) == sorted(set(ds.ids()) - set(written))  # only the missing ones were computed
    _check_same(ref, got, "resumed")
    assert r.log_records == len(ds)
    # the identity header does not hold the batch size: a sequential run resumes the batched log as is
    calls.clear()
    again, _ = _records(model, ds, proto, 1, log_path=log)
    assert not calls and again == got


def test_training_free_predictor_runs_one_at_a_time(data_root):
    ds = Shrunk(get_dataset("grabcut", data_root), factor=4, limit=3)
    pred = create_predictor("random_walker")
    proto = get_protocol("plain").with_options(max_clicks=2)
    seq, _ = _records(pred, ds, proto, 1)
    bat, _ = _records(pred, ds, proto, 8)
    _check_same(seq, bat, "random_walker")
    with pytest.raises(ValueError, match="models only"):
        evaluate_step(pred, ds, proto, compile=True)


def test_training_callback_batch_size(models):
    """InteractiveEvaluation(batch_size=B) runs the same evaluate_step: same summary, overlays still kept."""
    from types import SimpleNamespace

    from iis.lightning.callbacks import InteractiveEvaluation

    trainer = SimpleNamespace(current_epoch=0, global_rank=0, world_size=1, loggers=[])
    module = SimpleNamespace(model=models["simpleclick_vit_test"], device=torch.device("cpu"),
                             hparams=SimpleNamespace(protocol="plain"))
    kw = dict(datasets=["synthetic"], protocol="plain", max_clicks=3, limit=6, num_vis=2,
              dataset_kwargs={"synthetic": {"size": (40, 56)}})
    seq = InteractiveEvaluation(**kw).run(trainer, module, log=False)["synthetic"]
    bat = InteractiveEvaluation(batch_size=4, **kw).run(trainer, module, log=False)["synthetic"]
    assert seq["noc"] == bat["noc"] and seq["miou"] == bat["miou"] and bat["num_instances"] == 6
    with pytest.raises(ValueError, match="batch_size"):
        InteractiveEvaluation(batch_size=0)


@pytest.mark.slow
def test_compile_and_channels_last_run(tmp_path):
    """--compile / --channels-last end to end (torch.compile on CPU takes a while: slow)."""
    from iis.cli.eval import main

    out = tmp_path / "out"
    assert main(["--method", "simpleclick_vit_test", "--protocol", "plain", "--datasets", "synthetic", "--limit", "2",
                 "--max-clicks", "2", "--out", str(out), "--quiet", "--compile", "--channels-last",
                 "--batch-size", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["inference"]["compile"] is True and res["method_identity"]["compile"] is True


def test_every_path_uses_one_cpu_forward_policy(monkeypatch):
    """API sessions, the server and iis-eval build ModelPredictor alike, so on CPU their forwards have the
    same sizes (and so the same kernels and numbers) without each caller repeating the policy."""
    from iis.core.predictor import CPU_FORWARD_BATCH, ModelPredictor
    import iis.eval.runner as runner

    model = create_model("gpcis_test").eval()
    proto = get_protocol("gpcis")
    api_side = ModelPredictor(model, proto, "cpu")
    assert (api_side.min_forward_batch, api_side.max_forward_batch) == CPU_FORWARD_BATCH == (2, 15)
    seen = []
    real = runner.ModelPredictor

    def spy(*a, **kw):
        p = real(*a, **kw)
        seen.append((p.min_forward_batch, p.max_forward_batch))
        return p

    monkeypatch.setattr(runner, "ModelPredictor", spy)
    ds = [Sample(image=np.zeros((40, 40, 3), np.uint8), gt=np.pad(np.ones((10, 10), np.int8), 15), id="s")]
    runner.evaluate_step(model, _ListDataset(ds), proto.with_options(max_clicks=1), device="cpu")
    assert seen == [CPU_FORWARD_BATCH]
    onnx_like = ModelPredictor(lambda image, clicks, prev: image[:, :1], proto, "cpu")  # not a torch model
    assert (onnx_like.min_forward_batch, onnx_like.max_forward_batch) == (1, None)


class _ListDataset(list):
    name = "list"
