"""Evaluation dataset readers: real GrabCut/Berkeley/ssTEM counts and decoding, plus every other
layout written in its real on-disk format under tmp_path (docs/protocol.md §B, iis/data/README.md)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import scipy.ndimage as ndi
from PIL import Image

from iis.core.errors import InvalidSampleError
from iis.data import check_datasets, get_dataset, list_datasets
from iis.data.datasets import available_datasets
from iis.data.readers.splits import voc_colormap


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    """Keep instance-index caches out of the user's home."""
    d = tmp_path_factory.mktemp("iis-cache")
    monkeypatch.setenv("IIS_CACHE_DIR", str(d))
    return d


# ----- fixture writers (real formats) -----------------------------------------------------------
def _img(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def _inst_map(h, w, n, rng):
    """Non-overlapping rectangles with ids 1..n (SBD/VOC/OAI-ZIB style)."""
    m = np.zeros((h, w), np.uint8)
    for k in range(1, n + 1):
        y, x = (k - 1) * (h // n), int(rng.integers(0, w // 2))
        m[y + 1:y + h // n - 1, x:x + w // 3] = k
    return m


def _write_sbd(dataset: Path, rng, sizes: dict[str, int], split="val") -> dict[str, np.ndarray]:
    """``benchmark_RELEASE/dataset`` content: img/*.jpg, inst/*.mat (GTinst struct), cls/, <split>.txt."""
    maps = {}
    for d in ("img", "inst", "cls"):
        (dataset / d).mkdir(parents=True, exist_ok=True)
    for stem, n in sizes.items():
        seg = _inst_map(24, 32, n, rng)
        _write_rgb(dataset / "img" / f"{stem}.jpg", _img(rng, 24, 32))
        bounds = np.empty((n, 1), dtype=object)
        for k in range(n):
            bounds[k, 0] = scipy.sparse.csc_matrix((seg == k + 1).astype(np.uint8))
        gtinst = {"Segmentation": seg, "Boundaries": bounds, "Categories": np.arange(1, n + 1)[:, None]}
        scipy.io.savemat(dataset / "inst" / f"{stem}.mat", {"GTinst": gtinst})
        maps[stem] = seg
    (dataset / f"{split}.txt").write_text("".join(f"{s}\n" for s in sizes))
    return maps


def _write_voc(root: Path, rng, objs: dict[str, np.ndarray]) -> None:
    for stem, m in objs.items():
        _write_rgb(root / "JPEGImages" / f"{stem}.jpg", _img(rng, *m.shape))
        (root / "SegmentationObject").mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(m, mode="P")
        im.putpalette(voc_colormap().ravel().tolist())
        im.save(root / "SegmentationObject" / f"{stem}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(objs) + "\n")


def _write_pairs(root: Path, images: str, masks: str, items: dict[str, np.ndarray], rng, img_ext=".jpg") -> None:
    for stem, m in items.items():
        _write_rgb(root / images / f"{stem}{img_ext}", _img(rng, *m.shape[:2]))
        (root / masks).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / masks / f"{stem}.png"), m)


def _ids_unique(ds):
    ids = ds.ids()
    assert len(ids) == len(set(ids)) == len(ds)
    return ids


# ----- real data ------------------------------------------------------------------------------------
def test_grabcut_real(data_root):
    ds = get_dataset("GrabCut", data_root)
    assert ds.name == "grabcut" and len(ds) == 50 and ds.num_images == 50
    ids = _ids_unique(ds)
    assert "124080" in ids and "124084" not in ids and ids == sorted(ids)
    banded = 0
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
        assert s.gt.dtype == np.int8 and s.gt.shape == s.image.shape[:2]
        assert set(np.unique(s.gt)) <= {-1, 0, 1} and (s.gt == 1).any()
        banded += bool((s.gt == -1).any())
    assert (banded, len(ds) - banded) == (42, 8)
    raw = cv2.imread(str(data_root / "GrabCut" / "boundary_GT" / "124080.bmp"), cv2.IMREAD_GRAYSCALE)
    gt = ds[ids.index("124080")].gt
    np.testing.assert_array_equal(gt == -1, raw == 128)
    np.testing.assert_array_equal(gt == 1, raw > 128)


def test_berkeley_real(data_root):
    ds = get_dataset("berkeley", data_root)
    assert len(ds) == 100 == ds.num_images
    _ids_unique(ds)
    digests = {hashlib.md5(p.image.read_bytes()).hexdigest() for p in ds.pairs}
    assert len(digests) == 96
    s = ds[ds.ids().index("8023")]  # anti-aliased mask: 197/243 pixels are object, no ignore
    raw = cv2.imread(str(data_root / "Berkeley" / "masks" / "8023.png"))[..., 0]
    assert not (s.gt == -1).any() and ((raw > 0) & (raw < 255)).any()
    np.testing.assert_array_equal(s.gt == 1, raw > 127)
    for i in (0, 57, 99):
        assert ds[i].gt.shape == ds[i].image.shape[:2]


def test_sstem_real_components(data_root):
    ds = get_dataset("sstem", data_root)
    masks = sorted((data_root / "ssTEM" / "mitochondria").glob("*.png"))
    four = ndi.generate_binary_structure(2, 1)
    counts = [ndi.label(cv2.imread(str(m))[..., 0] != 0, structure=four)[1] for m in masks]
    assert ds.num_images == 20 and len(ds) == sum(counts) > 20
    ids = _ids_unique(ds)
    first = [i for i, x in enumerate(ids) if x.startswith("00#")]
    assert len(first) == counts[0]
    union = np.zeros((1024, 1024), np.int32)
    for i in first:
        s = ds[i]
        assert s.image.shape == (1024, 1024, 3) and not (s.gt == -1).any()
        assert ndi.label(s.gt == 1, structure=four)[1] == 1  # exactly one 4-connected component
        union += s.gt == 1
    assert union.max() == 1  # disjoint ...
    np.testing.assert_array_equal(union > 0, cv2.imread(str(masks[0]))[..., 0] != 0)  # ... and complete


def test_available_and_check_real(data_root):
    assert {"grabcut", "berkeley", "sstem", "synthetic"} <= set(available_datasets(data_root))
    assert get_dataset("grabcut", data_root).check() == []


# ----- fixtures in real formats ----------------------------------------------------------------------
@pytest.mark.parametrize("nested", [False, True])
def test_sbd_mat_instances(tmp_path, rng, nested):
    ds_dir = tmp_path / "SBD" / ("benchmark_RELEASE/dataset" if nested else "")
    maps = _write_sbd(ds_dir, rng, {"2008_000001": 3, "2008_000002": 1, "2008_000005": 2})
    m = scipy.io.loadmat(ds_dir / "inst" / "2008_000001.mat")["GTinst"][0][0][0]  # the reference's access path
    np.testing.assert_array_equal(m, maps["2008_000001"])
    ds = get_dataset("sbd", tmp_path)
    assert len(ds) == 6 and ds.num_images == 3
    ids = _ids_unique(ds)
    assert ids[:4] == ["2008_000001#1", "2008_000001#2", "2008_000001#3", "2008_000002#1"]
    for i, sid in enumerate(ids):
        stem, k = sid.split("#")
        s = ds[i]
        np.testing.assert_array_equal(s.gt, (maps[stem] == int(k)).astype(np.int8))
        assert s.image.shape == (24, 32, 3)
    assert ds.check() == []
    with pytest.raises(FileNotFoundError, match="train.txt"):
        get_dataset("sbd_train", tmp_path)


def test_sbd_index_cache_outside_dataset(tmp_path, rng, _cache_dir):
    _write_sbd(tmp_path / "SBD", rng, {"a": 2, "b": 1})
    before = sorted(p for p in tmp_path.rglob("*"))
    assert len(get_dataset("sbd", tmp_path)) == 3
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written into the dataset
    cached = list((_cache_dir / "dataset-index").glob("sbd-*.json"))
    assert len(cached) == 1
    assert len(get_dataset("sbd", tmp_path)) == 3  # served from cache
    # changing a mask changes the key: the new instance count is seen
    seg = np.zeros((24, 32), np.uint8)
    seg[:5, :5], seg[10:, 10:], seg[6:8, :3] = 1, 2, 3
    scipy.io.savemat(tmp_path / "SBD" / "inst" / "b.mat", {"GTinst": {"Segmentation": seg}})
    os.utime(tmp_path / "SBD" / "inst" / "b.mat", ns=(1, 10**18))
    assert len(get_dataset("sbd", tmp_path)) == 5


def test_pascalvoc_palette_void(tmp_path, rng):
    m = np.zeros((20, 30), np.uint8)
    m[2:8, 2:10], m[10:18, 5:25] = 1, 2
    m[1, 2:10] = 255  # void band
    m2 = np.zeros((16, 16), np.uint8)
    m2[4:12, 4:12], m2[3, :] = 3, 255
    _write_voc(tmp_path / "PascalVOC", rng, {"2007_000032": m, "2007_000033": m2})
    ds = get_dataset("pascalvoc", tmp_path)
    assert _ids_unique(ds) == ["2007_000032#1", "2007_000032#2", "2007_000033#3"]
    s = ds[1]
    assert (s.gt == 1).sum() == 8 * 20 and ((s.gt == -1) == (m == 255)).all()
    assert ds[2].gt.shape == (16, 16) and (ds[2].gt == -1).sum() == 16
    # the reference's rule (BGR->GRAY, 220 = ignore) marks the same void region
    gray = cv2.cvtColor(cv2.imread(str(tmp_path / "PascalVOC/SegmentationObject/2007_000032.png")), cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(gray == 220, s.gt == -1)


@pytest.mark.parametrize("name,folder", [("davis", "DAVIS"), ("coco_mval", "COCO_MVal")])
def test_davis_like(tmp_path, rng, name, folder):
    m = np.zeros((12, 14, 3), np.uint8)
    m[2:6, 3:9, 2] = 200  # coloured object: max over channels > 0
    m2 = np.zeros((10, 10), np.uint8)
    m2[5:, 5:] = 255
    _write_pairs(tmp_path / folder, "img", "gt", {"bear": m, "blackswan": m2}, rng)
    ds = get_dataset(name, tmp_path)
    assert _ids_unique(ds) == ["bear", "blackswan"]
    assert (ds[0].gt == 1).sum() == 24 and ds[1].gt.sum() == 25 and not (ds[0].gt == -1).any()


def test_brats(tmp_path, rng):
    m = np.zeros((16, 16), np.uint8)
    m[3:9, 3:9] = 1  # label value 1: channel 0 > 0 -> object
    _write_pairs(tmp_path / "BraTS", "image", "annotation", {"BraTS20_001_s070": m}, rng, img_ext=".png")
    ds = get_dataset("brats", tmp_path)
    assert ds.ids() == ["BraTS20_001_s070"] and ds[0].gt.sum() == 36


@pytest.mark.parametrize("layout", ["OAIZIB/test", "OAIZIB/iseg_slices/test"])
def test_oaizib_labels(tmp_path, rng, layout):
    m = _inst_map(20, 20, 2, rng)
    m[m == 2] = 4  # tibial cartilage label, not consecutive
    _write_pairs(tmp_path / layout, "image", "annotations", {"9001104_070": m, "9001104_071": 0 * m}, rng, ".png")
    ds = get_dataset("oaizib", tmp_path)
    # the empty slice keeps one visible entry that refuses to load (it never vanishes from the count)
    assert _ids_unique(ds) == ["9001104_070#1", "9001104_070#4", "9001104_071"] and ds.num_images == 2
    np.testing.assert_array_equal(ds[1].gt, (m == 4).astype(np.int8))
    with pytest.raises(InvalidSampleError, match=r"9001104_071: mask .*9001104_071\.png: empty object"):
        ds[2]
    assert len(ds.check()) == 1


def test_generic_folder(tmp_path, rng):
    inst = _inst_map(16, 20, 3, rng)
    binary = np.zeros((10, 10), np.uint8)
    binary[2:6, 2:6] = 255
    ids16 = np.zeros((8, 8), np.uint16)
    ids16[:4], ids16[4:, :3] = 300, 1000
    _write_pairs(tmp_path, "images", "masks", {"a": inst, "b": binary, "c": ids16}, rng)
    ds = get_dataset("folder", tmp_path, mode="instances")
    assert _ids_unique(ds) == ["a#1", "a#2", "a#3", "b#255", "c#300", "c#1000"]
    np.testing.assert_array_equal(ds[2].gt, (inst == 3).astype(np.int8))
    assert ds[3].gt.sum() == 16 and ds[5].gt.sum() == 12
    bin_ds = get_dataset("folder", tmp_path)  # binary is the default
    assert bin_ds.ids() == ["a", "b", "c"] and bin_ds[1].gt.sum() == 16 and bin_ds[2].gt.sum() == 44
    with pytest.raises(InvalidSampleError, match=r"a: mask .*a\.png: empty object: no value > 127"):
        bin_ds[0]  # instance ids 1..3 are not a binary mask


def test_folder_ignore_value(tmp_path, rng):
    m = np.zeros((10, 10), np.uint8)
    m[2:6, 2:6], m[0] = 255, 128
    _write_pairs(tmp_path, "images", "masks", {"x": m}, rng, ".png")
    s = get_dataset("folder", tmp_path, ignore_value=128)[0]
    assert s.id == "x" and (s.gt == 1).sum() == 16 and (s.gt == -1).sum() == 10


# ----- errors and check() -----------------------------------------------------------------------
def test_unknown_and_missing(tmp_path):
    with pytest.raises(ValueError, match="grabcut.*sbd"):
        get_dataset("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "GrabCut")):
        get_dataset("grabcut", tmp_path)
    (tmp_path / "GrabCut" / "data_GT").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="boundary_GT"):
        get_dataset("grabcut", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "PascalVOC")):
        get_dataset("pascalvoc", tmp_path)
    assert set(list_datasets()) >= {"grabcut", "berkeley", "davis", "coco_mval", "sbd", "sbd_train", "pascalvoc",
                                    "sstem", "brats", "oaizib", "folder", "synthetic"}


def test_size_mismatch_unreadable_unpaired(tmp_path, rng):
    root = tmp_path / "Berkeley"
    _write_pairs(root, "images", "masks", {"ok": np.full((8, 8), 255, np.uint8)}, rng)
    _write_rgb(root / "images" / "big.jpg", _img(rng, 12, 12))
    cv2.imwrite(str(root / "masks" / "big.png"), np.zeros((10, 12), np.uint8))
    (root / "images" / "bad.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(root / "masks" / "bad.png"), np.zeros((4, 4), np.uint8))
    _write_rgb(root / "images" / "lonely.jpg", _img(rng, 4, 4))
    with pytest.raises(FileNotFoundError, match=r"berkeley dataset: image without mask: .*lonely\.jpg"):
        get_dataset("berkeley", tmp_path)  # unpaired files: a dataset-level error
    ds = get_dataset("berkeley", tmp_path, strict=False)
    assert ds.ids() == ["bad", "big", "ok"]
    with pytest.raises(InvalidSampleError, match=r"big\.png"):
        ds[1]
    with pytest.raises(InvalidSampleError, match=r"bad\.jpg"):
        ds[0]
    assert ds[2].gt.all()
    problems = ds.check()
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert any("lonely.jpg" in p for p in problems) and any("big.png" in p for p in problems)
    assert any("bad.jpg" in p for p in problems)


# ----- synthetic ------------------------------------------------------------------------------------
def test_synthetic_deterministic():
    a, b = get_dataset("synthetic"), get_dataset("synthetic", root="/ignored")
    assert len(a) == 20 and a.ids() == b.ids() and len(set(a.ids())) == 20
    for i in (0, 7, 19):
        sa, sb = a[i], b[i]
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.gt, sb.gt)
        assert sa.gt.dtype == np.int8 and sa.image.shape[:2] == sa.gt.shape
        assert 96 <= min(sa.gt.shape) and max(sa.gt.shape) <= 160 and (sa.gt == 1).sum() >= 64
    assert not np.array_equal(a[0].image, a[1].image)
    c = get_dataset("synthetic", num_samples=3, size=64, seed=1, ignore_band=2)
    assert len(c) == 3 and c[2].image.shape == (64, 64, 3) and (c[2].gt == -1).any()
    assert c.check() == [] and not np.array_equal(c[0].image[:64, :64], get_dataset("synthetic", size=64)[0].image)


def test_bad_options_and_check_datasets(tmp_path, rng):
    with pytest.raises(ValueError, match="num_sample"):
        get_dataset("synthetic", num_sample=3)
    with pytest.raises(ValueError, match="grabcut.*split"):
        get_dataset("grabcut", tmp_path, split="val")
    _write_pairs(tmp_path / "DAVIS", "img", "gt", {"bear": np.full((6, 6), 255, np.uint8)}, rng)
    rep = check_datasets(tmp_path)
    assert set(rep) == {"davis"} and rep["davis"]["instances"] == 1
    assert len(rep["davis"]["problems"]) == 1 and "345" in rep["davis"]["problems"][0]  # incomplete copy
    rep = check_datasets(tmp_path, ["GrabCut"])
    assert "GrabCut" in rep["grabcut"]["problems"][0] and rep["grabcut"]["root"] is None
