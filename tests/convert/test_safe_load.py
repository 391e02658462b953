"""No file iis loads can run code: a pickle whose unpickling calls os.system is inert or refused through
every loading path (safe_load, iis-eval --ckpt / --weights, build_method, iis-convert, MAE and backbone
pretrained loaders), in the zip and the legacy torch formats; the authors' config objects become inert
dict-like stand-ins."""

from __future__ import annotations

import pytest
import torch

from iis.core.safe_load import Foreign, UnreadableFileError, safe_load, to_plain

from official_files import hostile_file, hostile_raw_pickle, official_state_dict, save_like_authors


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "a pickle ran os.system"


@pytest.mark.parametrize("legacy", [False, True])
def test_hostile_payload_becomes_inert(tmp_path, marker, legacy):
    path = hostile_file(tmp_path / "h.pth", marker, legacy=legacy)
    found: list[str] = []
    obj = safe_load(path, foreign=found)
    assert torch.equal(obj["state_dict"]["w"], torch.zeros(2))
    assert isinstance(obj["payload"], Foreign) and obj["payload"]._foreign_name.endswith(".system")
    assert found == [obj["payload"]._foreign_name]
    assert to_plain(obj["payload"]) == {"__class__": obj["payload"]._foreign_name}


def test_bare_hostile_pickle_is_refused(tmp_path, marker):
    with pytest.raises(UnreadableFileError, match="not a readable torch checkpoint"):
        safe_load(hostile_raw_pickle(tmp_path / "raw.pth", marker), what="--weights")


@pytest.mark.parametrize("legacy", [False, True])
def test_authors_config_objects_load_without_their_packages(tmp_path, legacy):
    sd = {"a": torch.arange(3.0)}
    save_like_authors(sd, tmp_path / "c.pth", legacy=legacy)
    found: list[str] = []
    obj = safe_load(tmp_path / "c.pth", foreign=found)
    assert torch.equal(obj["state_dict"]["a"], sd["a"])
    cfg = obj["config"]
    assert isinstance(cfg, Foreign) and cfg._foreign_name == "isegm.utils.serialization.ModelConfig"
    params = cfg.__dict__["_foreign_state"]["params"]
    assert isinstance(params, dict) and params["with_prev_mask"] is True  # EasyDict items kept, dict-like
    assert params["backbone_params"]["img_size"] == (448, 448)
    assert {"isegm.utils.serialization.ModelConfig", "easydict.EasyDict",
            "torch.nn.modules.normalization.LayerNorm"} <= set(found)


def test_iis_own_files_take_the_weights_only_path(tmp_path, monkeypatch):
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real(*a, **k))
    torch.save({"iis": {"model": {"name": "x", "kwargs": {}}}, "state_dict": {"w": torch.ones(1)}, "epoch": 3,
                "hyper_parameters": {"lr": 1e-3, "betas": (0.9, 0.999)}}, tmp_path / "own.ckpt")
    assert safe_load(tmp_path / "own.ckpt")["epoch"] == 3 and calls == [True]


