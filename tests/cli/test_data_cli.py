"""``iis-data``: prepare cocolvis / sbd, checksum (write + verify), check (exit codes 0 / 1 / 2)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from iis.cli.data import main


def _official(root: Path) -> list[str]:
    """One COCO image with a panoptic thing and an LVIS polygon; returns the prepare arguments."""
    (root / "coco" / "train2017").mkdir(parents=True)
    (root / "coco" / "panoptic_train2017").mkdir()
    (root / "coco" / "annotations").mkdir()
    (root / "lvis").mkdir()
    cv2.imwrite(str(root / "coco" / "train2017" / "000000000007.jpg"), np.full((40, 50, 3), 90, np.uint8))
    ids = np.zeros((40, 50, 3), np.uint8)
    ids[5:20, 5:20, 2] = 9  # BGR: R = 9 -> segment id 9
    cv2.imwrite(str(root / "coco" / "panoptic_train2017" / "000000000007.png"), ids)
    pan = {"images": [{"id": 7, "file_name": "000000000007.jpg", "height": 40, "width": 50}],
           "annotations": [{"image_id": 7, "file_name": "000000000007.png",
                            "segments_info": [{"id": 9, "category_id": 1, "iscrowd": 0}]}],
           "categories": [{"id": 1, "isthing": 1}]}
    (root / "coco" / "annotations" / "panoptic_train2017.json").write_text(json.dumps(pan))
    lvis = {"images": [{"id": 3, "height": 40, "width": 50, "coco_url": "http://x/train2017/000000000007.jpg"}],
            "annotations": [{"id": 1, "image_id": 3, "segmentation": [[25, 25, 45, 25, 45, 35, 25, 35]]}]}
    (root / "lvis" / "lvis_v1_train.json").write_text(json.dumps(lvis))
    return ["--lvis", str(root / "lvis"), "--coco-panoptic", str(root / "coco"), "--images", str(root / "coco"),
            "--workers", "1", "--quiet"]


def test_prepare_cocolvis_and_checksum(tmp_path, capsys):
    args = _official(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["prepare", "cocolvis", *args, "--out", str(out), "--copy-images"]) == 0
    assert "1 images, 2 instances" in capsys.readouterr().out
    split = out / "train"
    assert not (split / "images" / "000000000007.jpg").is_symlink()
    with open(split / "hannotation.pickle", "rb") as f:
        assert pickle.load(f) == {"000000000007": {"num_instance_masks": 2, "hierarchy": {0: None, 1: None}}}
    assert main(["prepare", "cocolvis", *args, "--out", str(out)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(["checksum", str(split), "--verify", "--quiet"]) == 0  # written by prepare
    (split / "masks" / "000000000007.pickle").write_bytes(b"changed")
    assert main(["checksum", str(split), "--verify", "--quiet"]) == 1
    assert "000000000007.pickle: content differs" in capsys.readouterr().out
    assert main(["checksum", str(split), "--quiet"]) == 0 and main(["checksum", str(split), "--verify"]) == 0
    assert main(["checksum", str(tmp_path / "nope")]) == 2
    assert main(["prepare", "cocolvis", *args, "--out", str(out), "--split", "val"]) == 2  # no val json
    assert "lvis_v1_val.json" in capsys.readouterr().err


def test_prepare_sbd(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path / "cache"))
    ds = tmp_path / "SBD"
    for d in ("img", "inst", "cls"):
        (ds / d).mkdir(parents=True)
    seg = np.zeros((20, 30), np.uint8)
    seg[2:10, 2:10], seg[12:18, 5:25] = 1, 2
    for stem in ("a", "b"):
        cv2.imwrite(str(ds / "img" / f"{stem}.jpg"), np.zeros((20, 30, 3), np.uint8))
        scipy.io.savemat(ds / "inst" / f"{stem}.mat", {"GTinst": {"Segmentation": seg}})
    (ds / "train.txt").write_text("a\n")
    (ds / "val.txt").write_text("b\n")
    assert main(["prepare", "sbd", "--root", str(ds), "--workers", "1", "--quiet"]) == 1  # not the full release
    out = capsys.readouterr().out
    assert "train: 1 images (standard 8498), 2 instances" in out and "val: 1 images (standard 2857)" in out
    assert "sha256 of the manifest" in out and not (ds / "MANIFEST.sha256").exists()
    assert main(["prepare", "sbd", "--root", str(tmp_path / "missing")]) == 2


def _brats(root: Path, n: int = 2) -> Path:
    d = root / "BraTS"
    (d / "image").mkdir(parents=True)
    (d / "annotation").mkdir()
    for k in range(n):
        m = np.zeros((24, 24), np.uint8)
        m[4:12, 4 + k:14 + k] = 255
        cv2.imwrite(str(d / "image" / f"s{k}.png"), np.full((24, 24, 3), 60 + k, np.uint8))
        cv2.imwrite(str(d / "annotation" / f"s{k}.png"), m)
    return d


def test_check(tmp_path, capsys):
    d = _brats(tmp_path)
    root = str(tmp_path)
    assert main(["check", "--datasets", "brats", "--data-root", root]) == 0
    assert "brats: 2 images, 2 instances" in capsys.readouterr().out
    assert main(["checksum", str(d), "--quiet"]) == 0
    assert main(["check", "--data-root", root]) == 0  # default: every dataset found
    (d / "annotation" / "s1.png").write_bytes(cv2.imencode(".png", np.zeros((24, 24), np.uint8))[1].tobytes())
    assert main(["check", "--datasets", "brats", "--data-root", root]) == 1  # manifest mismatch + empty mask
    out = capsys.readouterr().out
    assert "s1.png: content differs" in out and "problem:" in out
    assert main(["check", "--datasets", "nosuch", "--data-root", root]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["check", "--datasets", "grabcut", "--data-root", root]) == 2  # no GrabCut folder
    assert main(["check", "--datasets", "brats", "--data-root", str(tmp_path / "none")]) == 2
    assert main(["frobnicate"]) == 2


# ----- check: everything iis-eval or training would refuse (issue #17) ---------------------------------
def _photo(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 2)


def _sq(value=255, dtype=np.uint8):
    m = np.zeros((48, 64), dtype)
    m[10:30, 15:45] = value
    return m


def _pairs(root: Path, images: str, masks: str, items: dict, mask_ext=".png") -> None:
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / masks).mkdir(parents=True, exist_ok=True)
    for k, (stem, m) in enumerate(items.items()):
        cv2.imwrite(str(root / images / f"{stem}.jpg"), _photo(seed=k))
        cv2.imwrite(str(root / masks / f"{stem}{mask_ext}"), m)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size * 6 // 10])


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("  problem: ")]


def test_check_real_sets(data_root, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path))
    assert main(["check", "--datasets", "grabcut,berkeley,sstem", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "grabcut: 50 images, 50 instances" in out and "berkeley: 100 images, 100 instances" in out
    assert "sstem: 20 images, 391 instances" in out and out.rstrip().endswith("all datasets OK")


def test_check_finds_silent_wrong_results(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path / "cache"))
    vals = np.zeros((48, 64), np.uint8)
    vals[10:20, 10:20], vals[20:30, 10:20], vals[30:40, 10:20] = 1, 2, 7
    g = tmp_path / "GrabCut"
    _pairs(g, "data_GT", "boundary_GT", {"ok": _sq(), "bg": np.zeros((48, 64), np.uint8), "vals": vals,
                                         "trunc": _sq()}, ".bmp")
    cv2.imwrite(str(g / "data_GT" / "deep.jpg"), _photo())
    cv2.imwrite(str(g / "boundary_GT" / "deep.png"), _sq(dtype=np.uint16))
    _truncate(g / "data_GT" / "trunc.jpg")
    assert main(["check", "--datasets", "grabcut", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    lines = _lines(out)
    assert "grabcut: 5 images, 5 instances, 4 invalid" in out and "all datasets OK" not in out
    assert len(lines) == 5  # 4 invalid + "5 instances, the standard release has 50"
    assert any("bg: mask" in ln and "empty object" in ln for ln in lines)
    assert any("vals: mask" in ln and "values found: 0, 1, 2, 7" in ln for ln in lines)
    assert any("deep: mask" in ln and "16-bit" in ln for ln in lines)
    assert any("trunc: image" in ln and "truncated" in ln for ln in lines)


def test_check_folder_modes_and_bad_args(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path / "cache"))
    aa = _sq()
    aa[40, 5:8] = 170
    d = tmp_path / "mine"
    _pairs(d, "images", "masks", {"a": _sq(), "b": _sq(), "c": np.zeros((48, 64), np.uint8), "d": aa})
    assert main(["check", "--datasets", "folder", "--data-root", str(d)]) == 1
    out = capsys.readouterr().out
    assert "folder: 4 images, 4 instances, 1 invalid" in out and len(_lines(out)) == 1 and "c.png: empty" in out
    assert main(["check", "--datasets", "folder", "--data-root", str(d), "--dataset-arg", "mode=instances"]) == 1
    out = capsys.readouterr().out
    assert "5 instances, 2 invalid" in out and "d#170: instance 170" in out and "3 pixel(s)" in out
    (d / "masks" / "c.png").unlink()
    (d / "images" / "c.jpg").unlink()
    assert main(["check", "--datasets", "folder", "--data-root", str(d)]) == 0
    assert "all datasets OK" in capsys.readouterr().out
    for args, msg in ((["--dataset-arg", "bogus=1"], "--dataset-arg bogus not taken by dataset 'folder'"),
                      (["--dataset-arg", "mode=auto"], "mode: expected one of binary, instances, got 'auto'"),
                      (["--dataset-arg", "mode"], "expected KEY=VALUE")):
        assert main(["check", "--datasets", "folder", "--data-root", str(d), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("iis-data: error: ") and msg in err and "\n" not in err


def test_check_train_source(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path / "cache"))
    d = tmp_path / "mine"
    ids = np.zeros((48, 64), np.uint8)
    ids[2:12, 2:12], ids[20:30, 20:40] = 1, 2
    _pairs(d, "images", "masks", {"a": _sq(), "b": ids})
    assert main(["check", "--train-source", "folder", "--root", str(d), "--dataset-arg", "mode=instances"]) == 0
    out = capsys.readouterr().out
    assert "training source folder: 2 items" in out and "training data OK" in out
    assert main(["check", "--train-source", "folder", "--root", str(d)]) == 1  # binary: ids 1, 2 are no object
    assert "b: mask" in capsys.readouterr().out
    _truncate(d / "images" / "a.jpg")
    _truncate(d / "images" / "b.jpg")
    assert main(["check", "--train-source", "folder", "--data-root", str(d), "--dataset-arg", "mode=instances",
                 "--dataset-arg", "val_fraction=0.5"]) == 1  # only the train half of the split is read
    out = capsys.readouterr().out
    assert "1 items" in out and ": image" in out and "truncated" in out and "1 unusable training item(s)" in out
    for args, msg in ((["--train-source", "nosuch", "--root", str(d)], "is not one of"),
                      (["--train-source", "folder", "--root", str(tmp_path / "none")], "folder not found"),
                      (["--train-source", "folder", "--root", str(d), "--dataset-arg", "x=1"], "x not taken")):
        assert main(["check", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err
