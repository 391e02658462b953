"""`iis.data.prepare`: the COCO+LVIS merge rules, the packed layout, resume, SBD checks, manifests."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from iis.data.prepare import (MANIFEST_NAME, STATE_NAME, decode_layers, encode_layers, masks_hierarchy,
                              prepare_cocolvis, prepare_sbd, rasterize_segmentation, read_manifest,
                              verify_manifest, write_manifest)
from iis.data.prepare.merge import bbox_iou, merge_masks
from iis.data.train import CocoLvis, TrainDataset

H, W = 60, 80


def _rect(r0, r1, c0, c1, shape=(H, W)):
    m = np.zeros(shape, bool)
    m[r0:r1 + 1, c0:c1 + 1] = True
    return m


def _poly(r0, r1, c0, c1):
    """LVIS polygon of the inclusive pixel rectangle (cv2.fillPoly fills the boundary pixels too)."""
    return [[c0, r0, c1, r0, c1, r1, c0, r1]]


# ------------------------------------------------------------------------------------------ merge rules
def test_lvis_replaces_overlapping_coco_mask():
    coco = _rect(5, 24, 5, 34)
    near = _rect(5, 24, 6, 34)  # IoU 0.97
    masks, n, _ = merge_masks([near], [coco])
    assert n == 1 and np.array_equal(masks[0], near)
    far = _rect(5, 24, 15, 44)  # bbox IoU 20/40 = 0.5: both kept
    masks, n, _ = merge_masks([far], [coco])
    assert n == 2 and np.array_equal(masks[0], coco) and np.array_equal(masks[1], far)


def test_lvis_duplicate_removed_keeps_the_later():
    a, b = _rect(5, 24, 45, 74), _rect(5, 24, 46, 75)  # IoU 29/31 > 0.85
    masks, n, _ = merge_masks([a, b], [])
    assert n == 1 and np.array_equal(masks[0], b)
    c = _rect(5, 24, 49, 78)  # IoU 26/34 = 0.76 < 0.85: not a duplicate
    assert merge_masks([a, c], [])[1] == 2


def test_min_area_and_empty_image():
    small_lvis, small_coco = _rect(0, 7, 0, 8), _rect(20, 28, 20, 27)  # 72 px each < 80
    ok = _rect(40, 48, 40, 48)  # 81 px
    masks, n, _ = merge_masks([small_lvis, ok], [small_coco])
    assert n == 1 and np.array_equal(masks[0], ok)
    assert merge_masks([small_lvis], [small_coco], [_rect(0, 59, 0, 79)]) == ([], 0, {})  # stuff alone: left out


def test_hierarchy_child_attached_under_deepest_parent():
    big, part, sub, other = _rect(5, 24, 5, 34), _rect(8, 15, 8, 19), _rect(8, 15, 8, 17), _rect(40, 50, 40, 60)
    h = masks_hierarchy([other, sub, big, part])
    assert h[0] is None  # isolated root
    assert h[2] == {"children": [3], "parent": None, "node_level": 0}
    assert h[3] == {"children": [1], "parent": 2, "node_level": 1}  # sub goes under part, not under big
    assert h[1] == {"children": [], "parent": 3, "node_level": 2}
    shifted = _rect(20, 30, 30, 40)  # half outside big: bbox cover < 0.7 -> not a child
    assert masks_hierarchy([big, shifted]) == {0: None, 1: None}


def test_stuff_minus_instances():
    inst = _rect(30, 49, 5, 24)
    stuff_big, stuff_small = _rect(40, 59, 0, 79), _rect(0, 4, 60, 79)  # 1600 px, 100 px
    masks, n, _ = merge_masks([], [inst], [stuff_big, stuff_small])
    assert n == 1 and len(masks) == 2  # the small stuff (<= 500 px) is dropped
    assert np.array_equal(masks[1], stuff_big & ~inst)
    covered = _rect(10, 59, 0, 79)  # stuff entirely under instances: area 0 -> dropped
    assert len(merge_masks([], [covered], [_rect(12, 59, 0, 79)])[0]) == 1


def test_bbox_iou_is_ritm_axis_product():
    assert bbox_iou((0, 9, 0, 9), (0, 9, 5, 14)) == pytest.approx(5 / 15)
    assert bbox_iou((0, 9, 0, 9), (5, 14, 5, 14)) == pytest.approx((5 / 15) ** 2)  # area IoU would be 25/175


def test_encode_layers_roundtrip_and_255_per_layer():
    masks = [np.zeros((40, 40), bool) for _ in range(300)]
    for k, m in enumerate(masks):
        m.flat[k * 5:k * 5 + 1 + k % 3] = True  # disjoint specks of 1-3 px
    masks.append(_rect(0, 9, 0, 9, (40, 40)))  # overlaps specks: needs another layer
    layers, mapping = encode_layers(masks)
    assert len(layers) == 2 and sum(li == 0 for li, _ in mapping) == 255
    assert all(1 <= local <= 255 for _, local in mapping)
    assert mapping[300] == (0, 1)  # the largest goes first, into layer 0
    for got, want in zip(decode_layers(layers, mapping), masks):
        assert np.array_equal(got, want)


def test_rasterizers_agree_roughly():
    ritm = rasterize_segmentation(_poly(5, 24, 5, 34), H, W, "ritm")
    assert np.array_equal(ritm, _rect(5, 24, 5, 34))
    coco = rasterize_segmentation(_poly(5, 24, 5, 34), H, W, "coco")
    assert abs(int(coco.sum()) - int(ritm.sum())) < 60 and (coco & ritm).sum() > 0.9 * coco.sum()
    with pytest.raises(ValueError, match="flat"):
        rasterize_segmentation([[1, 2, 3]], H, W)


# -------------------------------------------------------------------------------- official-format inputs
def _png_ids(ids: np.ndarray) -> np.ndarray:
    """Segment ids -> BGR uint8 for cv2.imwrite (id = R + 256 G + 256² B)."""
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    return rgb[..., ::-1]


def write_official(root: Path, split: str = "train") -> dict:
    """Tiny LVIS v1 json, COCO panoptic json + PNGs and COCO images. Image 1 exercises every rule."""
    rng = np.random.default_rng(0)
    pan_anns, pan_imgs, lvis_imgs, lvis_anns = [], [], [], []
    (root / "coco" / f"{split}2017").mkdir(parents=True)
    (root / "coco" / "annotations" / f"panoptic_{split}2017").mkdir(parents=True)
    (root / "lvis").mkdir()
    cats = [{"id": 1, "isthing": 1, "name": "a"}, {"id": 2, "isthing": 1, "name": "b"},
            {"id": 184, "isthing": 0, "name": "grass"}]
    # image 1: stuff S (1600 px) and T (100 px); things A (replaced by LVIS), B (kept), C (25 px)
    ids1 = np.zeros((H, W), np.int64)
    ids1[40:60, :] = 70000  # S (uses the B channel)
    ids1[0:5, 60:80] = 70001  # T: too small
    ids1[5:25, 5:35] = 1001  # A
    ids1[30:50, 5:25] = 1002  # B (covers part of S)
    ids1[52:57, 0:5] = 1003  # C
    seg1 = [(1001, 1, 1), (1002, 2, 0), (1003, 1, 0), (70000, 184, 0), (70001, 184, 0)]
    lvis1 = [_poly(5, 24, 5, 34), _poly(5, 24, 45, 74), _poly(5, 24, 46, 75), _poly(8, 15, 8, 19),
             _poly(8, 15, 8, 17), _poly(50, 52, 70, 72), _poly(45, 59, 50, 79)]
    # image 2: one COCO thing; image 3: nothing >= 80 px (left out); images 5, 6: random boxes
    ids2 = np.zeros((H, W), np.int64)
    ids2[10:20, 10:20] = 5
    ids3 = np.zeros((H, W), np.int64)
    ids3[0:5, 0:5] = 7
    per_image = {1: (ids1, seg1, lvis1), 2: (ids2, [(5, 1, 1)], []), 3: (ids3, [(7, 2, 0)], [])}
    for k in (5, 6):
        ids = np.zeros((H, W), np.int64)
        r, c = rng.integers(0, 30), rng.integers(0, 40)
        ids[r:r + 20, c:c + 30] = 300 + k
        per_image[k] = (ids, [(300 + k, 1, 0)], [_poly(int(r) + 2, int(r) + 12, int(c), int(c) + 15)])
    for k, (ids, segs, polys) in per_image.items():
        stem = f"{k:012d}"
        cv2.imwrite(str(root / "coco" / f"{split}2017" / f"{stem}.jpg"), rng.integers(0, 256, (H, W, 3), np.uint8))
        cv2.imwrite(str(root / "coco" / "annotations" / f"panoptic_{split}2017" / f"{stem}.png"), _png_ids(ids))
        pan_imgs.append({"id": k, "file_name": f"{stem}.jpg", "height": H, "width": W})
        pan_anns.append({"image_id": k, "file_name": f"{stem}.png", "segments_info": [
            {"id": s, "category_id": c, "iscrowd": crowd, "area": int((ids == s).sum()), "bbox": [0, 0, 1, 1]}
            for s, c, crowd in segs]})
        lvis_imgs.append({"id": 1000 + k, "height": H, "width": W,  # other ids than COCO: matched by file stem
                          "coco_url": f"http://images.cocodataset.org/{split}2017/{stem}.jpg"})
        lvis_anns += [{"id": len(lvis_anns) + 1, "image_id": 1000 + k, "category_id": 1, "segmentation": p,
                       "bbox": [0, 0, 1, 1], "area": 1.0} for p in polys]
    lvis_imgs.append({"id": 2000, "height": H, "width": W, "coco_url": "http://x/train2017/000000000099.jpg"})
    (root / "lvis" / f"lvis_v1_{split}.json").write_text(json.dumps(
        {"images": lvis_imgs, "annotations": lvis_anns, "categories": [{"id": 1}]}))
    (root / "coco" / "annotations" / f"panoptic_{split}2017.json").write_text(json.dumps(
        {"images": pan_imgs, "annotations": pan_anns, "categories": cats}))
    return {"lvis": root / "lvis", "coco_panoptic": root / "coco", "images": root / "coco"}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_cocolvis_end_to_end(tmp_path):
    src = write_official(tmp_path / "src")
    out = tmp_path / "out"
    rep = prepare_cocolvis(**src, out=out, workers=1, progress=False)
    assert rep.complete and rep.images == 4 and rep.empty == 1 and rep.unmatched == 1
    split = out / "train"
    assert sorted(p.name for p in (split / "images").iterdir()) == [f"{k:012d}.jpg" for k in (1, 2, 5, 6)]
    assert (split / "images" / "000000000001.jpg").is_symlink() and not (split / STATE_NAME).exists()
    with open(split / "hannotation.pickle", "rb") as f:
        anno = pickle.load(f)
    a1 = anno["000000000001"]
    # instances: B (COCO), LVIS: A', dup-kept, part, sub-part, D  (A replaced, dup removed, C/tiny dropped)
    assert a1["num_instance_masks"] == 6 and rep.instances == sum(v["num_instance_masks"] for v in anno.values())
    assert a1["hierarchy"] == {0: None, 1: {"children": [3], "parent": None, "node_level": 0}, 2: None,
                               3: {"children": [4], "parent": 1, "node_level": 1},
                               4: {"children": [], "parent": 3, "node_level": 2}, 5: None}
    with open(split / "masks" / "000000000001.pickle", "rb") as f:
        layers, mapping = pickle.load(f)
    assert isinstance(layers[0], np.ndarray) and len(mapping) == 7  # 6 instances + 1 stuff
    masks = decode_layers(layers, mapping)
    assert np.array_equal(masks[0], _rect(30, 49, 5, 24)) and np.array_equal(masks[2], _rect(5, 24, 46, 75))
    stuff = _rect(40, 59, 0, 79) & ~_rect(30, 49, 5, 24) & ~_rect(45, 59, 50, 79) & ~_rect(52, 56, 0, 4)
    assert np.array_equal(masks[6], stuff)
    # the training layer reads it
    src_ds = CocoLvis(out, split="train", stuff_prob=0.0)
    assert len(src_ds) == 4
    s = src_ds.get(0, np.random.default_rng(0))
    assert s.root_ids == [1, 2, 3, 6] and s.parents[4] == 2 and s.parents[5] == 4
    item = TrainDataset(CocoLvis(out, split="train"), augment=None)[0]
    assert item["image"].shape == (3, H, W) and item["mask"].shape == (1, H, W) and item["mask"].max() == 1
    assert verify_manifest(split) == [] and rep.manifest == split / MANIFEST_NAME


def test_prepare_cocolvis_resume_is_identical(tmp_path):
    src = write_official(tmp_path / "src")
    prepare_cocolvis(**src, out=tmp_path / "a", workers=1, progress=False)
    part = prepare_cocolvis(**src, out=tmp_path / "b", workers=1, limit=2, progress=False)
    split = tmp_path / "b" / "train"
    assert part.remaining == 3 and not (split / "hannotation.pickle").exists()
    with open(split / STATE_NAME, "a") as f:
        f.write('{"id": "000000000005", "n": ')  # a line cut by a kill
    (split / "masks" / ".000000000006.pickle.tmp-123").write_bytes(b"partial")  # an interrupted write
    done = prepare_cocolvis(**src, out=tmp_path / "b", workers=2, progress=False)
    assert done.complete and done.images == 4
    assert _tree(tmp_path / "a" / "train") == _tree(split)  # same bytes, manifest included
    again = prepare_cocolvis(**src, out=tmp_path / "b", workers=1, progress=False)
    assert again.stuff is None and again.images == 4  # already complete: nothing redone
    prepare_cocolvis(**src, out=tmp_path / "c", workers=1, limit=1, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        prepare_cocolvis(**src, out=tmp_path / "c", workers=1, rasterizer="coco", progress=False)


def test_prepare_cocolvis_bad_inputs(tmp_path):
    src = write_official(tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="lvis_v1_val.json"):
        prepare_cocolvis(**src, out=tmp_path / "o", split="val", progress=False)
    (tmp_path / "src" / "coco" / "train2017" / "000000000002.jpg").unlink()
    rep = prepare_cocolvis(**src, out=tmp_path / "o", workers=1, progress=False)
    assert not rep.complete and len(rep.problems) == 1 and "000000000002.jpg" in rep.problems[0]
    assert (tmp_path / "o" / "train" / STATE_NAME).exists() and rep.images == 3  # rerun retries the failed one


# ------------------------------------------------------------------------------------------------- SBD
def _write_sbd(root: Path) -> None:
    rng = np.random.default_rng(1)
    for d in ("img", "inst", "cls"):
        (root / d).mkdir(parents=True)
    names = {"train": ["2008_000001", "2008_000002"], "val": ["2008_000003"]}
    for split, stems in names.items():
        for k, stem in enumerate(stems):
            seg = np.zeros((30, 40), np.uint8)
            seg[2:12, 2:12], seg[15:25, 20:35] = 1, 2
            if k == 1:
                seg[np.arange(20), np.arange(20) + 5] = 3  # diagonal: area/bbox 0.05 -> buggy
            cv2.imwrite(str(root / "img" / f"{stem}.jpg"), rng.integers(0, 256, (30, 40, 3), np.uint8))
            scipy.io.savemat(root / "inst" / f"{stem}.mat",
                             {"GTinst": {"Segmentation": seg, "Categories": np.array([[1], [2]])}})
        (root / f"{split}.txt").write_text("".join(s + "\n" for s in stems))


def test_prepare_sbd(tmp_path, monkeypatch):
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path / "cache"))
    ds = tmp_path / "benchmark_RELEASE" / "dataset"
    _write_sbd(ds)
    assert scipy.io.loadmat(ds / "inst" / "2008_000001.mat")["GTinst"][0][0][0].shape == (30, 40)
    before = _tree(ds)
    rep = prepare_sbd(tmp_path, workers=1, progress=False)  # finds benchmark_RELEASE/dataset
    assert rep.root == ds and _tree(ds) == before  # nothing written into the dataset
    assert rep.images == {"train": 2, "val": 1} and rep.instances == {"train": 5, "val": 2}
    assert rep.buggy == {"train": 1, "val": 0}
    assert any("8498" in p for p in rep.problems) and any("6671" in p for p in rep.problems)
    assert rep.manifest.parent == tmp_path / "cache" / "manifests" and verify_manifest(ds, rep.manifest) == []
    assert len(read_manifest(rep.manifest)) == len(before)
    (ds / "inst" / "2008_000002.mat").unlink()
    (ds / "img" / "2008_000003.jpg").write_bytes(b"not a jpeg")
    rep2 = prepare_sbd(ds, checksum=False, workers=2, progress=False)
    assert rep2.digest is None and rep2.images["train"] == 1
    assert any("2008_000002.mat" in p for p in rep2.problems) and any("2008_000003.jpg" in p for p in rep2.problems)
    with pytest.raises(FileNotFoundError, match="no SBD dataset"):
        prepare_sbd(tmp_path / "cache", progress=False)


# -------------------------------------------------------------------------------------------- manifests
def test_manifest_detects_changes(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("alpha")
    (tmp_path / "d" / "sub" / "b.bin").write_bytes(b"\x00\x01")
    path = write_manifest(tmp_path / "d")
    lines = path.read_text().splitlines()
    assert lines == sorted(lines, key=lambda ln: ln.split("  ", 1)[1]) and lines[1].endswith("  sub/b.bin")
    assert verify_manifest(tmp_path / "d") == []
    (tmp_path / "d" / "a.txt").write_text("alphb")
    (tmp_path / "d" / "new.txt").write_text("x")
    problems = verify_manifest(tmp_path / "d")
    assert len(problems) == 2 and "a.txt: content differs" in problems[0] and "new.txt: not listed" in problems[1]
    (tmp_path / "d" / "sub" / "b.bin").unlink()
    assert any("b.bin: listed" in p and "missing" in p for p in verify_manifest(tmp_path / "d"))
    assert "manifest not found" in verify_manifest(tmp_path / "x")[0]
    path.write_text("zz  a.txt\n")
    assert "expected '<64 hex digits>" in verify_manifest(tmp_path / "d")[0]