@pytest.mark.parametrize("legacy", [False, True])
def test_eval_ckpt_and_weights_paths(tmp_path, marker, legacy, capsys):
    from iis.cli.eval import main as eval_main
    from iis.eval.loading import build_method
    from iis.models.registry import create_model

    sd = {f"model.{k}": v for k, v in create_model("simpleclick_vit_test").state_dict().items()}
    meta = {"model": {"name": "simpleclick_vit_test", "kwargs": {}}, "protocol": "plain"}
    ck = hostile_file(tmp_path / "h.ckpt", marker, legacy=legacy, sd=sd, iis_meta=meta)
    built = build_method(ckpt=ck)  # the payload is inert: the model loads and nothing runs
    assert built.desc["model"]["name"] == "simpleclick_vit_test"
    built = build_method("simpleclick_vit_test", weights=ck)
    assert built.desc["weights_sha256"] and not built.desc["random_init"]
    out = tmp_path / "ev"
    assert eval_main(["--ckpt", str(ck), "--datasets", "synthetic", "--limit", "1", "--max-clicks", "1",
                      "--out", str(out), "--quiet"]) == 0
    bad = hostile_file(tmp_path / "bad.pth", marker, legacy=legacy)  # payload + a state dict that fits nothing
    assert eval_main(["--method", "simpleclick_vit_test", "--weights", str(bad), "--datasets", "synthetic",
                      "--limit", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iis-eval: error: --weights") and "Traceback" not in err[0]
    assert eval_main(["--ckpt", str(bad), "--datasets", "synthetic", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no 'iis' model description" in err[0]


def test_convert_path(tmp_path, marker, capsys):
    from iis.cli.convert import main as convert_main

    sd = official_state_dict("simpleclick_vit_xtiny_448")
    for legacy in (False, True):
        path = hostile_file(tmp_path / f"h{legacy}.pth", marker, legacy=legacy, sd=sd)
        assert convert_main([str(path), str(tmp_path / f"o{legacy}.pth"), "--quiet"]) == 0
        assert torch.load(tmp_path / f"o{legacy}.pth", weights_only=True)["iis"]["source"]["foreign_classes"]
    assert convert_main([str(hostile_raw_pickle(tmp_path / "raw.pth", marker)), str(tmp_path / "o.pth")]) == 2
    assert "not a readable torch checkpoint" in capsys.readouterr().err


def test_pretrained_loaders(tmp_path, marker):
    from iis.models.segmentors import load_backbone_weights
    from iis.models.vit import VisionTransformer, load_mae_checkpoint

    vit = VisionTransformer(32, 16, 3, 32, 2, 2)
    mae = {f"{k}": v for k, v in vit.state_dict().items()}
    path = hostile_file(tmp_path / "mae.pth", marker, sd=None)
    torch.save({"model": mae, "args": __import__("argparse").Namespace(lr=1.0)}, tmp_path / "ok.pth")
    report = load_mae_checkpoint(vit, tmp_path / "ok.pth")  # pickled argparse.Namespace: now readable
    assert report.loaded
    with pytest.raises(ValueError):  # payload inert, and no MAE 'model' state dict
        load_mae_checkpoint(vit, path)
    with pytest.raises(ValueError, match="no parameter matches"):
        load_backbone_weights(torch.nn.Linear(2, 2), path)
    with pytest.raises(ValueError, match="not a readable"):
        load_mae_checkpoint(vit, hostile_raw_pickle(tmp_path / "raw.pth", marker))


@pytest.mark.parametrize("content,found", [
    (b"", "an empty file"), (b"hello, not a checkpoint\n", "a text file"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:1b59\n", "Git LFS pointer")])
def test_unreadable_files_give_one_line(tmp_path, content, found):
    p = tmp_path / "x.pth"
    p.write_bytes(content)
    with pytest.raises(UnreadableFileError) as e:
        safe_load(p, what="--weights")
    assert found in str(e.value) and "\n" not in str(e.value) and str(p) in str(e.value)


def test_truncated_files(tmp_path):
    save_like_authors({"a": torch.randn(64, 64)}, tmp_path / "z.pth")
    save_like_authors({"a": torch.randn(64, 64)}, tmp_path / "l.pth", legacy=True)
    for name, frac in (("z.pth", 0.5), ("l.pth", 0.1)):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"t_{name}").write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(UnreadableFileError, match="truncated"):
            safe_load(tmp_path / f"t_{name}")


def test_plain_pickles(tmp_path, marker):
    import pickle

    import numpy as np

    from iis.core.safe_load import safe_pickle_load

    data = {"img1": {"num_instance_masks": 2, "hierarchy": {0: [1]}, "areas": np.arange(3, dtype=np.int64)}}
    (tmp_path / "anno.pickle").write_bytes(pickle.dumps(data))
    back = safe_pickle_load(tmp_path / "anno.pickle")
    assert back["img1"]["hierarchy"] == {0: [1]} and np.array_equal(back["img1"]["areas"], np.arange(3))
    found: list[str] = []
    obj = safe_pickle_load(hostile_raw_pickle(tmp_path / "h.pickle", marker), foreign=found)
    assert isinstance(obj, Foreign) and found == [obj._foreign_name]
