"""--skip-invalid: an InvalidSampleError from dataset[i] stops the run (resumably) or is recorded as skipped;
skipped instances are listed and never counted. Also through the training callback (the shared evaluate_step)."""

import json
import warnings
from types import SimpleNamespace

import pytest

import iis.eval.runner as runner
from iis.cli.eval import main
from iis.core.errors import InvalidSampleError
from iis.core.protocol import get_protocol
from iis.data.synthetic import SyntheticDataset
from iis.eval.runner import evaluate_step, summarize_instances


@pytest.fixture
def invalid(monkeypatch):
    """Synthetic instances whose index is in the returned set raise InvalidSampleError, as strict readers do."""
    bad: set[int] = {1}
    real = SyntheticDataset.__getitem__

    def getitem(self, i):
        if i in bad:
            raise InvalidSampleError(f"synthetic_{i:03d}", "mask has no object pixels (all background)")
        return real(self, i)

    monkeypatch.setattr(SyntheticDataset, "__getitem__", getitem)
    return bad


def _eval(out, *extra, limit="3"):
    return main(["--method", "simpleclick_vit_test", "--protocol", "plain", "--datasets", "synthetic",
                 "--max-clicks", "2", "--limit", limit, "--out", str(out), "--quiet", *extra])


def _count_runs(monkeypatch):
    calls = []
    real = runner.run_instances
    monkeypatch.setattr(runner, "run_instances", lambda p, items, *a, **k: real(p, (calls.append(it.id) or it for it in items), *a, **k))
    return calls


def test_invalid_instance_stops_resumably_or_is_skipped(tmp_path, invalid, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _eval(out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["iis-eval: error: synthetic synthetic_001: mask has no object pixels (all background) "
                   "(pass --skip-invalid to record such instances as skipped)"]
    assert not (out / "results.json").exists()
    log = (out / "instances" / "synthetic.jsonl").read_text().splitlines()
    assert len(log) == 2 and json.loads(log[1])["id"] == "synthetic_000"  # written so far, resumable

    calls = _count_runs(monkeypatch)
    assert _eval(out, "--skip-invalid") == 0
    assert calls == ["synthetic_002"]  # instance 0 resumed, 1 skipped, 2 computed
    printed = capsys.readouterr().out
    assert ("synthetic: 1 instance(s) skipped as invalid, not counted in N/NoC/NoF/mIoU: synthetic_001: mask has "
            "no object pixels") in printed
    res = json.loads((out / "results.json").read_text())
    d = res["datasets"]["synthetic"]
    assert res["skip_invalid"] is True
    assert d["skipped"] == [{"id": "synthetic_001", "reason": "mask has no object pixels (all background)"}]
    assert d["num_skipped"] == 1 and d["num_instances"] == 2
    assert [r["id"] for r in d["instances"]] == ["synthetic_000", "synthetic_002"]
    proto = get_protocol("plain").with_options(max_clicks=2)
    assert d["noc"] == summarize_instances(d["instances"], proto)["noc"]  # only the scored two
    assert json.loads((out / "instances" / "synthetic.jsonl").read_text().splitlines()[2]) == {
        "id": "synthetic_001", "skipped": "mask has no object pixels (all background)"}

    # a stored skip is still an error for a run without --skip-invalid
    assert _eval(out) == 2
    assert "synthetic_001" in capsys.readouterr().err


def test_every_instance_skipped_is_no_result(tmp_path, invalid, capsys):
    invalid |= {0, 1}
    assert _eval(tmp_path / "out", "--skip-invalid", limit="2") == 2
    captured = capsys.readouterr()
    assert "every selected instance was skipped" in captured.err
    assert "|    -    |" in captured.out  # no number in the table
    d = json.loads((tmp_path / "out" / "results.json").read_text())["datasets"]["synthetic"]
    assert d["num_instances"] == 0 and d["noc"]["85"] is None and d["num_skipped"] == 2


def test_evaluate_step_skips_in_memory(invalid):
    import torch

    from iis.models.registry import create_model

    torch.manual_seed(0)
    ds = SyntheticDataset(num_samples=3)
    base = get_protocol("plain").with_options(max_clicks=2)
    with pytest.raises(InvalidSampleError):
        evaluate_step(create_model("simpleclick_vit_test"), ds, base)
    r = evaluate_step(create_model("simpleclick_vit_test"), ds, base, skip_invalid=True)
    assert r.summary["num_instances"] == 2 and r.summary["num_skipped"] == 1
    assert r.to_json()["skipped"][0]["id"] == "synthetic_001"


def test_training_callback_skips_and_reports(invalid, monkeypatch):
    import torch

    from iis.lightning.callbacks import InteractiveEvaluation
    from iis.models.registry import create_model

    cb = InteractiveEvaluation(datasets=["synthetic"], protocol="plain", max_clicks=2, limit=3, num_vis=0)
    trainer = SimpleNamespace(current_epoch=0, global_rank=0, world_size=1, loggers=[])
    module = SimpleNamespace(model=create_model("simpleclick_vit_test"), device=torch.device("cpu"),
                             hparams=SimpleNamespace(protocol="plain"))
    with pytest.warns(UserWarning, match="synthetic: 1 invalid instance.*synthetic_001: mask has no object"):
        out = cb.run(trainer, module, log=False)
    s = out["synthetic"]
    assert s["num_instances"] == 2 and s["num_skipped"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once, not at every evaluation
        cb.run(trainer, module, log=False)
    strict = InteractiveEvaluation(datasets=["synthetic"], protocol="plain", max_clicks=2, limit=3, num_vis=0,
                                   skip_invalid=False)
    with pytest.raises(InvalidSampleError):
        strict.run(trainer, module, log=False)
