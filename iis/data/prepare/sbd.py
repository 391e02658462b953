"""``iis-data prepare sbd``: checks an SBD download; writes nothing into the dataset folder.

SBD (``benchmark.tgz`` -> ``benchmark_RELEASE/dataset``) is used as it is shipped (protocol.md §B, §C.2):
``img/<id>.jpg``, ``inst/<id>.mat`` (``GTinst.Segmentation``), ``cls/``, ``train.txt``, ``val.txt``.
This step verifies the layout and counts (train 8498 images; val 2857 images, 6671 instances), reads
every instance map, compares its size with the image header, and counts the instances the training
buggy-mask filter drops. With ``checksum=True`` it hashes every file into a SHA-256 manifest stored in
the user cache (``<cache>/manifests/sbd-<digest>.sha256``), never in the dataset folder.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..readers import index_cache_dir
from ..readers.splits import read_sbd_instances
from .cocolvis import _ignore_sigint
from .manifest import build_manifest, format_manifest

__all__ = ["SBD_IMAGES", "SBD_VAL_INSTANCES", "SBDReport", "find_sbd_root", "prepare_sbd", "manifest_cache_dir"]

SBD_IMAGES = {"train": 8498, "val": 2857}  # docs/protocol.md §B / §C.2
SBD_VAL_INSTANCES = 6671  # docs/protocol.md §B (one evaluation sample per instance)
BUGGY_RATIO = 0.08  # RITM SBDDataset: area / bbox area below this is erased at training time (§C.2)


@dataclass
class SBDReport:
    """Counts and problems of an SBD folder (``problems`` empty when it matches the standard release)."""

    root: Path
    images: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    buggy: dict[str, int] = field(default_factory=dict)  # instances below the buggy-mask ratio
    problems: list[str] = field(default_factory=list)
    digest: str | None = None  # SHA-256 of the manifest: one id for the whole folder
    manifest: Path | None = None


def manifest_cache_dir() -> Path:
    """Where manifests of read-only datasets go: next to the readers' index cache (user cache dir)."""
    return index_cache_dir().parent / "manifests"


def find_sbd_root(root: str | Path) -> Path:
    """Accepts ``.../benchmark_RELEASE/dataset``, ``.../benchmark_RELEASE`` or their parent."""
    root = Path(root)
    for cand in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (cand / "inst").is_dir() or (cand / "img").is_dir():
            return cand
    if not root.is_dir():
        raise FileNotFoundError(f"--root: SBD folder not found: {root}")
    raise FileNotFoundError(f"--root: {root} holds no SBD dataset (expected img/ and inst/ in it, in "
                            f"{root / 'dataset'} or in {root / 'benchmark_RELEASE' / 'dataset'})")


def _scan(item: tuple[str, str, str]) -> tuple[str, list[int], int, str | None]:
    """Worker: ``(stem, image, mat)`` -> (stem, instance ids, buggy count, problem or None)."""
    stem, img, mat = item
    try:
        inst = read_sbd_instances(Path(mat))
        with Image.open(img) as im:  # header only
            w, h = im.size
    except (ValueError, OSError) as e:
        return stem, [], 0, str(e)
    if inst.shape != (h, w):
        return stem, [], 0, f"{mat}: instance map is {inst.shape[0]}x{inst.shape[1]}, image {img} is {h}x{w}"
    ids, buggy = [], 0
    for k in np.unique(inst):
        if k <= 0:
            continue
        rows, cols = np.nonzero(inst == k)
        ids.append(int(k))
        buggy += len(rows) / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1)) < BUGGY_RATIO
    return stem, ids, int(buggy), None


def prepare_sbd(root: str | Path, *, checksum: bool = True, workers: int | None = None,
                progress: bool = True) -> SBDReport:
    """Checks an SBD folder; see the module docstring.

    Args:
        root: ``benchmark_RELEASE/dataset`` (or ``benchmark_RELEASE``, or its parent).
        checksum: hash every file and store the manifest in `manifest_cache_dir`.
        workers: processes for reading the ``.mat`` files (default: CPU count, at most 8).
    """
    report = SBDReport(find_sbd_root(root))
    root = report.root
    for sub in ("img", "inst", "cls"):
        if not (root / sub).is_dir():
            report.problems.append(f"missing folder {root / sub}")
    workers = min(8, os.cpu_count() or 1) if workers is None else max(1, workers)
    for split in ("train", "val"):
        split_file = root / f"{split}.txt"
        if not split_file.is_file():
            report.problems.append(f"missing split list {split_file}")
            continue
        stems = [s.strip() for s in split_file.read_text().splitlines() if s.strip()]
        if len(set(stems)) != len(stems):
            report.problems.append(f"{split_file}: {len(stems) - len(set(stems))} duplicated name(s)")
        items = []
        for s in dict.fromkeys(stems):
            img, mat = root / "img" / f"{s}.jpg", root / "inst" / f"{s}.mat"
            missing = [str(p) for p in (img, mat) if not p.is_file()]
            if missing:
                report.problems.append(f"{split}: {s} lacks {' and '.join(missing)}")
            else:
                items.append((s, str(img), str(mat)))
        report.images[split] = len(items)
        if len(stems) != SBD_IMAGES[split]:
            report.problems.append(f"{split_file}: {len(stems)} images, the standard release has {SBD_IMAGES[split]}")
        pool = mp.get_context().Pool(workers, initializer=_ignore_sigint) if workers > 1 and len(items) > 1 else None
        try:
            results = pool.imap(_scan, items, chunksize=16) if pool else map(_scan, items)
            n_inst = n_buggy = 0
            for stem, ids, buggy, problem in tqdm(results, total=len(items), desc=f"sbd {split}", unit="img",
                                                  disable=not progress):
                if problem:
                    report.problems.append(problem)
                elif not ids:
                    report.problems.append(f"{root / 'inst' / stem}.mat: no instance")
                n_inst, n_buggy = n_inst + len(ids), n_buggy + buggy
        finally:
            if pool is not None:
                pool.terminate()
        report.instances[split], report.buggy[split] = n_inst, n_buggy
    if report.instances.get("val", SBD_VAL_INSTANCES) != SBD_VAL_INSTANCES:
        report.problems.append(f"val: {report.instances['val']} instances, the standard release has "
                               f"{SBD_VAL_INSTANCES}")
    if checksum:
        entries = build_manifest(root, workers=workers, progress=progress)
        report.digest = hashlib.sha256(format_manifest(entries).encode()).hexdigest()
        report.manifest = manifest_cache_dir() / f"sbd-{report.digest[:16]}.sha256"
        if not report.manifest.is_file():
            report.manifest.parent.mkdir(parents=True, exist_ok=True)
            tmp = report.manifest.with_name(f".{report.manifest.name}.tmp-{os.getpid()}")
            tmp.write_text(format_manifest(entries), encoding="utf-8")
            os.replace(tmp, report.manifest)
    return report
