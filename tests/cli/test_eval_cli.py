"""iis-eval end to end: table, results.json schema, resume, errors."""

import json

import pytest

from iis.cli.eval import main


def _run(tmp_path, *extra, out="out"):
    return main(["--method", "simpleclick_vit_test", "--protocol", "plain", "--datasets", "synthetic", "--limit", "3",
                 "--max-clicks", "4", "--out", str(tmp_path / out), "--quiet", *extra])


def test_results_schema_table_and_plot(tmp_path, capsys):
    assert _run(tmp_path, "--iou-analysis", "--vis", "2") == 0
    printed = capsys.readouterr().out
    assert "NoC@85%" in printed and "randomly initialised" in printed and "synthetic" in printed
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["protocol"]["name"] == "plain" and res["protocol"]["max_clicks"] == 4
    assert res["git_sha"] is None or len(res["git_sha"]) >= 40
    assert {"torch", "numpy"} <= set(res["libraries"]) and res["iis_version"]
    d = res["datasets"]["synthetic"]
    assert set(d["noc"]) == {"80", "85", "90", "95"} and d["num_instances"] == 3
    assert len(d["miou"]) == 4 and d["spc"] > 0 and d["latency_per_click"] > 0
    inst = d["instances"][0]
    assert len(inst["ious"]) == 4 and len(inst["clicks"]) == 4 and len(inst["clicks"][0]) == 3
    assert (tmp_path / "out" / "miou.png").stat().st_size > 0
    assert len(list((tmp_path / "out" / "vis" / "synthetic").glob("*.png"))) == 2


def test_resume_skips_written_instances(tmp_path, monkeypatch):
    assert _run(tmp_path) == 0
    log = tmp_path / "out" / "instances" / "synthetic.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # header + 1 instance + a torn line
    calls = []
    import iis.eval.runner as runner

    real = runner.run_instance
    monkeypatch.setattr(runner, "run_instance", lambda *a, **k: calls.append(k["id"]) or real(*a, **k))
    assert _run(tmp_path) == 0
    assert len(calls) == 2  # only the two missing instances were recomputed
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["datasets"]["synthetic"]["num_instances"] == 3
    # a different protocol must not silently mix with the stored instances
    assert _run(tmp_path, "--max-clicks", "5") == 2


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    assert main(["--method", "simpleclick_vit_test", "--datasets", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["--method", "simpleclick_vit_test", "--datasets", "grabcut", "--data-root", str(tmp_path)]) == 2
    assert "GrabCut" in capsys.readouterr().err
    assert main(["--method", "no_such_method", "--datasets", "synthetic", "--out", str(tmp_path)]) == 2
    assert main(["--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path)]) == 2


def test_real_grabcut_one_instance(tmp_path, data_root):
    assert main(["--method", "simpleclick_vit_test", "--datasets", "grabcut", "--data-root", str(data_root),
                 "--limit", "1", "--max-clicks", "2", "--out", str(tmp_path), "--quiet"]) == 0
    d = json.loads((tmp_path / "results.json").read_text())["datasets"]["grabcut"]
    assert d["protocol"]["zoom_in"]["target_size"] == [448, 448]  # the model's own preset: simpleclick
    assert len(d["instances"][0]["ious"]) == 2
