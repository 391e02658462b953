"""Validation at the door (issue #17): every data case that used to give a silent wrong number, written
in the real on-disk formats under tmp_path, now refuses with one line naming the file (or is a
visible invalid instance); plus the folder modes, the split helper and the training-side checks."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image, ImageFile

from iis.core.errors import IISError, InvalidSampleError
from iis.data import check_datasets, get_dataset, split_files
from iis.data.folder import FolderEncoding
from iis.data.io import DataFileError, read_image, read_mask, safe_pickle_load
from iis.data.train import FolderTrain, SBDTrain, check_train_source, require_valid_source


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("IIS_CACHE_DIR", str(tmp_path_factory.mktemp("iis-cache")))


def _photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth RGB content (JPEG-friendly, so a truncated file still decodes partly in OpenCV)."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 2)


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return path


def _square(h: int = 48, w: int = 64, value: int = 255, dtype=np.uint8) -> np.ndarray:
    m = np.zeros((h, w), dtype)
    m[10:30, 15:45] = value
    return m


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _grabcut(root: Path, masks: dict[str, np.ndarray], mask_ext: str = ".bmp") -> Path:
    d = root / "GrabCut"
    for k, (stem, m) in enumerate(masks.items()):
        _write(d / "data_GT" / f"{stem}.jpg", _photo(*m.shape[:2], seed=k)[..., ::-1])
        _write(d / "boundary_GT" / f"{stem}{mask_ext}", m)
    return d


def _folder(root: Path, masks: dict[str, np.ndarray | Image.Image]) -> Path:
    for k, (stem, m) in enumerate(masks.items()):
        if isinstance(m, Image.Image):
            size = m.size[::-1]
            (root / "masks").mkdir(parents=True, exist_ok=True)
            m.save(root / "masks" / f"{stem}.png")
        else:
            size = m.shape[:2]
            _write(root / "masks" / f"{stem}.png", m)
        _write(root / "images" / f"{stem}.jpg", _photo(*size, seed=k)[..., ::-1])
    return root


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ----- the strict reader ----------------------------------------------------------------------------
def test_truncated_jpeg_is_refused(tmp_path):
    p = _write(tmp_path / "a.jpg", _photo(120, 160)[..., ::-1])
    full = read_image(p)
    np.testing.assert_array_equal(full, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))  # reference values
    _truncate(p)
    assert cv2.imread(str(p)) is not None  # what used to happen: OpenCV decodes the first part silently
    with pytest.raises(DataFileError, match=r"image .*a\.jpg: truncated or corrupt JPEG file") as e:
        read_image(p)
    _one_line(e.value)
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # a library turned lenient loading on process-wide
    try:
        with pytest.raises(DataFileError, match="truncated"):
            read_image(p)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    for bad, why in ((b"", "empty file"), (b"not an image", "not an image file")):
        (tmp_path / "b.png").write_bytes(bad)
        with pytest.raises(DataFileError, match=why):
            read_image(tmp_path / "b.png")
    with pytest.raises(DataFileError, match="file not found"):
        read_image(tmp_path / "missing.jpg")
    png = _write(tmp_path / "m.png", _square())
    _truncate(png, 0.7)
    with pytest.raises(DataFileError, match=r"mask .*m\.png: truncated or corrupt"):
        read_mask(png)


def test_mask_file_keeps_stored_values(tmp_path):
    m16 = _square(value=255, dtype=np.uint16)
    mf = read_mask(_write(tmp_path / "m16.png", m16))
    assert mf.bits == 16 and mf.values.dtype == np.uint16 and mf.values.max() == 255
    assert mf.bgr.max() == 0  # the reference's IMREAD_COLOR view: 255 >> 8 = 0 -> an empty object
    pal = Image.fromarray(_square(value=3), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    pal.save(tmp_path / "p.png")
    mp = read_mask(tmp_path / "p.png")
    assert mp.mode == "P" and mp.values.max() == 3 and mp.bits == 8


def test_safe_pickle_refuses_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataFileError, match=r"evil\.pkl: not plain data \(it names builtins\.print\)"):
        safe_pickle_load(tmp_path / "evil.pkl")
    assert "executed" not in capsys.readouterr().out  # the stand-in was never called as print
    data = [np.arange(4, dtype=np.uint8), {0: None, 1: {"parent": 0}}, (1, "x", 0.5)]
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(data))
    out = safe_pickle_load(tmp_path / "ok.pkl")
    assert out[1:] == data[1:] and np.array_equal(out[0], data[0])


# ----- standard layouts: declared encodings -----------------------------------------------------------
def test_grabcut_layout_cases(tmp_path):
    ok = _square()
    ok[9, 15:45] = 128  # ignore band
    vals = np.zeros((48, 64), np.uint8)
    vals[10:20, 10:20], vals[20:30, 10:20], vals[30:40, 10:20] = 1, 2, 7
    noisy = _square()
    noisy[0:10, :] = 200  # 640 px of an undeclared value next to a 600 px object
    _grabcut(tmp_path, {"ok": ok, "bg": np.zeros((48, 64), np.uint8), "vals": vals, "noisy": noisy})
    _write(tmp_path / "GrabCut" / "data_GT" / "deep.jpg", _photo()[..., ::-1])
    _write(tmp_path / "GrabCut" / "boundary_GT" / "deep.png", _square(value=255, dtype=np.uint16))
    ds = get_dataset("grabcut", tmp_path)
    assert ds.ids() == ["bg", "deep", "noisy", "ok", "vals"] and len(ds) == 5  # nothing vanishes
    s = ds[3]
    assert (s.gt == 1).sum() == 600 and (s.gt == -1).sum() == 30
    expect = {
        0: r"bg: mask .*bg\.bmp: empty object: no value > 128 in channel 0 \(values found: 0\); expected 8-bit gray",
        1: r"deep: mask .*deep\.png: 16-bit gray \(Pillow mode I;16\), expected 8-bit gray, channel 0: 0 background, "
           r"255 object, 128 ignore band",
        2: r"noisy: mask .*noisy\.bmp: 640 pixel\(s\) with values 200 outside the declared 0, 128, 255",
        4: r"vals: mask .*vals\.bmp: empty object: no value > 128 in channel 0 \(values found: 0, 1, 2, 7\)",
    }
    for i, pattern in expect.items():
        with pytest.raises(InvalidSampleError, match=pattern) as e:
            ds[i]
        assert e.value.sample_id == ds.ids()[i] and _one_line(e.value)
        with pytest.raises(InvalidSampleError):
            ds.validate(i)
    ds.validate(3)
    assert sorted(ds.invalid()) == ["bg", "deep", "noisy", "vals"]
    problems = ds.check()
    assert len(problems) == 4 and all("\n" not in p for p in problems)
    rep = check_datasets(tmp_path, ["grabcut"])["grabcut"]
    assert rep["invalid"] == 4 and rep["instances"] == 5


def test_berkeley_antialiasing_accepted(tmp_path):
    m = np.zeros((48, 64, 3), np.uint8)
    m[10:30, 15:45] = 255
    m[30, 20:26] = 197  # six anti-aliased edge pixels, as in the real mask 8023
    m[11, 16] = (255, 0, 255)  # a few unequal-channel pixels, as in the real 101087 (channel 0 is read)
    d = tmp_path / "Berkeley"
    _write(d / "images" / "8023.jpg", _photo()[..., ::-1])
    _write(d / "masks" / "8023.png", m)
    ds = get_dataset("berkeley", tmp_path)
    assert (ds[0].gt == 1).sum() == 606 and ds.check() == []


def test_truncated_image_in_evaluation(tmp_path):
    _grabcut(tmp_path, {"a": _square(), "b": _square()})
    _truncate(tmp_path / "GrabCut" / "data_GT" / "b.jpg")
    ds = get_dataset("grabcut", tmp_path)
    assert ds[0].gt.sum() == 600
    with pytest.raises(InvalidSampleError, match=r"b: image .*b\.jpg: truncated or corrupt JPEG file"):
        ds[1]
    assert len(ds.check()) == 1


def test_other_layouts_refuse_bad_masks(tmp_path):
    # DAVIS: 16-bit, empty; COCO_MVal: JPEG-like noise; BraTS empty; ssTEM empty; OAI-ZIB 16-bit
    for folder, img, gt in (("DAVIS", "img", "gt"), ("COCO_MVal", "img", "gt")):
        _write(tmp_path / folder / img / "a.jpg", _photo()[..., ::-1])
        _write(tmp_path / folder / gt / "a.png", _square(value=1000, dtype=np.uint16))
        _write(tmp_path / folder / img / "b.jpg", _photo()[..., ::-1])
        noise = _square()
        noise[30:, :] = np.random.default_rng(0).integers(1, 30, (18, 64))
        _write(tmp_path / folder / gt / "b.png", noise)
        _write(tmp_path / folder / img / "c.jpg", _photo()[..., ::-1])
        pal = Image.fromarray((_square() > 0).astype(np.uint8), mode="P")  # DAVIS-2017 style palette mask
        pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        pal.save(tmp_path / folder / gt / "c.png")
        ds = get_dataset(folder.lower(), tmp_path)
        with pytest.raises(InvalidSampleError, match=r"a: mask .*a\.png: 16-bit"):
            ds[0]
        with pytest.raises(InvalidSampleError, match=r"b: mask .*b\.png: \d+ pixel\(s\) with values 1, 2, .*outside"):
            ds[1]
        assert ds[2].gt.sum() == 600  # one object value (palette colour 128) is fine
    _write(tmp_path / "BraTS" / "image" / "s.png", _photo()[..., ::-1])
    _write(tmp_path / "BraTS" / "annotation" / "s.png", np.zeros((48, 64), np.uint8))
    with pytest.raises(InvalidSampleError, match=r"s: mask .*s\.png: empty object"):
        get_dataset("brats", tmp_path)[0]
    _write(tmp_path / "ssTEM" / "raw" / "00.tif", _photo()[..., 0])
    _write(tmp_path / "ssTEM" / "mitochondria" / "00.png", np.zeros((48, 64), np.uint8))
    _write(tmp_path / "ssTEM" / "raw" / "01.tif", _photo()[..., 0])
    _write(tmp_path / "ssTEM" / "mitochondria" / "01.png", _square())
    ds = get_dataset("sstem", tmp_path)
    assert ds.ids() == ["00", "01#1"]  # the empty section stays visible
    with pytest.raises(InvalidSampleError, match=r"00: mask .*00\.png: empty object"):
        ds[0]
    _write(tmp_path / "OAIZIB/test/image/x.png", _photo()[..., ::-1])
    _write(tmp_path / "OAIZIB/test/annotations/x.png", _square(value=2, dtype=np.uint16))
    ds = get_dataset("oaizib", tmp_path)
    assert ds.ids() == ["x"]
    with pytest.raises(InvalidSampleError, match="16-bit"):
        ds[0]


def test_sbd_and_voc_refuse_bad_masks(tmp_path):
    d = tmp_path / "SBD"
    for sub in ("img", "inst"):
        (d / sub).mkdir(parents=True)
    for stem, seg in (("a", _square(value=1)), ("b", np.zeros((48, 64), np.uint8))):
        _write(d / "img" / f"{stem}.jpg", _photo()[..., ::-1])
        scipy.io.savemat(d / "inst" / f"{stem}.mat", {"GTinst": {"Segmentation": seg}})
    (d / "val.txt").write_text("a\nb\n")
    ds = get_dataset("sbd", tmp_path)
    assert ds.ids() == ["a#1", "b"]
    with pytest.raises(InvalidSampleError, match=r"b: SBD instance file .*b\.mat: no instance"):
        ds[1]
    (d / "val.txt").write_text("a\nb\nc\n")
    with pytest.raises(FileNotFoundError, match=r"sbd dataset: .*'c' lacks"):
        get_dataset("sbd", tmp_path)
    assert len(get_dataset("sbd", tmp_path, strict=False).check()) == 2  # listing + empty instance map
    v = tmp_path / "PascalVOC"
    _write(v / "JPEGImages" / "x.jpg", _photo()[..., ::-1])
    _write(v / "SegmentationObject" / "x.png", np.dstack([_square(value=7)] * 3))  # colour (7,7,7): off-palette
    (v / "ImageSets" / "Segmentation").mkdir(parents=True)
    (v / "ImageSets" / "Segmentation" / "val.txt").write_text("x\n")
    ds = get_dataset("pascalvoc", tmp_path)
    assert ds.ids() == ["x"]
    with pytest.raises(InvalidSampleError, match=r"colour \(7, 7, 7\) is not in the VOC palette"):
        ds[0]


# ----- folder: explicit modes -------------------------------------------------------------------------
def test_folder_empty_mask_and_antialiased_pixels(tmp_path):
    aa = _square()
    aa[40, 5:8] = 170  # three anti-aliased pixels away from the object
    masks = {"a": _square(), "b": _square(), "c": np.zeros((48, 64), np.uint8), "d": aa}
    _folder(tmp_path, masks)
    ds = get_dataset("folder", tmp_path)  # binary by default
    assert ds.ids() == ["a", "b", "c", "d"] and len(ds) == 4  # N stays 4
    with pytest.raises(InvalidSampleError, match=r"c: mask .*c\.png: empty object: no value > 0 .*values found: 0\)"):
        ds[2]
    assert (ds[3].gt == 1).sum() == 603  # binary: value > 127, the 170s are object
    inst = get_dataset("folder", tmp_path, mode="instances")
    assert inst.ids() == ["a#255", "b#255", "c", "d#170", "d#255"]
    with pytest.raises(InvalidSampleError, match=r"d#170: instance 170 of mask .*d\.png has 3 pixel\(s\), fewer "
                                                 r"than min_area=10"):
        inst[3]
    with pytest.raises(InvalidSampleError, match=r"c: mask .*c\.png: no instance"):
        inst[2]
    assert inst[4].gt.sum() == 600
    assert sorted(inst.invalid()) == ["c", "d#170"]
    assert get_dataset("folder", tmp_path, mode="instances", min_area=0).invalid().keys() == {"c"}
    rep = check_datasets(tmp_path, ["folder"], {"mode": "instances"})["folder"]
    assert rep["instances"] == 5 and rep["invalid"] == 2


def test_folder_mask_formats(tmp_path):
    sq = _square() > 0
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., :3] = 90  # colour content is irrelevant: the alpha channel is the mask
    rgba[..., 3] = sq * 255
    rgba[30:32, 15:45, 3] = 128  # half-transparent edge: 128 > 127 -> object
    colour = np.zeros((48, 64, 3), np.uint8)
    colour[sq] = (0, 0, 200)  # BGR: a red object on black
    pal = Image.fromarray(sq.astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    one_bit = Image.fromarray(sq).convert("1")
    _folder(tmp_path, {"bin01": sq.astype(np.uint8), "bin255": sq.astype(np.uint8) * 255, "rgba": rgba,
                       "colour": colour, "pal": pal, "onebit": one_bit, "gray16": (sq * 40000).astype(np.uint16)})
    ds = get_dataset("folder", tmp_path)
    sums = {ds.ids()[i]: int(ds[i].gt.sum()) for i in range(len(ds))}
    assert sums == {"bin01": 600, "bin255": 600, "colour": 600, "gray16": 600, "onebit": 600, "pal": 600, "rgba": 660}
    assert ds.check() == []
    thr = get_dataset("folder", tmp_path, threshold=150)
    assert thr[thr.ids().index("rgba")].gt.sum() == 600
    inst = get_dataset("folder", tmp_path, mode="instances")
    with pytest.raises(InvalidSampleError, match=r"colour: mask .*colour\.png: RGB colours"):
        inst[inst.ids().index("colour")]


def test_folder_instances_ids_components_ignore(tmp_path):
    ids = np.zeros((48, 64), np.uint16)
    ids[2:12, 2:12], ids[20:30, 20:40], ids[40:46, 50:60] = 3, 1000, 3  # id 3 in two pieces
    ids[0, :] = 255  # void
    _folder(tmp_path, {"m": ids})
    ds = get_dataset("folder", tmp_path, mode="instances", ignore_value=255)
    assert ds.ids() == ["m#3", "m#1000"]
    s = ds[0]
    assert (s.gt == 1).sum() == 160 and (s.gt == -1).sum() == 64
    comp = get_dataset("folder", tmp_path, mode="instances", components=True, ignore_value=255)
    assert comp.ids() == ["m#1", "m#2", "m#3"] and [int(comp[i].gt.clip(0).sum()) for i in range(3)] == [100, 60, 200]
    for bad, match in (({"mode": "auto"}, "mode: expected one of binary, instances"),
                       ({"mode": "instances", "threshold": 3}, "threshold: only applies"),
                       ({"components": True}, "components: only applies"), ({"min_area": -1}, "min_area")):
        with pytest.raises(ValueError, match=match):
            get_dataset("folder", tmp_path, **bad)


def test_split_files_deterministic():
    files = [f"img_{i:03d}.jpg" for i in range(50)]
    train, val = split_files(files, 0.2, seed=7)
    assert len(val) == 10 and len(train) == 40 and set(train) | set(val) == set(files) and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)  # input order kept
    shuffled = list(np.random.default_rng(0).permutation(files))
    assert set(split_files(shuffled, 0.2, seed=7)[1]) == set(val)  # listing order does not matter
    renamed = [f.replace(".jpg", ".png") for f in files]  # nor do extensions
    assert [v.replace(".png", ".jpg") for v in split_files(renamed, 0.2, seed=7)[1]] == val
    assert split_files(files, 0.2, seed=8)[1] != val
    assert len(split_files(files[:3], 0.01)[1]) == 1 and len(split_files(files[:3], 0.99)[1]) == 2
    assert split_files(files, 0.2, seed=7) == (train, val)  # the sha256 ranking is fixed, not per process
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            split_files(files, bad)
    with pytest.raises(ValueError, match="cannot split 1"):
        split_files(files[:1], 0.5)
    with pytest.raises(ValueError, match="share the stem 'a'"):
        split_files(["a.jpg", "a.png"], 0.5)


def test_folder_split_train_and_eval_agree(tmp_path):
    _folder(tmp_path, {f"s{i}": _square() for i in range(10)})
    train = FolderTrain(tmp_path, val_fraction=0.3, split_seed=1)
    val = get_dataset("folder", tmp_path, val_fraction=0.3, split_seed=1)
    t_ids, v_ids = [p.stem for p in train.pairs], val.ids()
    assert len(t_ids) == 7 and len(v_ids) == 3 and not set(t_ids) & set(v_ids)
    assert sorted(t_ids + v_ids) == sorted(f"s{i}" for i in range(10))
    assert get_dataset("folder", tmp_path, val_fraction=0.3, split_seed=1, split="train").ids() == t_ids
    assert get_dataset("folder", tmp_path, files=v_ids).ids() == v_ids
    with pytest.raises(ValueError, match="split: 'val' needs val_fraction"):
        get_dataset("folder", tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match="'nope'"):
        FolderTrain(tmp_path, files=["nope"])


def test_folder_unpaired_is_dataset_error(tmp_path):
    _folder(tmp_path, {"a": _square()})
    _write(tmp_path / "images" / "b.jpg", _photo()[..., ::-1])
    with pytest.raises(FileNotFoundError, match=r"folder dataset: image without mask: .*b\.jpg"):
        get_dataset("folder", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"FolderTrain: image without mask: .*b\.jpg"):
        FolderTrain(tmp_path)


# ----- training sources -------------------------------------------------------------------------------
def test_folder_train_modes(tmp_path):
    sq = _square() > 0
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., 3] = sq * 255
    ids = np.zeros((48, 64), np.uint8)
    ids[2:12, 2:12], ids[20:30, 20:40], ids[0] = 1, 2, 200
    _folder(tmp_path / "bin", {"a": sq.astype(np.uint8), "b": sq.astype(np.uint8) * 255, "c": rgba})
    src = FolderTrain(tmp_path / "bin")
    assert [len(src[i]) for i in range(3)] == [1, 1, 1] and all(np.array_equal(src[i].object_mask(1), sq) for i in range(3))
    _folder(tmp_path / "ids", {"m": ids})
    s = FolderTrain(tmp_path / "ids", mode="instances", ignore_value=200)[0]
    assert s.object_ids == [1, 2] and s.ignore.sum() == 64 and s.object_mask(2).sum() == 200
    assert check_train_source(src) == []


def test_truncated_jpeg_and_empty_mask_in_training(tmp_path):
    _folder(tmp_path, {"a": _square(), "b": _square(), "c": np.zeros((48, 64), np.uint8)})
    _truncate(tmp_path / "images" / "b.jpg")
    src = FolderTrain(tmp_path)
    with pytest.raises(InvalidSampleError, match=r"b: image .*b\.jpg: truncated"):
        src[1]
    problems = check_train_source(src, workers=2)
    assert len(problems) == 2 and "b.jpg: truncated" in problems[0] and "c.png: empty object" in problems[1]
    with pytest.raises(IISError, match=r"training data: 2 unusable item\(s\) in FolderTrain: b: image .*b\.jpg") as e:
        require_valid_source(src)
    _one_line(e.value)
    assert len(FolderTrain(tmp_path, allow_empty=True).check()) == 1  # background-only allowed on request
    from iis.lightning.datamodule import IISDataModule

    dm = IISDataModule(source="folder", root=str(tmp_path), augment="none", num_workers=0)
    with pytest.raises(IISError, match="training data: 2 unusable"):
        dm.setup("fit")  # refused before step 1


def test_train_check_is_cached_and_sees_changes(tmp_path, monkeypatch):
    _folder(tmp_path, {"a": _square(), "b": _square()})
    src = FolderTrain(tmp_path)
    calls = []
    real = FolderTrain.check_item
    monkeypatch.setattr(FolderTrain, "check_item", lambda self, i: calls.append(i) or real(self, i))
    assert check_train_source(src) == [] and len(calls) == 2
    assert check_train_source(FolderTrain(tmp_path)) == [] and len(calls) == 2  # unchanged: remembered
    _write(tmp_path / "masks" / "b.png", np.zeros((48, 64), np.uint8))
    problems = check_train_source(FolderTrain(tmp_path))
    assert len(calls) == 4 and len(problems) == 1 and "b.png: empty object" in problems[0]
    assert len(check_train_source(FolderTrain(tmp_path))) == 1  # failures are never remembered


def test_sbd_train_truncated_image(tmp_path):
    for sub in ("img", "inst"):
        (tmp_path / sub).mkdir()
    for stem in ("a", "b"):
        _write(tmp_path / "img" / f"{stem}.jpg", _photo()[..., ::-1])
        scipy.io.savemat(tmp_path / "inst" / f"{stem}.mat", {"GTinst": {"Segmentation": _square(value=1)}})
    (tmp_path / "train.txt").write_text("a\nb\n")
    _truncate(tmp_path / "img" / "b.jpg")
    problems = check_train_source(SBDTrain(tmp_path))
    assert len(problems) == 1 and problems[0].startswith("b: image") and "truncated" in problems[0]


def test_real_data_counts(data_root):
    # documented counts (`iis-data check` on the real sets is tested in tests/cli/test_data_cli.py)
    assert [len(get_dataset(n, data_root)) for n in ("grabcut", "berkeley", "sstem")] == [50, 100, 391]


def test_real_images_decode_as_the_reference(data_root):
    for p in sorted((data_root / "GrabCut" / "data_GT").iterdir())[:12] + [data_root / "ssTEM/raw/00.tif"]:
        np.testing.assert_array_equal(read_image(p), cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))


def test_encoding_describe():
    assert FolderEncoding().describe() == "binary (value > 127, or > 0 for 0/1 masks), min_area 10"
    assert FolderEncoding("instances", ignore_value=255, components=True).describe() == \
        "instances (4-connected components of each non-zero value), ignore 255, min_area 10"
