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
