"""iis-eval end to end: table, results.json schema, resume, and bad inputs through the real console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iis.cli.eval import PATH_OPTIONS, main
from iis.models.registry import create_model, list_predictors

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path, *extra, out="out"):
    return main(["--method", "simpleclick_vit_test", "--protocol", "plain", "--datasets", "synthetic", "--limit", "3",
                 "--max-clicks", "4", "--out", str(tmp_path / out), "--quiet", *extra])


def test_results_schema_table_and_plot(tmp_path, capsys):
    assert _run(tmp_path, "--iou-analysis", "--vis", "2") == 0
    printed = capsys.readouterr().out
    assert "NoC@85%" in printed and "randomly initialised" in printed and "synthetic" in printed
    assert "synthetic: first 3 of 20 instances" in printed
    text = (tmp_path / "out" / "results.json").read_text()
    res = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    assert res["protocol"]["name"] == "plain" and res["protocol"]["max_clicks"] == 4
    assert res["git_sha"] is None or len(res["git_sha"]) >= 40
    assert {"torch", "numpy"} <= set(res["libraries"]) and res["iis_version"]
    assert res["method_identity"]["precision"] == "fp32" and res["skip_invalid"] is False
    d = res["datasets"]["synthetic"]
    assert set(d["noc"]) == {"80", "85", "90", "95"} and d["num_instances"] == 3
    assert len(d["miou"]) == 4 and d["spc"] > 0 and d["latency_per_click"] > 0
    assert d["skipped"] == [] and d["num_skipped"] == 0 and d["log_records"] == 3
    assert d["selection"] == {"limit": 3, "instances": 3, "dataset_instances": 20}
    assert d["identity"]["dataset"]["reader"] == "SyntheticDataset" and d["identity"]["format"] == 2
    inst = d["instances"][0]
    assert set(inst) == {"id", "ious", "clicks", "noic"}  # deterministic fields only
    assert len(inst["ious"]) == 4 and len(inst["clicks"]) == 4 and len(inst["clicks"][0]) == 3
    t = d["timings"][0]
    assert t["id"] == inst["id"] and t["wall"] >= t["latency"] > 0
    assert (tmp_path / "out" / "miou.png").stat().st_size > 0
    assert len(list((tmp_path / "out" / "vis" / "synthetic").glob("*.png"))) == 2


def test_resume_skips_written_instances(tmp_path, monkeypatch, capsys):
    assert _run(tmp_path) == 0
    log = tmp_path / "out" / "instances" / "synthetic.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # header + 1 instance + a torn line
    calls = []
    import iis.eval.runner as runner

    real = runner.run_instances
    monkeypatch.setattr(runner, "run_instances", lambda p, items, *a, **k: real(p, (calls.append(it.id) or it for it in items), *a, **k))
    assert _run(tmp_path) == 0
    assert len(calls) == 2  # only the two missing instances were recomputed
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["datasets"]["synthetic"]["num_instances"] == 3
    capsys.readouterr()
    # a different protocol must not silently mix with the stored instances: refused, naming the field
    assert _run(tmp_path, "--max-clicks", "5") == 2
    err = capsys.readouterr().err
    assert "protocol.max_clicks: stored 4, now 5" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert _run(tmp_path, "--max-clicks", "5", "--overwrite") == 0


def _out_is_clean(out: Path) -> bool:
    return not (out / "results.json").exists() and not (out / "instances").exists()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """Files for the bad-input table: a text file, weights of other models, a checkpoint of another size."""
    tmp_path = tmp_path_factory.mktemp("bad_files")
    (tmp_path / "text.pth").write_text("not a state dict\n")
    (tmp_path / "afile").write_text("x")
    torch.save(create_model("ritm_hrnet_test").state_dict(), tmp_path / "ritm.pth")
    nano = create_model("simpleclick_vit_nano").state_dict()
    torch.save(nano, tmp_path / "nano.pth")
    torch.save({"iis": {"model": {"name": "simpleclick_vit_test", "kwargs": {}}, "protocol": "plain"},
                "state_dict": {f"model.{k}": v for k, v in nano.items()}}, tmp_path / "other_size.ckpt")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    return tmp_path


SC = ["--method", "simpleclick_vit_test"]
RW = ["--method", "random_walker"]
# (arguments, text the one error line must contain); {d} is the folder of the bad_files fixture
BAD_INPUTS = [
    (SC + ["--max-clicks", "0"], "--max-clicks: expected an integer >= 1, got 0"),
    (SC + ["--max-clicks", "-1"], "--max-clicks"),
    (SC + ["--max-clicks", "two"], "--max-clicks: expected an integer >= 1, got 'two'"),
    (SC + ["--limit", "0"], "--limit: expected an integer >= 1, got 0"),
    (SC + ["--limit", "-2"], "--limit"),
    (SC + ["--thresh", "2"], "--thresh: expected a number in (0, 1), got 2"),
    (SC + ["--thresh", "0"], "--thresh"),
    (SC + ["--target-iou", "1.5"], "--target-iou: expected a number in (0, 1], got 1.5"),
    (SC + ["--target-iou", "0"], "--target-iou"),
    (SC + ["--target-iou", "0.9", "--iou-analysis"], "--target-iou"),
    (SC + ["--vis", "-1"], "--vis: expected an integer >= 0, got -1"),
    (RW + ["--weights", "{d}/nano.pth"], "--weights: random_walker is a training-free method"),
    (RW + ["--precision", "bf16"], "--precision: random_walker"),
    (RW + ["--no-flip"], "--no-flip: random_walker"),
    (RW + ["--compile"], "--compile: random_walker is a training-free method"),
    (RW + ["--channels-last"], "--channels-last: random_walker is a training-free method"),
    (SC + ["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (RW + ["--protocol", "ritm"], "--protocol ritm"),
    (RW + ["--sd2-path", "{d}"], "--sd2-path: random_walker does not use it"),
    (SC + ["--dinov2-path", "{d}"], "--dinov2-path: simpleclick_vit_test does not use it"),
    (["--method", "m2n2_affinity", "--method-arg", "sd2_path='x'"], "--method-arg sd2_path: m2n2_affinity"),
    (SC + ["--device", "cuda:99"], "--device cuda:99"),
    (SC + ["--device", "tpu"], "--device 'tpu'"),
    (SC + ["--out", "{d}/afile"], "--out {d}/afile"),
    (SC + ["--out", "{d}/afile/sub"], "exists and is not a folder"),
    (SC + ["--method-arg", "foo=1"], "--method-arg foo: simpleclick_vit_test does not take it; accepted keys of "
                                     "simpleclick_vit_test: head_dropout, img_size, pretrained, with_prev_mask"),
    (RW + ["--method-arg", "foo=1"], "--method-arg foo: random_walker does not take it"),
    (["--method", "ritm_hrnet_test", "--method-arg", "foo=1"], "--method-arg foo: ritm_hrnet_test does not take it; accepted keys of ritm_hrnet_test: pretrained"),
    (["--method", "m2n2_affinity", "--method-arg", "timestep=3"], "--method-arg timestep: m2n2_affinity"),
    (SC + ["--method-arg", "img_size"], "--method-arg 'img_size': expected KEY=VALUE"),
    (SC + ["--method-arg", "img_size=abc"], "--method-arg img_size='abc': simpleclick_vit_test expects int"),
    (RW + ["--method-arg", "beta=x"], "--method-arg beta='x': random_walker expects float"),
    (SC + ["--weights", "{d}/text.pth"], "--weights {d}/text.pth: not a readable torch checkpoint"),
    (SC + ["--weights", "{d}/missing.pth"], "--weights {d}/missing.pth: no such file"),
    (SC + ["--weights", "{d}/ritm.pth"], "does not fit model 'simpleclick_vit_test'"),
    (SC + ["--weights", "{d}/nano.pth"], "of another shape"),
    (["--ckpt", "{d}/other_size.ckpt"], "--ckpt {d}/other_size.ckpt: state dict does not fit"),
    (["--ckpt", "{d}/other_size.ckpt", "--method-arg", "img_size=96"], "--method-arg img_size: a --ckpt"),
    (["--ckpt", "{d}/text.pth"], "--ckpt {d}/text.pth: not a readable torch checkpoint"),
    (["--ckpt", "{d}/missing.ckpt"], "no such file"),
    (SC + ["--datasets", "folder", "--data-root", "{d}/empty"], "dataset folder: no instances found"),
    (SC + ["--datasets", "nope"], "unknown dataset 'nope'"),
    (SC + ["--datasets", ","], "--datasets"),
    (SC + ["--datasets", "grabcut", "--data-root", "{d}/empty"], "GrabCut"),
    (["--method", "no_such_method"], "--method 'no_such_method': unknown"),
]


@pytest.mark.parametrize("argv,expect", BAD_INPUTS, ids=[" ".join(a[2:] or a) for a, _ in BAD_INPUTS])
def test_bad_inputs_give_one_line_and_exit_2(bad_files, tmp_path, capsys, argv, expect):
    d = str(bad_files)
    out = tmp_path / "out"
    argv = [a.replace("{d}", d) for a in argv]
    full = ["--datasets", "synthetic", "--limit", "2", "--max-clicks", "2", "--quiet", "--out", str(out)]
    full = [*full[:-2], *argv] if "--out" in argv else [*full, *argv]  # a later --out/--datasets wins
    assert main(full) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iis-eval: error: "), err
    assert expect.replace("{d}", d) in lines[0]
    assert _out_is_clean(out)


def test_path_options_name_registered_methods():
    for methods in PATH_OPTIONS.values():
        assert set(methods) <= set(list_predictors())


def test_no_traceback_reaches_stderr_of_the_console_script(bad_files, tmp_path):
    """The real process: one line on stderr and exit 2, nothing written, for errors raised deep inside."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for bad, expect in ((["--method", "simpleclick_vit_test", "--weights", str(bad_files / "ritm.pth")],
                         "does not fit"),):
        out = tmp_path / "out"
        p = subprocess.run([sys.executable, "-m", "iis.cli.eval", *bad, "--datasets", "synthetic", "--limit", "1",
                            "--quiet", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        lines = [ln for ln in p.stderr.splitlines() if ln.startswith("iis-eval: ")]
        assert len(lines) == 1 and expect in lines[0], p.stderr
        assert _out_is_clean(out)


def test_real_grabcut_one_instance(tmp_path, data_root):
    assert main(["--method", "simpleclick_vit_test", "--datasets", "grabcut", "--data-root", str(data_root),
                 "--limit", "1", "--max-clicks", "2", "--out", str(tmp_path), "--quiet"]) == 0
    d = json.loads((tmp_path / "results.json").read_text())["datasets"]["grabcut"]
    assert d["protocol"]["zoom_in"]["target_size"] == [448, 448]  # the model's own preset: simpleclick
    assert len(d["instances"][0]["ious"]) == 2
    ds = d["identity"]["dataset"]
    assert ds["root"] == str((data_root / "GrabCut").resolve()) and ds["files"] == 100


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "--skip-invalid" in capsys.readouterr().out


def test_inference_options_recorded_and_resume_refuses_another(tmp_path, capsys):
    """--batch-size changes no number (the log resumes under another one); --channels-last/--precision do:
    recorded in results.json and the identity, and resume names the field."""
    assert _run(tmp_path, "--batch-size", "3") == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["inference"] == {"precision": "fp32", "channels_last": False, "compile": False, "batch_size": 3,
                                "batched": True}
    assert "channels_last" not in res["method_identity"] and "compile" not in res["method_identity"]  # defaults
    first = res["datasets"]["synthetic"]["instances"]
    assert _run(tmp_path) == 0  # batch size 1 resumes the batch-3 log: same identity, same numbers
    assert json.loads((tmp_path / "out" / "results.json").read_text())["datasets"]["synthetic"]["instances"] == first
    capsys.readouterr()
    assert _run(tmp_path, "--channels-last") == 2
    err = capsys.readouterr().err
    assert "method.channels_last: absent in the stored header, now true" in err and len(err.splitlines()) == 1
    assert _run(tmp_path, "--precision", "bf16") == 2
    assert "method.precision: stored \"fp32\", now \"bf16\"" in capsys.readouterr().err
    assert _run(tmp_path, "--channels-last", out="cl") == 0  # channels-last runs (fp32: same masks here)
    cl = json.loads((tmp_path / "cl" / "results.json").read_text())
    assert cl["inference"]["channels_last"] is True and cl["method_identity"]["channels_last"] is True
    capsys.readouterr()
    assert _run(tmp_path, out="cl") == 2  # and back: the channels-last log refuses a run without it
    assert "method.channels_last: stored true, now absent" in capsys.readouterr().err


def test_unsupported_precision_is_one_line(tmp_path, capsys, monkeypatch):
    real = torch.autocast

    def autocast(device_type, dtype=None, **kw):
        if dtype is torch.float16 and device_type == "cpu":
            raise RuntimeError("CPU autocast does not support float16\nsecond line")
        return real(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", autocast)
    assert _run(tmp_path, "--precision", "fp16") == 2
    err = capsys.readouterr().err
    assert err.startswith("iis-eval: error: --precision fp16: not supported on cpu") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
