"""iis-convert through its console entry: an official-layout file saved the way the authors do (config
object of a class that does not exist here) converts to an iis checkpoint that iis-eval --ckpt loads on its
own, with the source's name and SHA-256 in results.json; bad files give one line and exit 2."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "convert"))
from official_files import official_state_dict, save_like_authors  # noqa: E402

from iis.cli.convert import main as convert_main  # noqa: E402
from iis.cli.eval import main as eval_main  # noqa: E402


@pytest.fixture(scope="module")
def official_xtiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "sbd_vit_xtiny.pth"
    save_like_authors(official_state_dict("simpleclick_vit_xtiny_448"), path)
    return path


def _one_error_line(capsys, prog):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_convert_then_eval_ckpt(official_xtiny, tmp_path, capsys):
    out = tmp_path / "sc.pth"
    assert convert_main([str(official_xtiny), str(out), "--model", "simpleclick_vit_xtiny"]) == 0
    printed = capsys.readouterr().out
    assert "official-simpleclick -> simpleclick_vit_xtiny" in printed and "mapped 145 tensors" in printed
    ck = torch.load(out, weights_only=True)  # plain types only
    sha = hashlib.sha256(official_xtiny.read_bytes()).hexdigest()
    meta = ck["iis"]
    assert meta["model"] == {"name": "simpleclick_vit_xtiny", "kwargs": {}} and meta["protocol"] == "simpleclick"
    assert meta["source"]["file"] == "sbd_vit_xtiny.pth" and meta["source"]["sha256"] == sha
    assert "isegm.utils.serialization.ModelConfig" in meta["source"]["foreign_classes"]
    assert len(meta["conversion"]["dropped"]) == 21 and meta["conversion"]["mapped"] == 145
    ev = tmp_path / "ev"  # the converted file alone is enough for iis-eval (real data: test_reproduce.py)
    assert eval_main(["--ckpt", str(out), "--datasets", "synthetic", "--protocol", "plain", "--limit", "1",
                      "--max-clicks", "1", "--out", str(ev), "--quiet"]) == 0
    res = json.loads((ev / "results.json").read_text())
    assert res["method"]["source"]["sha256"] == sha and res["method"]["model"]["name"] == "simpleclick_vit_xtiny"


def test_eval_weights_converts_in_memory(official_xtiny, tmp_path):
    from iis.eval.loading import build_method

    built = build_method("simpleclick_vit_xtiny", weights=official_xtiny)
    assert built.desc["source"]["family"] == "official-simpleclick"
    assert built.desc["source"]["sha256"] == hashlib.sha256(official_xtiny.read_bytes()).hexdigest()
    ref = build_method(ckpt=_converted(official_xtiny, tmp_path)).obj.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in built.obj.state_dict().items())


def _converted(src, tmp_path):
    out = tmp_path / "conv.pth"
    assert convert_main([str(src), str(out), "--quiet"]) == 0
    return out


def test_bad_files_one_line_each(official_xtiny, tmp_path, capsys):
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    data = official_xtiny.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 3])
    torch.save({"state_dict": {"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}},
               tmp_path / "unrelated.pth")
    save_like_authors({}, tmp_path / "foreign.pth")  # only the authors' config object, no tensors
    torch.save({"config": {"lr": 1}, "epoch": 3}, tmp_path / "nosd.pth")
    cases = {
        "text.pth": ([], "found a text file"),
        "trunc.pth": ([], "truncated"),
        "unrelated.pth": ([], "no official layout recognised in its 2 tensors"),
        "foreign.pth": ([], "the state dict is empty"),
        "nosd.pth": ([], "found a dict with keys config, epoch"),
        "missing.pth": ([], "no such file"),
        str(official_xtiny): (["--model", "simpleclick_vit_base"], "but simpleclick_vit_base was asked for"),
        str(official_xtiny) + "#from": (["--from", "official-gpcis"], "but its keys are not GPCIS's"),
    }
    for name, (extra, expect) in cases.items():
        src = name.split("#")[0] if name.startswith("/") else str(tmp_path / name)
        assert convert_main([src, str(tmp_path / "out.pth"), *extra]) == 2, name
        line = _one_error_line(capsys, "iis-convert")
        assert expect in line, (name, line)
    assert not (tmp_path / "out.pth").exists()
    assert convert_main([str(_converted(official_xtiny, tmp_path)), str(tmp_path / "again.pth")]) == 2
    assert "already an iis checkpoint" in _one_error_line(capsys, "iis-convert")


def test_eval_weights_bad_files(official_xtiny, tmp_path, capsys):
    (tmp_path / "trunc.pth").write_bytes(official_xtiny.read_bytes()[:1000])
    for args, expect in (
            (["--method", "simpleclick_vit_base", "--weights", str(official_xtiny)], "simpleclick_vit_xtiny"),
            (["--method", "gpcis_resnet50", "--weights", str(official_xtiny)], "but gpcis_resnet50 was asked for"),
            (["--method", "simpleclick_vit_xtiny", "--weights", str(tmp_path / "trunc.pth")], "truncated"),
            (["--ckpt", str(official_xtiny)], "convert it with iis-convert")):
        assert eval_main([*args, "--datasets", "synthetic", "--out", str(tmp_path / "ev"), "--quiet"]) == 2
        assert expect in _one_error_line(capsys, "iis-eval")
