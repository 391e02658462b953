"""``iis-data prepare cocolvis``: the official LVIS v1 + COCO panoptic 2017 files -> RITM's packed C+L layout.

Output (protocol.md §C.3; read by `iis.data.train.CocoLvis`)::

    out/{split}/images/<12-digit id>.jpg      symlink to (or copy of) the COCO image
    out/{split}/masks/<id>.pickle             (PNG-encoded uint8 layers, objs_mapping)
    out/{split}/hannotation.pickle            {id: {'num_instance_masks': N, 'hierarchy': {...}}}
    out/{split}/MANIFEST.sha256               sha256sum of everything above

The per-image rules are in `iis.data.prepare.merge`. Images are processed independently by a process
pool; each one's outputs are written atomically and then appended to a done-list, so a killed run
resumes where it stopped and ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..io import read_mask, safe_pickle_load
from .manifest import MANIFEST_NAME, write_manifest
from .merge import MIN_AREA, dump_pickle, encode_layers, merge_image

__all__ = ["prepare_cocolvis", "CocoLvisReport", "STATE_NAME"]

STATE_NAME = ".prepare_state.jsonl"  # header line (settings), then one line per finished image


@dataclass
class CocoLvisReport:
    """What `prepare_cocolvis` did. ``stuff`` is None when the split was already complete."""

    split_dir: Path
    images: int = 0
    instances: int = 0
    stuff: int | None = 0
    empty: int = 0  # matched images without any instance (left out, as RITM)
    unmatched: int = 0  # LVIS images without a COCO panoptic counterpart
    remaining: int = 0  # images not processed yet (``limit``)
    problems: list[str] = field(default_factory=list)
    manifest: Path | None = None

    @property
    def complete(self) -> bool:
        return not self.problems and self.remaining == 0


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _place_image(src: Path, dst: Path, copy: bool) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    if copy:
        shutil.copyfile(src, tmp)
    else:
        os.symlink(src.resolve(), tmp)
    os.replace(tmp, dst)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which terminates the pool


def _process(task: dict) -> dict:
    """Worker: one image -> masks pickle + image link; returns the done-record (or an error)."""
    sid = task["id"]
    try:
        png = read_mask(task["png"]).bgr  # strict; BGR as cv2.imread(IMREAD_COLOR), what RITM decodes
        src = Path(task["image"])
        if not src.is_file():
            raise FileNotFoundError(f"image not found: {src}")
        with Image.open(src) as im:  # header only: catches a wrong --images folder cheaply
            if im.size != (task["w"], task["h"]):
                raise ValueError(f"image {src} is {im.size[1]}x{im.size[0]}, annotations say {task['h']}x{task['w']}")
        masks, n_inst, hier = merge_image(task["lvis"], task["h"], task["w"], png, task["segments"],
                                          task["rasterizer"], task["min_area"])
        if not masks:
            return {"id": sid, "empty": True}
        split_dir = Path(task["split_dir"])
        _place_image(src, split_dir / "images" / f"{sid}.jpg", task["copy"])
        _atomic_write(split_dir / "masks" / f"{sid}.pickle", dump_pickle(encode_layers(masks)))
        return {"id": sid, "n": n_inst, "s": len(masks) - n_inst, "h": [hier[k] for k in range(n_inst)]}
    except Exception as e:  # reported per image; the run goes on
        return {"id": sid, "error": f"{sid}: {type(e).__name__}: {e}"}


def _find(candidates: list[Path], what: str, kind: str = "file") -> Path:
    for p in candidates:
        if (p.is_file() if kind == "file" else p.is_dir()):
            return p
    raise FileNotFoundError(f"{what}: expected {kind} {candidates[0]} (also looked for "
                            f"{', '.join(map(str, candidates[1:])) or 'nothing else'})")


def _load_json(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot parse JSON {path}: {e}") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: expected keys {list(keys)}, missing {missing}")
    return data


def _build_tasks(lvis: Path, panoptic: Path, images: Path, split: str) -> tuple[list[dict], int]:
    """Reads the official files and matches LVIS and panoptic images by file stem (RITM)."""
    lvis_json = lvis if lvis.is_file() else _find([lvis / f"lvis_v1_{split}.json", lvis / "annotations" /
                                                   f"lvis_v1_{split}.json"], "--lvis")
    pan_json = _find([panoptic / "annotations" / f"panoptic_{split}2017.json", panoptic / f"panoptic_{split}2017.json"],
                     "--coco-panoptic")
    pan_png = _find([panoptic / f"panoptic_{split}2017", panoptic / "annotations" / f"panoptic_{split}2017"],
                    "--coco-panoptic PNG folder (unzip annotations/panoptic_*2017.zip)", "dir")
    img_dir = _find([images / f"{split}2017", images], f"--images (COCO {split}2017 folder)", "dir")
    data = _load_json(lvis_json, ("images", "annotations"))
    segs: dict[int, list] = {}
    for a in data["annotations"]:
        segs.setdefault(a["image_id"], []).append(a["segmentation"])  # annotation order (dedupe rule)
    lv = {}
    for im in data["images"]:
        name = im.get("file_name") or im.get("coco_url")
        if not name:
            raise ValueError(f"{lvis_json}: image {im.get('id')} has neither file_name nor coco_url")
        lv[Path(str(name).split("/")[-1]).stem] = (int(im["height"]), int(im["width"]), segs.get(im["id"], []))
    del data, segs
    pan = _load_json(pan_json, ("images", "annotations", "categories"))
    is_thing = {c["id"]: bool(c.get("isthing", 0)) for c in pan["categories"]}
    img_names = {im["id"]: im["file_name"] for im in pan["images"]}
    tasks, matched = [], set()
    for a in pan["annotations"]:
        stem = Path(a["file_name"]).stem
        if stem not in lv:
            continue
        h, w, lsegs = lv[stem]
        matched.add(stem)
        try:
            segments = [(int(s["id"]), is_thing[s["category_id"]]) for s in a["segments_info"]]
        except KeyError as e:
            raise ValueError(f"{pan_json}: image {stem}: segment with unknown category {e}") from None
        tasks.append({"id": stem, "h": h, "w": w, "lvis": lsegs, "segments": segments,
                      "png": str(pan_png / a["file_name"]),
                      "image": str(img_dir / img_names.get(a["image_id"], f"{stem}.jpg"))})
    if not tasks:
        raise ValueError(f"no image of {lvis_json} matches one of {pan_json} by file stem "
                         f"(are they the same split?)")
    tasks.sort(key=lambda t: t["id"])
    return tasks, len(set(lv) - matched)


def _read_state(path: Path, settings: dict) -> dict[str, dict]:
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0])["settings"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: unreadable resume state; rerun with --force to start over") from None
    if header != settings:
        raise ValueError(f"{path}: an unfinished run used other settings {header}; rerun with --force to "
                         f"start over with {settings}")
    done = {}
    for ln in lines[1:]:
        try:
            rec = json.loads(ln)
            done[rec["id"]] = rec
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill: that image is redone
    return done


def _write_state(path: Path, settings: dict, done: dict[str, dict]) -> None:
    text = "".join(json.dumps(x, sort_keys=True) + "\n" for x in [{"settings": settings}, *done.values()])
    _atomic_write(path, text.encode())


def _node(n: dict | None) -> dict | None:
    """A hierarchy node with RITM's key order, whether it comes from a worker or from the JSON done-list."""
    if n is None:
        return None
    return {"children": [int(c) for c in n["children"]], "parent": None if n["parent"] is None else int(n["parent"]),
            "node_level": int(n["node_level"])}


