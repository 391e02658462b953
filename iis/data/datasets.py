"""Registry of evaluation datasets by lower-case CLI name (protocol.md §B).

``get_dataset(name, root)`` takes the *data root* that holds the standard folders::

    <root>/GrabCut/{data_GT,boundary_GT}    <root>/Berkeley/{images,masks}
    <root>/DAVIS/{img,gt}                   <root>/COCO_MVal/{img,gt}
    <root>/SBD/{img,inst,train.txt,val.txt} (or <root>/SBD/benchmark_RELEASE/dataset/...)
    <root>/PascalVOC/{JPEGImages,SegmentationObject,ImageSets/Segmentation/val.txt}
    <root>/ssTEM/{raw,mitochondria}         <root>/BraTS/{image,annotation}
    <root>/OAIZIB/test/{image,annotations}  (or <root>/OAIZIB/iseg_slices/test/...)

``folder`` takes the folder itself (``images/`` + ``masks/``); ``synthetic`` needs no root.
Nothing is ever written into a dataset folder: multi-instance indexes are cached in the user
cache dir (see :func:`iis.data.readers.base.index_cache_dir`).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

from .folder import DEFAULT_MIN_AREA
from .readers.base import EvalDataset
from .readers.paired import (
    FolderDataset,
    PairedFolderDataset,
    decode_channel0_binary,
    decode_components,
    decode_davis,
    decode_grabcut,
    decode_label_map,
)
from .readers.splits import PascalVOCDataset, SBDDataset
from .synthetic import SyntheticDataset

__all__ = ["EvalDataset", "get_dataset", "list_datasets", "register_dataset", "available_datasets", "check_datasets",
           "check_dataset", "dataset_options", "parse_dataset_args", "DATASET_DIRS", "EXPECTED_INSTANCES"]

Factory = Callable[..., EvalDataset]
_REGISTRY: dict[str, Factory] = {}

# Folder(s) under the data root, first one is the canonical name reported when missing.
DATASET_DIRS: dict[str, tuple[str, ...]] = {
    "grabcut": ("GrabCut",),
    "berkeley": ("Berkeley",),
    "davis": ("DAVIS",),
    "coco_mval": ("COCO_MVal",),
    "sbd": ("SBD", "SBD/benchmark_RELEASE/dataset"),
    "sbd_train": ("SBD", "SBD/benchmark_RELEASE/dataset"),
    "pascalvoc": ("PascalVOC", "PascalVOC/VOCdevkit/VOC2012", "PascalVOC/VOC2012"),
    "sstem": ("ssTEM",),
    "brats": ("BraTS",),
    # SimpleClick's OAIZIB_PATH is `.../OAI-ZIB/iseg_slices`, holding test/{image,annotations}
    "oaizib": ("OAIZIB/test", "OAIZIB/iseg_slices/test", "OAI-ZIB/iseg_slices/test"),
}
# Instance counts of the standard releases (protocol.md §0.10 and §B); a different count means an
# incomplete or different copy, which changes NoC.
EXPECTED_INSTANCES: dict[str, int] = {
    "grabcut": 50, "berkeley": 100, "davis": 345, "coco_mval": 800, "sbd": 6671, "pascalvoc": 3417,
}
# A file or folder that must exist inside a candidate for it to be chosen.
_MARKERS = {"sbd": "inst", "sbd_train": "inst", "pascalvoc": "JPEGImages", "oaizib": "image"}


def register_dataset(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(root: Path | None, **kw) -> EvalDataset`` under ``name``."""
    key = _norm(name)

    def deco(fn: Factory) -> Factory:
        if key in _REGISTRY:
            raise ValueError(f"dataset {key!r} is already registered")
        _REGISTRY[key] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    """Registered dataset names (lower case)."""
    return sorted(_REGISTRY)


