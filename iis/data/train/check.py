"""Training data checked before step 1: every item that training would refuse, one line each.

``require_valid_source(source)`` is what the DataModule calls in ``setup()``; ``iis-data check
--train-source NAME --root DIR`` prints the same list. A successful check is remembered in the user
cache (keyed by the source's options and every file's name, size and mtime), so an unchanged dataset
is decoded once, not at every run start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from iis.core.errors import IISError
from iis.data.readers.base import index_cache_dir
from iis.data.train.datasets import (CocoJsonTrain, CocoLvis, FolderTrain, SBDTrain, SyntheticShapesTrain,
                                     SyntheticTrain, TrainSource)

__all__ = ["TRAIN_SOURCES", "build_train_source", "check_train_source", "require_valid_source"]

log = logging.getLogger(__name__)

# The training sources by name (the ``data.source`` values of IISDataModule).
TRAIN_SOURCES: dict[str, type[TrainSource]] = {
    "synthetic": SyntheticShapesTrain,
    "synthetic_multi": SyntheticTrain,
    "sbd": SBDTrain,
    "cocolvis": CocoLvis,
    "folder": FolderTrain,
    "coco_json": CocoJsonTrain,
}


def build_train_source(name: str, root: str | Path | None = None, **kwargs: Any) -> TrainSource:
    """A training source by name, built like ``IISDataModule`` does (``root`` unused by synthetic and
    ``coco_json``, which takes ``images_dir`` and ``annotation_json``)."""
    if name not in TRAIN_SOURCES:
        raise ValueError(f"source: {name!r} is not one of {', '.join(sorted(TRAIN_SOURCES))}")
    cls = TRAIN_SOURCES[name]
    try:
        if name in ("synthetic", "synthetic_multi", "coco_json"):
            return cls(**kwargs)
        if not root:
            raise ValueError(f"root: required for source {name!r}")
        return cls(root, **kwargs)
    except TypeError as e:  # an option the source does not take
        raise ValueError(f"source {name!r}: bad options {sorted(kwargs)} ({e})") from None


def _check_marker(source: TrainSource) -> Path | None:
    key = source.check_key()
    if key is None:
        return None
    h = hashlib.sha256()
    h.update(json.dumps([1, type(source).__name__, [str(k) for k in key[:-1]]], sort_keys=True).encode())
    try:
        for f in key[-1]:
            st = os.stat(f)
            h.update(f"{Path(f).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return None  # a missing file: the check itself reports it
    return index_cache_dir().parent / "train-check" / f"{type(source).__name__}-{h.hexdigest()[:24]}.ok"


def check_train_source(source: TrainSource, workers: int | None = None, cache: bool = True) -> list[str]:
    """Every item of ``source`` that training would refuse, one line each (empty: all fine).

    Args:
        source: a training source.
        workers: decoding threads (default min(8, CPU count)).
        cache: skip sources whose last check passed with the same options and unchanged files.
    """
    if not getattr(source, "reads_files", True):
        return []
    marker = _check_marker(source) if cache else None
    if marker is not None and marker.is_file():
        return []
    t0 = time.perf_counter()
    problems = source.check(workers)
    log.info("checked %d training items of %s in %.1f s: %d problem(s)", len(source), type(source).__name__,
             time.perf_counter() - t0, len(problems))
    if not problems and marker is not None:
        try:  # best effort: a read-only cache only costs a re-check next time
            marker.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=marker.parent, suffix=".tmp")
            os.close(fd)
            os.replace(tmp, marker)
        except OSError:
            pass
    return problems


def require_valid_source(source: TrainSource, workers: int | None = None) -> None:
    """Raises one-line :class:`IISError` if any training item would be refused (call before step 1)."""
    problems = check_train_source(source, workers)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IISError(f"training data: {len(problems)} unusable item(s) in {type(source).__name__}: "
                       f"{problems[0]}{more}; `iis-data check --train-source ...` lists them all")