def prepare_cocolvis(lvis: str | Path, coco_panoptic: str | Path, images: str | Path, out: str | Path,
                     split: str = "train", *, workers: int | None = None, copy_images: bool = False,
                     rasterizer: str = "ritm", min_area: int = MIN_AREA, limit: int | None = None,
                     force: bool = False, manifest: bool = True, progress: bool = True) -> CocoLvisReport:
    """Builds ``out/{split}/{images,masks,hannotation.pickle}`` (RITM packed layout) from the official files.

    Resumable: each image's outputs are written atomically and then recorded in
    ``out/{split}/.prepare_state.jsonl``; a rerun skips recorded images. ``hannotation.pickle`` is written
    (atomically) once every image has been processed; the state file is removed when nothing failed.

    Args:
        lvis: folder with ``lvis_v1_{split}.json`` (or the file).
        coco_panoptic: folder with ``annotations/panoptic_{split}2017.json`` and ``panoptic_{split}2017/*.png``.
        images: COCO ``{split}2017`` image folder (or its parent).
        out: output root (the ``root`` of `iis.data.train.CocoLvis`).
        workers: processes (default: CPU count, at most 8); 1 runs in this process.
        copy_images: copy the JPEGs instead of symlinking them.
        rasterizer: ``'ritm'`` (cv2.fillPoly, reference) or ``'coco'`` (pycocotools).
        limit: process at most this many new images now (a trial run; rerun to continue).
        force: discard earlier outputs of this split and start over.
        manifest: write ``out/{split}/MANIFEST.sha256`` when complete.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
    split_dir = Path(out) / split
    state_path, anno_path = split_dir / STATE_NAME, split_dir / "hannotation.pickle"
    report = CocoLvisReport(split_dir)
    if force:
        for sub in ("images", "masks"):
            shutil.rmtree(split_dir / sub, ignore_errors=True)
        for p in (state_path, anno_path, split_dir / MANIFEST_NAME):
            p.unlink(missing_ok=True)
    if anno_path.is_file() and not state_path.exists():  # finished earlier
        anno = safe_pickle_load(anno_path)
        report.images, report.stuff = len(anno), None
        report.instances = sum(int(v["num_instance_masks"]) for v in anno.values())
        return report
    settings = {"split": split, "rasterizer": rasterizer, "min_area": min_area, "copy_images": copy_images}
    if rasterizer not in ("ritm", "coco"):
        raise ValueError(f"rasterizer: expected 'ritm' or 'coco', got {rasterizer!r}")
    tasks, report.unmatched = _build_tasks(Path(lvis), Path(coco_panoptic), Path(images), split)
    for sub in ("images", "masks"):
        (split_dir / sub).mkdir(parents=True, exist_ok=True)
        for tmp in (split_dir / sub).glob(".*.tmp-*"):  # left by a killed run
            tmp.unlink()
    done = _read_state(state_path, settings) if state_path.exists() else {}
    _write_state(state_path, settings, done)  # drops a half-written last line
    todo = [dict(t, split_dir=str(split_dir), copy=copy_images, rasterizer=rasterizer, min_area=min_area)
            for t in tasks if t["id"] not in done]
    if limit is not None:
        report.remaining, todo = max(0, len(todo) - limit), todo[:limit]
    workers = min(8, os.cpu_count() or 1) if workers is None else max(1, workers)
    with open(state_path, "a") as state, tqdm(total=len(todo), desc=f"cocolvis {split}", unit="img",
                                               disable=not progress) as bar:
        if workers == 1 or len(todo) < 2:
            results = map(_process, todo)
            pool = None
        else:
            pool = mp.get_context().Pool(workers, initializer=_ignore_sigint)
            results = pool.imap_unordered(_process, todo, chunksize=4)
        try:
            for rec in results:
                bar.update()
                if "error" in rec:
                    report.problems.append(rec["error"])
                    continue
                done[rec["id"]] = rec
                state.write(json.dumps(rec, sort_keys=True) + "\n")
                state.flush()
        finally:
            if pool is not None:
                pool.terminate()
    known = {t["id"] for t in tasks}
    recs = [done[k] for k in sorted(done) if k in known and not done[k].get("empty")]
    report.empty = sum(1 for k in done if k in known and done[k].get("empty"))
    report.images, report.instances = len(recs), sum(r["n"] for r in recs)
    report.stuff = sum(r["s"] for r in recs)
    if report.remaining:
        return report
    anno = {r["id"]: {"num_instance_masks": r["n"], "hierarchy": {k: _node(n) for k, n in enumerate(r["h"])}}
            for r in recs}
    _atomic_write(anno_path, dump_pickle(anno))
    if not report.problems:
        state_path.unlink()
        if manifest:
            report.manifest = write_manifest(split_dir, workers=workers, progress=progress)
    return report