def get_dataset(name: str, root: str | Path | None = None, **kw: Any) -> EvalDataset:
    """Build an evaluation dataset.

    Args:
        name: registry name, case-insensitive (``"GrabCut"`` == ``"grabcut"``).
        root: data root holding the standard folders; the folder itself for ``folder``; ignored for
            ``synthetic``. None falls back to ``$IIS_DATA_ROOT``.
        **kw: reader options (``split``, ``cache``, ``strict``; ``folder``: ``mode``, ``threshold``,
            ``ignore_value``, ``min_area``, ``components``, ``split``, ``val_fraction``, ``split_seed``,
            ``files``; ``synthetic``: ``num_samples``, ``size``, ``seed``, ``ignore_band``).

    Raises:
        ValueError: unknown name (the message lists the valid ones), bad options or no root given.
        FileNotFoundError: the dataset folder is missing (the message names the path expected), or
            files lack their counterpart (unless ``strict=False``).
        IISError: other dataset-level problems (duplicated stems), one line.
    """
    key = _norm(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    if root is None and key != "synthetic":
        env = os.environ.get("IIS_DATA_ROOT")
        if not env:
            raise ValueError(f"root: dataset {key!r} needs a data root (argument or $IIS_DATA_ROOT)")
        root = env
    factory = _REGISTRY[key]
    try:
        inspect.signature(factory).bind(root, **kw)
    except TypeError as e:
        raise ValueError(f"dataset {key!r}: bad options {sorted(kw)} ({e}); "
                         f"accepted: {list(inspect.signature(factory).parameters)[1:]}") from None
    return factory(Path(root) if root is not None else None, **kw)


def check_dataset(ds: EvalDataset) -> dict[str, Any]:
    """Fully decode one dataset built with ``strict=False``: every problem, one line each.

    Returns:
        ``{"root", "images", "instances", "invalid", "problems"}``: unpaired files, every instance that
        loading would refuse (``invalid``: how many) and an instance count that differs from
        :data:`EXPECTED_INSTANCES` are problems.
    """
    rep: dict[str, Any] = {"root": str(ds.root), "images": ds.num_images, "instances": len(ds), "invalid": 0,
                           "problems": ds.dataset_problems()}
    bad = ds.invalid()
    rep["invalid"] = len(bad)
    rep["problems"] += [f"{sid}: {why}" for sid, why in bad.items()]
    exp = EXPECTED_INSTANCES.get(ds.name)
    if exp is not None and rep["instances"] != exp:
        rep["problems"].append(f"{ds.name}: {rep['instances']} instances, the standard release has {exp}")
    return rep


def check_datasets(root: str | Path, names: list[str] | None = None,
                   options: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Open and fully decode datasets under ``root``, for ``iis-data check``: everything ``iis-eval``
    would refuse is reported, nothing raises for bad data.

    Args:
        root: data root (for ``folder``: the folder itself, as in ``iis-eval``).
        names: datasets to check; None checks every standard evaluation dataset whose folder exists
            (not ``sbd_train``).
        options: reader options passed to every named dataset (e.g. ``{"mode": "instances"}`` for
            ``folder``).

    Returns:
        ``{name: report}`` as :func:`check_dataset`; a dataset that cannot be opened (missing folder,
        bad options) has ``root`` None and that error as its problem.
    """
    root = Path(root)
    if names is None:
        names = [n for n in available_datasets(root) if n not in ("synthetic", "sbd_train")]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        key = _norm(name)
        kw = dict(options or {})
        if key != "synthetic":
            kw["strict"] = False
        try:
            out[key] = check_dataset(get_dataset(key, root, **kw))
        except (FileNotFoundError, ValueError, OSError) as e:
            out[key] = {"root": None, "images": 0, "instances": 0, "invalid": 0, "problems": [str(e)]}
    return out


def parse_dataset_args(items: list[str] | None) -> dict[str, Any]:
    """``["mode=instances", "ignore_value=255", "threshold=none"]`` -> options dict (values read as YAML
    scalars: ints, floats, booleans, ``none``/``null``, ``[a, b]`` lists; anything else stays a string).

    Raises:
        ValueError: an item without ``=`` or with an empty key, or a key given twice.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--dataset-arg: expected KEY=VALUE, got {item!r}")
        if key in out:
            raise ValueError(f"--dataset-arg: {key!r} given twice")
        try:
            val = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            val = raw
        out[key] = None if isinstance(val, str) and val.strip().lower() == "none" else val
    return out


def dataset_options(name: str) -> list[str]:
    """Option names that dataset ``name`` takes (ValueError for an unknown name)."""
    key = _norm(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return list(inspect.signature(_REGISTRY[key]).parameters)[1:]


def available_datasets(root: str | Path) -> list[str]:
    """Names whose standard folder exists under ``root`` (``synthetic`` always; ``folder`` never)."""
    out = []
    for name in list_datasets():
        if name == "folder":
            continue
        if name == "synthetic" or _find_dir(name, Path(root)) is not None:
            out.append(name)
    return out


def _norm(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def _find_dir(name: str, root: Path) -> Path | None:
    marker = _MARKERS.get(name)
    for rel in DATASET_DIRS[name]:
        p = root / rel
        if p.is_dir() and (marker is None or (p / marker).exists()):
            return p
    return None


def _dataset_dir(name: str, root: Path) -> Path:
    found = _find_dir(name, root)
    if found is None:
        tried = " or ".join(str(root / r) for r in DATASET_DIRS[name])
        raise FileNotFoundError(f"{name} dataset: expected folder {root / DATASET_DIRS[name][0]} (looked for {tried})")
    return found


def _paired(name: str, images: str, masks: str, decoder, multi: bool = False) -> None:
    def factory(root: Path, cache: bool = True, strict: bool = True) -> EvalDataset:
        return PairedFolderDataset(name, _dataset_dir(name, root), images, masks, decoder, multi, cache=cache,
                                   strict=strict)

    factory.__doc__ = f"{name}: ``{images}/`` images, ``{masks}/`` masks decoded by ``{decoder.__name__}``."
    register_dataset(name)(factory)


# docs/protocol.md §B, one line per dataset
_paired("grabcut", "data_GT", "boundary_GT", decode_grabcut)  # 50
_paired("berkeley", "images", "masks", decode_grabcut)  # 100 (96 distinct images)
_paired("davis", "img", "gt", decode_davis)  # 345
_paired("coco_mval", "img", "gt", decode_davis)  # 800; [RITM]/[SC] use the DAVIS loader
_paired("brats", "image", "annotation", decode_channel0_binary)
_paired("sstem", "raw", "mitochondria", decode_components, multi=True)
_paired("oaizib", "image", "annotations", decode_label_map, multi=True)


@register_dataset("sbd")
def _sbd(root: Path, split: str = "val", cache: bool = True, strict: bool = True) -> EvalDataset:
    """SBD val: one sample per instance of ``inst/*.mat`` (6671)."""
    return SBDDataset(_dataset_dir("sbd", root), split=split, name="sbd", cache=cache, strict=strict)


@register_dataset("sbd_train")
def _sbd_train(root: Path, cache: bool = True, strict: bool = True) -> EvalDataset:
    """SBD train split, per instance."""
    return SBDDataset(_dataset_dir("sbd_train", root), split="train", name="sbd_train", cache=cache, strict=strict)


@register_dataset("pascalvoc")
def _voc(root: Path, split: str = "val", cache: bool = True, strict: bool = True) -> EvalDataset:
    """PASCAL VOC 2012 val: one sample per instance (3417), void -> ignore."""
    return PascalVOCDataset(_dataset_dir("pascalvoc", root), split=split, name="pascalvoc", cache=cache,
                            strict=strict)


@register_dataset("folder")
def _folder(root: Path, images: str = "images", masks: str = "masks", mode: str = "binary",
            threshold: int | None = None, ignore_value: int | None = None, min_area: int = DEFAULT_MIN_AREA,
            components: bool = False, split: str | None = None, val_fraction: float = 0.0, split_seed: int = 0,
            files: list[str] | None = None, cache: bool = True, strict: bool = True) -> EvalDataset:
    """Your own ``<root>/images`` + ``<root>/masks`` (binary or instance-id masks; see iis.data.folder)."""
    if not root.is_dir():
        raise FileNotFoundError(f"folder dataset: expected folder {root} (not found)")
    return FolderDataset(root, images, masks, mode=mode, threshold=threshold, ignore_value=ignore_value,
                         min_area=min_area, components=components, split=split, val_fraction=val_fraction,
                         split_seed=split_seed, files=files, cache=cache, strict=strict)


@register_dataset("synthetic")
def _synthetic(root: Path | None = None, num_samples: int = 20, size: int | tuple[int, int] = (96, 160),
               seed: int = 0, ignore_band: int = 0) -> EvalDataset:
    """Procedural shapes, no files (root ignored)."""
    return SyntheticDataset(num_samples=num_samples, size=size, seed=seed, ignore_band=ignore_band)
