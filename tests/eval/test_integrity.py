"""Result integrity of iis-eval: content identity on resume, --limit semantics, the --out lock, standard JSON,
byte-identical deterministic records, damaged logs."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iis.cli.eval import main
from iis.eval.io import atomic_write_json, exclusive_lock
from iis.eval.runner import deterministic_record
from iis.models.registry import create_model

ROOT = Path(__file__).resolve().parents[2]


def _eval(out, *extra, limit="2"):
    return main(["--protocol", "plain", "--max-clicks", "2", "--limit", limit, "--out", str(out), "--quiet", *extra])


def _sc(out, *extra, **kw):
    return _eval(out, "--method", "simpleclick_vit_test", "--datasets", "synthetic", *extra, **kw)


def _log(out, name="synthetic"):
    lines = (Path(out) / "instances" / f"{name}.jsonl").read_text().splitlines()
    return json.loads(lines[0])["header"], [json.loads(x) for x in lines[1:]]


def _err_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iis-eval: error: "), lines
    return lines[0]


def _save_weights(path, seed):
    torch.manual_seed(seed)
    torch.save(create_model("simpleclick_vit_test").state_dict(), path)


def test_changed_weights_under_the_same_path_are_refused(tmp_path, capsys):
    w = tmp_path / "w.pth"
    _save_weights(w, 0)
    shutil.copy(w, tmp_path / "w0.pth")
    assert _sc(tmp_path / "out", "--weights", str(w)) == 0
    header, recs = _log(tmp_path / "out")
    assert len(header["identity"]["method"]["weights_sha256"]) == 64 and len(recs) == 2
    assert header["info"]["method"]["weights"] == str(w)  # the path is recorded, not compared
    _save_weights(w, 1)  # "retrained into the same path"
    assert _sc(tmp_path / "out", "--weights", str(w), limit="3") == 2
    line = _err_line(capsys)
    assert "resume refused, method.weights_sha256: stored" in line and "--overwrite" in line
    assert len(_log(tmp_path / "out")[1]) == 2  # nothing was added or dropped
    # the same content under another path resumes (content, not names)
    assert _sc(tmp_path / "out", "--weights", str(tmp_path / "w0.pth"), limit="3") == 0
    assert len(_log(tmp_path / "out")[1]) == 3


def test_changed_checkpoint_under_the_same_path_is_refused(tmp_path, capsys):
    ck = tmp_path / "last.ckpt"

    def save(seed):
        torch.manual_seed(seed)
        sd = create_model("simpleclick_vit_test").state_dict()
        torch.save({"iis": {"model": {"name": "simpleclick_vit_test", "kwargs": {}}, "protocol": "plain"},
                    "state_dict": {f"model.{k}": v for k, v in sd.items()}}, ck)

    save(0)
    args = ["--ckpt", str(ck), "--datasets", "synthetic"]
    assert _eval(tmp_path / "out", *args) == 0
    save(1)
    assert _eval(tmp_path / "out", *args) == 2
    assert "method.ckpt_sha256" in _err_line(capsys)


def _folder_dataset(root: Path, n=3) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        mask[10 + i:30, 12:40 + i] = 255
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), mask)
    return root


def test_another_copy_of_the_data_and_a_touched_file_are_refused(tmp_path, capsys):
    a = _folder_dataset(tmp_path / "a")
    rw = ["--method", "random_walker", "--datasets", "folder"]
    assert _eval(tmp_path / "out", *rw, "--data-root", str(a)) == 0
    header, _ = _log(tmp_path / "out", "folder")
    ds = header["identity"]["dataset"]
    assert ds["root"] == str(a.resolve()) and ds["files"] == 6 and ds["manifest_sha256"] is None
    assert "mode" in ds["options"]  # reader options are part of what a sample is
    b = tmp_path / "b"
    shutil.copytree(a, b)  # the same data, another --data-root
    assert _eval(tmp_path / "out", *rw, "--data-root", str(b)) == 2
    assert "resume refused, dataset.root: stored" in _err_line(capsys)
    # a file rewritten in place (same name, new content) changes the fingerprint
    st = (a / "masks" / "im1.png").stat()
    os.utime(a / "masks" / "im1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _eval(tmp_path / "out", *rw, "--data-root", str(a)) == 2
    assert "dataset.files_sha256" in _err_line(capsys)
    # a manifest written by iis-data is part of the identity
    from iis.data.prepare import write_manifest

    write_manifest(b)
    assert _eval(tmp_path / "out_b", *rw, "--data-root", str(b)) == 0
    assert len(_log(tmp_path / "out_b", "folder")[0]["identity"]["dataset"]["manifest_sha256"]) == 64


def test_limit_never_drops_stored_instances(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _sc(out, limit="4") == 0
    full = json.loads((out / "results.json").read_text())["datasets"]["synthetic"]
    assert _sc(out, limit="2") == 0
    printed = capsys.readouterr().out
    assert "synthetic: first 2 of 20 instances" in printed
    res = json.loads((out / "results.json").read_text())["datasets"]["synthetic"]
    # results.json reports the current selection and says so; the log keeps all 4
    assert res["num_instances"] == 2 and res["selection"] == {"limit": 2, "instances": 2, "dataset_instances": 20}
    assert res["log_records"] == 4 and len(_log(out)[1]) == 4
    assert res["instances"] == full["instances"][:2]
    # asking for the 4 again recomputes nothing and reproduces the first numbers exactly
    import iis.eval.runner as runner

    calls = []
    real = runner.run_instances
    monkeypatch.setattr(runner, "run_instances", lambda p, items, *a, **k: real(p, (calls.append(1) or it for it in items), *a, **k))
    assert _sc(out, limit="4") == 0
    res4 = json.loads((out / "results.json").read_text())["datasets"]["synthetic"]
    assert not calls and res4["noc"] == full["noc"] and res4["instances"] == full["instances"]


def test_a_second_run_on_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    with exclusive_lock(out / ".iis-eval.lock"):
        assert _sc(out) == 2
        line = _err_line(capsys)
        assert f"--out {out}: in use by another run (pid {os.getpid()}" in line
    assert _sc(out) == 0  # released


def test_a_killed_holder_does_not_block(tmp_path):
    out = tmp_path / "out"
    code = ("import sys, time; from iis.eval.io import exclusive_lock\n"
            f"with exclusive_lock({str(out / '.iis-eval.lock')!r}):\n    print('locked', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert p.stdout.readline().strip() == "locked"
        assert _sc(out) == 2
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert (out / ".iis-eval.lock").read_text().strip() == str(p.pid)  # the stale file is still there...
    assert _sc(out) == 0  # ...and does not block


def test_results_json_is_standard_json(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"a": float("nan"), "b": [float("inf"), np.float32(0.5), np.int64(3)],
                                           "c": (1, 2), "d": np.bool_(True)})
    strict = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert strict == {"a": None, "b": [None, 0.5, 3], "c": [1, 2], "d": True}


def test_two_runs_give_byte_identical_records(tmp_path):
    for name in ("a", "b"):
        assert _sc(tmp_path / name, "--iou-analysis", limit="3") == 0
    ha, ra = _log(tmp_path / "a")
    hb, rb = _log(tmp_path / "b")
    assert ha["identity"] == hb["identity"]
    da = [json.dumps(deterministic_record(r)) for r in ra]
    assert da == [json.dumps(deterministic_record(r)) for r in rb] and len(da) == 3
    ja = json.loads((tmp_path / "a" / "results.json").read_text())["datasets"]["synthetic"]
    jb = json.loads((tmp_path / "b" / "results.json").read_text())["datasets"]["synthetic"]
    assert json.dumps(ja["instances"]) == json.dumps(jb["instances"])
    assert all("timing" not in r and "latency" not in r and "wall" not in r for r in ja["instances"])


def test_damaged_or_old_logs_give_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert _sc(out, limit="3") == 0
    log = out / "instances" / "synthetic.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], lines[1], "junk {", lines[3]]) + "\n")  # a junk line in the middle
    assert _sc(out, limit="3") == 2
    line = _err_line(capsys)
    assert f"{log}:3: not an instance record ('junk {{')" in line and "damaged" in line
    log.write_text("\n".join(lines[:3] + ['{"id": "x"']) + "\n")  # junk last line *with* its newline: not torn
    assert _sc(out, limit="3") == 2
    assert f"{log}:4:" in _err_line(capsys)
    log.write_text("not json\n")
    assert _sc(out, limit="3") == 2
    assert "not an iis instance log" in _err_line(capsys)
    old = {"header": {"method": {}, "protocol": {}, "dataset": "synthetic"}}  # format 1 (names only)
    log.write_text(json.dumps(old) + "\n")
    assert _sc(out, limit="3") == 2
    assert "older iis-eval (log format 1" in _err_line(capsys)
    assert _sc(out, "--overwrite", limit="3") == 0
