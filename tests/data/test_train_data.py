"""Training data layer: sampler statistics (protocol.md §C.4), augmentation recipes (§C.6), sources (§C.2-C.3)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from iis.core.errors import InvalidSampleError
from iis.data.train import (
    CocoJsonTrain,
    CocoLvis,
    FolderTrain,
    MultiPointSampler,
    RandomFlip,
    SBDTrain,
    SyntheticTrain,
    TrainDataset,
    TrainSample,
    UniformRandomResize,
    augment_sample,
    cocolvis_augment,
    geometric_probs,
    sbd_augment,
)

N = 24  # slots per block
_K3 = np.ones((3, 3), bool)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _two_squares(h: int = 96, w: int = 96) -> TrainSample:
    inst = np.zeros((h, w), np.int32)
    inst[30:50, 10:30] = 1  # 400 px
    inst[60:90, 60:90] = 2  # 900 px, far from object 1's border band
    return TrainSample.from_instance_map(_image(h, w), inst)


def _counts(points: np.ndarray) -> tuple[int, int]:
    return int((points[:N, 2] == 1).sum()), int((points[N:, 2] == 0).sum())


# ------------------------------------------------------------------ sampler
def test_point_count_laws_match_spec():
    pos = geometric_probs(N, 0.8)
    neg = geometric_probs(N + 1, 0.8)
    # docs/protocol.md §C.4: P(1 pos) = 0.201, E[pos] = 4.89, E[neg] = 3.90
    assert pos[0] == pytest.approx(0.201, abs=1e-3)
    assert 1 + (np.arange(N) * pos).sum() == pytest.approx(4.89, abs=0.01)
    assert (np.arange(N + 1) * neg).sum() == pytest.approx(3.90, abs=0.01)


def test_sampler_statistics_and_strategies():
    sample = _two_squares()
    sampler = MultiPointSampler(merge_objects_prob=0.0)
    rng = np.random.default_rng(0)
    masks = {o: sample.object_mask(o) for o in (1, 2)}
    borders = {}  # dilate ceil(0.1 * sqrt(area)) times with a 3x3 kernel, minus the object (§C.4)
    for o, m in masks.items():
        borders[o] = ndimage.binary_dilation(m, _K3, iterations=int(np.ceil(0.1 * np.sqrt(m.sum())))) & ~m
    n_pos, n_neg, hits = [], [], np.zeros(3)  # negatives in the border band, in the other object, total
    draws = 2500
    for _ in range(draws):
        pts, mask, ids = sampler(sample, rng)
        (t,) = ids
        other = 3 - t
        assert np.array_equal(mask[0] > 0, masks[t])
        p, n = _counts(pts)
        n_pos.append(p)
        n_neg.append(n)
        # layout: positive block then negative block, padding rows exactly (-1, -1, -1)
        assert (pts[:p, 2] == 1).all() and (pts[p:N] == -1).all()
        assert (pts[N : N + n, 2] == 0).all() and (pts[N + n :] == -1).all()
        xy = pts[:p, :2].astype(int)
        assert masks[t][xy[:, 1], xy[:, 0]].all()  # positives inside the target
        nxy = pts[N : N + n, :2].astype(int)
        assert not masks[t][nxy[:, 1], nxy[:, 0]].any()  # negatives outside it
        hits += [borders[t][nxy[:, 1], nxy[:, 0]].sum(), masks[other][nxy[:, 1], nxy[:, 0]].sum(), n]
    pos_law, neg_law = geometric_probs(N, 0.8), geometric_probs(N + 1, 0.8)
    assert np.mean(n_pos) == pytest.approx(1 + (np.arange(N) * pos_law).sum(), abs=0.3)
    assert np.mean(np.array(n_pos) == 1) == pytest.approx(pos_law[0], abs=0.03)
    assert np.mean(n_neg) == pytest.approx((np.arange(N + 1) * neg_law).sum(), abs=0.3)
    # Strategies bg/other/border = 0.1/0.4/0.5; bg samples all of ~GT, so it also lands in the band and
    # on the other object. Expected fractions, averaged over the two (uniformly chosen) targets:
    frac_border, frac_other = hits[0] / hits[2], hits[1] / hits[2]
    exp_border = exp_other = 0.0
    for t, other in ((1, 2), (2, 1)):
        bg = masks[t].size - masks[t].sum()
        exp_border += 0.5 * (0.5 + 0.1 * borders[t].sum() / bg)
        exp_other += 0.5 * (0.4 + 0.1 * masks[other].sum() / bg)
    assert frac_border == pytest.approx(exp_border, abs=0.03)
    assert frac_other == pytest.approx(exp_other, abs=0.03)


def test_positive_erosion():
    sample = _two_squares()
    masks = {o: sample.object_mask(o) for o in (1, 2)}
    eroded = {o: ndimage.binary_erosion(m, _K3, iterations=3, border_value=1) for o, m in masks.items()}
    rng = np.random.default_rng(1)
    for prob, expect_ring in ((1.0, False), (0.0, True)):
        sampler = MultiPointSampler(merge_objects_prob=0.0, positive_erode_prob=prob)
        in_ring = 0
        for _ in range(300):
            pts, _, (t,) = sampler(sample, rng)
            xy = pts[:N][pts[:N, 2] == 1, :2].astype(int)
            in_ring += int((~eroded[t][xy[:, 1], xy[:, 0]]).sum())
        assert (in_ring > 0) == expect_ring
    # an object that erodes to <= 10 px keeps its full mask
    inst = np.zeros((32, 32), np.int32)
    inst[10:15, 10:15] = 1
    tiny = TrainSample.from_instance_map(_image(32, 32), inst)
    pts, _, _ = MultiPointSampler(positive_erode_prob=1.0)(tiny, rng)
    assert (pts[0, 2] == 1) and inst[int(pts[0, 1]), int(pts[0, 0])] == 1


def test_merge_probability_and_union():
    inst = np.zeros((64, 64), np.int32)
    inst[5:20, 5:20], inst[30:50, 5:25], inst[10:40, 40:60] = 1, 2, 3
    sample = TrainSample.from_instance_map(_image(64, 64), inst)
    sampler = MultiPointSampler()
    rng = np.random.default_rng(2)
    merged = 0
    draws = 2000
    for _ in range(draws):
        pts, mask, ids = sampler(sample, rng)
        assert len(ids) in (1, 2)
        assert np.array_equal(mask[0] > 0, np.isin(inst, ids))
        if len(ids) == 2:
            merged += 1
            xy = pts[:N][pts[:N, 2] == 1, :2].astype(int)
            assert all((inst[xy[:, 1], xy[:, 0]] == o).any() for o in ids)  # one first click per object
            assert np.isin(inst[xy[:, 1], xy[:, 0]], ids).all()
    assert merged / draws == pytest.approx(0.15, abs=0.03)
    single = TrainSample.from_instance_map(_image(64, 64), (inst == 1).astype(np.int32))
    assert all(len(sampler(single, rng).object_ids) == 1 for _ in range(100))


def test_empty_sample_and_ignore():
    ignore = np.zeros((40, 40), bool)
    ignore[:, :20] = True
    empty = TrainSample(_image(40, 40), np.zeros((40, 40), np.int32), {}, ignore)
    rng = np.random.default_rng(3)
    n_total = 0
    for _ in range(50):
        pts, mask, ids = MultiPointSampler()(empty, rng)
        assert ids == () and (pts[:N] == -1).all()
        assert set(np.unique(mask).tolist()) == {-1.0, 0.0} and (mask[0][ignore] == -1).all()
        neg = pts[N:][pts[N:, 2] == 0, :2].astype(int)
        n_total += len(neg)
        assert not ignore[neg[:, 1], neg[:, 0]].any()
    assert n_total > 0
    # ignore inside a sample: target -1 there, never clicked
    inst = np.zeros((40, 40), np.int32)
    inst[10:30, 25:38] = 1
    s = TrainSample.from_instance_map(_image(40, 40), inst, ignore=ignore)
    for _ in range(50):
        pts, mask, _ = MultiPointSampler()(s, rng)
        assert (mask[0][ignore] == -1).all() and (mask[0][inst == 1] == 1).all()
        xy = pts[pts[:, 2] >= 0, :2].astype(int)
        assert not ignore[xy[:, 1], xy[:, 0]].any()


def test_first_click_center():
    inst = np.zeros((60, 60), np.int32)
    inst[5:46, 5:46] = 1
    s = TrainSample.from_instance_map(_image(60, 60), inst)
    dt = ndimage.distance_transform_edt(np.pad(inst, 1))[1:-1, 1:-1]
    inner = dt > dt.max() / 1.7
    rng = np.random.default_rng(4)
    for center, all_inner in ((True, True), (False, False)):
        sampler = MultiPointSampler(first_click_center=center, positive_erode_prob=0.0)
        firsts = [sampler(s, rng).points[0] for _ in range(200)]
        assert all(inner[int(p[1]), int(p[0])] for p in firsts) == all_inner


def test_root_only_targets_and_hierarchy():
    layers = np.zeros((30, 30, 2), np.int32)
    layers[2:28, 2:28, 0] = 1  # parent
    layers[5:15, 5:15, 1] = 2  # child (overlaps the parent in another layer)
    s = TrainSample(_image(30, 30), layers, {1: None, 2: 1})
    rng = np.random.default_rng(5)
    assert all(MultiPointSampler()(s, rng).object_ids == (1,) for _ in range(50))
    s.remove_object(1)  # e.g. the parent was below min_object_area: its child is re-parented to the root level
    assert s.parents == {2: None} and s.root_ids == [2]
    s.remove_small_objects(101)  # the child has 100 px
    assert len(s) == 0


# ------------------------------------------------------------- augmentation
def _instance_sample(h: int, w: int) -> TrainSample:
    inst = np.zeros((h, w), np.int32)
    inst[h // 4 : h // 2, w // 4 : w // 2] = 3
    inst[h // 2 :, w // 2 :] = 200
    inst[: h // 5, : w // 5] = 7
    return TrainSample.from_instance_map(_image(h, w), inst)


@pytest.mark.parametrize("recipe", [sbd_augment, cocolvis_augment])
@pytest.mark.parametrize("hw", [(40, 50), (120, 90)])
def test_recipes_shapes_and_nearest_masks(recipe, hw):
    crop = (64, 48)
    aug = recipe(crop)
    sample = _instance_sample(*hw)
    rng = np.random.default_rng(6)
    for _ in range(5):
        out = augment_sample(sample, aug, rng)
        assert out.image.shape == (*crop, 3) and out.image.dtype == np.uint8
        assert out.layers.shape == (*crop, 1)
        assert set(np.unique(out.layers).tolist()) <= {0, 3, 7, 200}  # no interpolated ids
        assert set(out.parents) == set(np.unique(out.layers).tolist()) - {0}


def test_augment_determinism_and_ignore():
    ignore = np.zeros((80, 80), bool)
    ignore[:10] = True
    s = _instance_sample(80, 80)
    s.ignore = ignore
    aug = sbd_augment((48, 48))
    a = augment_sample(s, aug, np.random.default_rng(7))
    b = augment_sample(s, aug, np.random.default_rng(7))
    c = augment_sample(s, aug, np.random.default_rng(8))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.layers, b.layers)
    assert np.array_equal(a.ignore, b.ignore) and a.ignore.dtype == bool
    assert not np.array_equal(a.image, c.image)


def test_uniform_random_resize_and_flip():
    import albumentations as A

    img, m = _image(40, 60), np.arange(2400, dtype=np.int32).reshape(40, 60)
    rs = A.Compose([UniformRandomResize((0.75, 1.25))], seed=0)
    shapes = {rs(image=img, mask=m)["image"].shape[:2] for _ in range(30)}
    assert len(shapes) > 3
    for h, w in shapes:
        assert 30 <= h <= 50 and 45 <= w <= 75 and abs(w / h - 1.5) < 0.06
    fl = A.Compose([RandomFlip(p=1.0)], seed=0)
    kinds = set()
    for _ in range(60):
        o = fl(image=img, mask=m)["mask"]
        kinds.add((o[0, 0] == m[0, -1], o[0, 0] == m[-1, 0], o[0, 0] == m[-1, -1]))
    assert kinds == {(True, False, False), (False, True, False), (False, False, True)}


# ------------------------------------------------------------------ sources
def _write_sbd(root: Path) -> list[np.ndarray]:
    from scipy.io import savemat

    (root / "img").mkdir(parents=True)
    (root / "inst").mkdir()
    maps = []
    for k, name in enumerate(["2008_000001", "2008_000002", "2008_000003"]):
        inst = np.zeros((40, 48), np.uint8)
        inst[5:20, 5:20] = 1  # compact: kept
        inst[30, 2:40] = 2  # thin but axis-aligned: area == bbox area, kept
        for i in range(25):  # diagonal line: 25 px in a 25x25 box, ratio 0.04 < 0.08 -> buggy
            inst[10 + i % 25, 20 + i] = 3
        inst[22:28, 42:47] = k + 4
        cv2.imwrite(str(root / "img" / f"{name}.jpg"), _image(40, 48, k))
        savemat(root / "inst" / f"{name}.mat", {"GTinst": {"Segmentation": inst, "Categories": np.array([[1]])}})
        maps.append(inst)
    (root / "train.txt").write_text("2008_000001\n2008_000002\n2008_000003\n")
    return maps


def test_sbd_train(tmp_path):
    maps = _write_sbd(tmp_path)
    src = SBDTrain(tmp_path)
    assert len(src) == 3
    s = src[1]
    assert s.image.shape == (40, 48, 3) and set(s.object_ids) == {1, 2, 5}  # 3 was buggy
    assert np.array_equal(s.object_mask(2), maps[1] == 2)
    assert set(SBDTrain(tmp_path, buggy_mask_thresh=0)[1].object_ids) == {1, 2, 3, 5}
    weights = tmp_path / "w.pkl"
    weights.write_bytes(pickle.dumps([(0, "2008_000001", 0.0), (1, "2008_000002", 0.9), (2, "2008_000003", 0.99)]))
    w = SBDTrain(tmp_path, samples_weights=weights)
    expect = np.array([1.0, 0.1**1.25, 0.01**1.25])
    assert np.allclose(w.sample_probs, expect / expect.sum())
    ds = TrainDataset(w, None, min_object_area=1)
    ids = [ds.get_sample(0, np.random.default_rng(i)).id for i in range(400)]
    assert np.mean([i == "2008_000001" for i in ids]) == pytest.approx(expect[0] / expect.sum(), abs=0.04)
    weights.write_bytes(pickle.dumps([(0, "2008_000009", 0.5)]))
    with pytest.raises(ValueError, match="w.pkl"):
        SBDTrain(tmp_path, samples_weights=weights)
    (tmp_path / "inst" / "2008_000003.mat").unlink()
    with pytest.raises(InvalidSampleError, match=r"2008_000003: SBD instance file .*2008_000003\.mat: file not found"):
        src[2]  # removed after listing: the item refuses to load
    with pytest.raises(FileNotFoundError, match="2008_000003.mat"):
        SBDTrain(tmp_path)  # missing when listing: a dataset-level error
    with pytest.raises(FileNotFoundError, match="val.txt"):
        SBDTrain(tmp_path, split="val")


def _write_cocolvis(root: Path) -> None:
    split = root / "train"
    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir()
    l0, l1 = np.zeros((40, 50), np.uint8), np.zeros((40, 50), np.uint8)
    l0[2:30, 2:30] = 1  # obj 0: root with child obj 1
    l1[5:15, 5:15] = 1  # obj 1: child (overlaps obj 0)
    l0[2:20, 35:48] = 2  # obj 2: isolated root (hierarchy None)
    l0[32:40, :] = 3  # obj 3: stuff
    enc = [cv2.imencode(".png", x)[1] for x in (l0, l1)]
    mapping = [(0, 1), (1, 1), (0, 2), (0, 3)]
    cv2.imwrite(str(split / "images" / "000000000042.jpg"), _image(40, 50))
    (split / "masks" / "000000000042.pickle").write_bytes(pickle.dumps((enc, mapping)))
    hier = {0: {"children": [1], "parent": None, "node_level": 0},
            1: {"children": [], "parent": 0, "node_level": 1}, 2: None}
    anno = {"000000000042": {"num_instance_masks": 3, "hierarchy": hier}}
    (split / "hannotation.pickle").write_bytes(pickle.dumps(anno))


def test_cocolvis(tmp_path):
    _write_cocolvis(tmp_path)
    with_stuff = CocoLvis(tmp_path, stuff_prob=1.0).get(0, np.random.default_rng(0))
    assert with_stuff.parents == {1: None, 2: 1, 3: None, 4: None} and with_stuff.root_ids == [1, 3, 4]
    assert with_stuff.layers.shape == (40, 50, 2) and with_stuff.object_mask(4)[32:].all()
    assert with_stuff.object_mask(2)[5:15, 5:15].all() and with_stuff.object_mask(1)[5:15, 5:15].all()
    no_stuff = CocoLvis(tmp_path, stuff_prob=0.0).get(0, np.random.default_rng(0))
    assert no_stuff.root_ids == [1, 3] and not no_stuff.layers[32:].any()  # stuff erased to background
    src = CocoLvis(tmp_path)  # stuff_prob 0.3 (C+L configs)
    freq = np.mean([4 in src.get(0, np.random.default_rng(i)).parents for i in range(400)])
    assert freq == pytest.approx(0.3, abs=0.07)
    rng = np.random.default_rng(1)
    chosen = {i for _ in range(200) for i in MultiPointSampler()(no_stuff, rng).object_ids}
    assert chosen == {1, 3}  # the child (2) is never a target
    with pytest.raises(FileNotFoundError, match="val"):
        CocoLvis(tmp_path, split="val")


def test_coco_json(tmp_path):
    from pycocotools import mask as mask_utils

    cv2.imwrite(str(tmp_path / "a.png"), _image(30, 40))
    rle_mask = np.zeros((30, 40), np.uint8)
    rle_mask[10:25, 20:35] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode()
    crowd = np.zeros((30, 40), np.uint8)
    crowd[0:5, 0:40] = 1
    crle = mask_utils.encode(np.asfortranarray(crowd))
    crle["counts"] = crle["counts"].decode()
    anns = [
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": [[2, 2, 15, 2, 15, 15, 2, 15]]},
        {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": rle},
        {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": crle},
    ]
    js = {"images": [{"id": 7, "file_name": "a.png", "height": 30, "width": 40}, {"id": 8, "file_name": "b.png",
          "height": 30, "width": 40}], "annotations": anns, "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(js))
    src = CocoJsonTrain(tmp_path, tmp_path / "ann.json", crowd="ignore")
    assert len(src) == 1  # image 8 has no annotations
    s = src[0]
    masks = sorted((s.object_mask(o) for o in s.object_ids), key=lambda m: m.sum())
    assert len(masks) == 2 and np.array_equal(masks[1], rle_mask > 0)
    assert masks[0][3:15, 3:15].all() and not masks[0][20:].any()  # polygon
    assert np.array_equal(s.ignore, crowd > 0)
    assert len(CocoJsonTrain(tmp_path, tmp_path / "ann.json")[0]) == 3  # crowd as object (C+L)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoJsonTrain(tmp_path, tmp_path / "nope.json")


def test_folder_train(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    binary = np.zeros((20, 30), np.uint8)
    binary[5:15, 5:15] = 255
    inst = np.zeros((20, 30), np.uint8)
    inst[2:8, 2:8], inst[10:18, 10:25], inst[0:2, :] = 1, 2, 255
    for name, m in (("a", binary), ("b", inst)):
        cv2.imwrite(str(tmp_path / "images" / f"{name}.jpg"), _image(20, 30))
        cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), m)
    src = FolderTrain(tmp_path, mode="instances", ignore_value=255)
    a = FolderTrain(tmp_path)[0]
    assert a.object_ids == [1] and np.array_equal(a.object_mask(1), binary > 0)
    assert np.array_equal(FolderTrain(tmp_path)[1].object_mask(1), inst == 255)  # binary: > 127 only
    b = src[1]
    assert b.object_ids == [1, 2] and b.ignore[0:2].all() and b.ignore.sum() == 60
    assert np.array_equal(b.object_mask(2), inst == 2)
    cv2.imwrite(str(tmp_path / "images" / "c.jpg"), _image(20, 30))
    with pytest.raises(FileNotFoundError, match="c.jpg"):
        FolderTrain(tmp_path)


def test_synthetic_train():
    src = SyntheticTrain(n=10, size=(48, 64), seed=3)
    a, b = src[4], SyntheticTrain(n=10, size=(48, 64), seed=3)[4]
    assert np.array_equal(a.image, b.image) and np.array_equal(a.layers, b.layers)
    assert not np.array_equal(a.image, src[5].image)
    assert a.image.shape == (48, 64, 3)
    assert all(1 <= len(src[i]) <= 4 for i in range(10))


# ------------------------------------------------------------ TrainDataset
def test_train_dataset_items_and_determinism():
    ds = TrainDataset(SyntheticTrain(8, 64, seed=0), cocolvis_augment(48), epoch_len=12, min_object_area=20)
    assert len(ds) == 12
    item = ds[3]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["points"].shape == (2 * N, 3) and item["mask"].shape == (1, 48, 48)
    assert item["mask"].sum() > 0 and (item["points"][0, 2] == 1)
    again = ds[3]
    assert all(torch.equal(item[k], again[k]) for k in item)
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["image"], item["image"])
    with pytest.raises(IndexError):
        ds[12]
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert batch["points"].shape == (4, 2 * N, 3)


def test_keep_background_loop_and_min_area():
    inst = np.zeros((200, 200), np.int32)
    inst[160:190, 160:190] = 1  # one object in a corner; most 40x40 crops miss it
    src = [TrainSample.from_instance_map(_image(200, 200), inst)]

    class One:
        def __len__(self):
            return 1

        def get(self, index, rng):
            return src[0]

    strict = TrainDataset(One(), cocolvis_augment(40), epoch_len=10, min_object_area=1, keep_background_prob=0.0)
    assert all(strict[i]["mask"].sum() > 0 for i in range(10))
    loose = TrainDataset(One(), cocolvis_augment(40), epoch_len=10, min_object_area=1, keep_background_prob=1.0)
    empty = [loose[i] for i in range(10) if loose[i]["mask"].sum() == 0]
    assert empty and all((e["points"][:N] == -1).all() for e in empty)
    big = TrainDataset(One(), None, epoch_len=1, min_object_area=901)
    assert big[0]["mask"].sum() == 0  # the 900 px object is below min_object_area


def test_aligned_augment_random_ratio_crop():
    from iis.data.train.augment import RandomRatioCrop, aligned_augment

    img = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)
    mask = np.zeros((60, 80, 1), np.int32)
    mask[10:30, 20:50] = 7
    aug = aligned_augment((32, 32))
    aug.set_random_seed(3)
    out = aug(image=img, mask=mask)
    assert out["image"].shape == (32, 32, 3) and out["mask"].shape[:2] == (32, 32)
    assert set(np.unique(out["mask"])) <= {0, 7}  # nearest: ids survive
    t = RandomRatioCrop((16, 16))
    window = (-5, 70, 20, 20)  # partly outside the image: zero padded, width taken from x0 (bug fixed)
    cut = t._cut(mask, window)
    assert cut.shape[:2] == (20, 20) and cut[:5].max() == 0 and cut[:, 10:].max() == 0
