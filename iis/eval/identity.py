"""The content identity of an evaluation: what produced the instances of an instance log.

``evaluate_dataset`` stores it in the header line of ``<out>/instances/<dataset>.jsonl`` and refuses
to resume a log whose stored identity differs, naming the first field that differs. The identity is
about *content*, not names: a checkpoint retrained into the same path or another copy of a dataset
under another root is a different identity.

* Method: the builder description (name or model spec, kwargs), with every file it names (``ckpt``,
  ``weights``) replaced by the SHA-256 of the file's bytes, hashed once per run, streamed; plus the
  inference options that change numbers: precision, channels-last memory format, torch.compile (the
  evaluation batch size is not there: it changes no number).
* Dataset: reader class, resolved root, the reader's scalar options, and a fingerprint of every file
  the reader reads: relative path, size and modification time (ns). Stat data is chosen over content
  hashes because it is free (one ``stat`` per file, where hashing a large set such as SBD reads
  gigabytes on every resume) and errs on the safe side: rewriting, re-copying or touching a file
  changes it, so resume is refused rather than wrong; only an edit that keeps size and mtime (a
  deliberate ``touch -d``) goes unseen. When ``iis-data checksum`` wrote ``MANIFEST.sha256`` in the
  dataset folder, its SHA-256 (one number naming the whole set's content) is recorded too.
* Protocol (resolved for the dataset) and package version (``iis.__version__``): added by the runner.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["FILE_KEYS", "method_identity", "dataset_identity", "first_difference"]

# description keys whose value is a file path; the identity holds "<key>_sha256" instead
FILE_KEYS = ("ckpt", "weights")


def method_identity(desc: Mapping[str, Any], precision: str | None = None, *, channels_last: bool = False,
                    compile: bool = False) -> dict[str, Any]:
    """``desc`` (from :func:`iis.eval.loading.build_method`) with its file paths replaced by content hashes,
    plus the inference options that change numbers (precision, memory format, torch.compile)."""
    from ..data.prepare.manifest import file_sha256

    out: dict[str, Any] = {}
    for k, v in desc.items():
        if k in FILE_KEYS:
            known = desc.get(f"{k}_sha256")  # build_method may have hashed it already (big files: hash once)
            out[f"{k}_sha256"] = known or (file_sha256(v) if v else None)
        elif not k.endswith("_sha256") or k[:-7] not in FILE_KEYS:
            out[k] = v
    out["precision"] = precision or "fp32"
    # only when set: a log written before these options existed (defaults) still resumes, and a log
    # written with one refuses a run without it ("method.compile: stored true, now absent")
    if channels_last:
        out["channels_last"] = True
    if compile:
        out["compile"] = True
    return out


def _scalar_options(ds: Any) -> dict[str, Any]:
    # reader options (FolderDataset mode/ignore_value, split, thresholds...) change what a sample is
    skip = {"name", "root", "pairs", "multi_instance"}
    out: dict[str, Any] = {}
    for k, v in sorted(vars(ds).items()):
        if k.startswith("_") or k in skip:
            continue
        if v is None or isinstance(v, (str, int, float, bool)):
            out[k] = v
        elif callable(getattr(v, "to_dict", None)):  # an options record such as FolderEncoding
            out.update(v.to_dict())
    return out


def dataset_identity(ds: Any) -> dict[str, Any]:
    """Name, reader, options and file fingerprint of an evaluation dataset (see module docstring).

    A dataset may define ``fingerprint() -> dict`` (JSON-able) to add what the stat data cannot see.
    """
    from ..data.prepare.manifest import MANIFEST_NAME, file_sha256
    from ..data.synthetic import SyntheticDataset

    out: dict[str, Any] = {"name": getattr(ds, "name", type(ds).__name__), "reader": type(ds).__name__}
    hook = getattr(ds, "fingerprint", None)
    if callable(hook):
        out["fingerprint"] = hook()
    if isinstance(ds, SyntheticDataset):  # no files: a function of its parameters (and the package version)
        out["options"] = {"num_samples": ds.num_samples, "size": list(ds.size), "seed": ds.seed,
                          "ignore_band": ds.ignore_band}
        return out
    pairs, root = getattr(ds, "pairs", None), getattr(ds, "root", None)
    if pairs is None or root is None:
        ids = ds.ids() if hasattr(ds, "ids") else [str(i) for i in range(len(ds))]
        out["ids_sha256"] = hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()
        return out
    root = Path(root).resolve()
    extra = getattr(ds, "_fingerprint_extra", lambda: [])()
    files = sorted({Path(f) for p in pairs for f in (p.image, p.mask)} | {Path(f) for f in extra})
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)  # follows symlinks: the identity is the target's
        try:
            rel = f.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = str(f.resolve())
        h.update(json.dumps([rel, st.st_size, st.st_mtime_ns]).encode() + b"\n")
    manifest = root / MANIFEST_NAME
    out.update(root=str(root), options=_scalar_options(ds), files=len(files), files_sha256=h.hexdigest(),
               manifest_sha256=file_sha256(manifest) if manifest.is_file() else None)
    return out


def _short(v: Any) -> str:
    s = json.dumps(v)
    return s if len(s) <= 80 else s[:77] + "..."


def first_difference(stored: Any, current: Any, path: str = "") -> str | None:
    """``"<dotted.field>: stored X, now Y"`` for the first field that differs, or None if equal."""
    if isinstance(stored, dict) and isinstance(current, dict):
        for k in [*stored, *(k for k in current if k not in stored)]:
            sub = f"{path}.{k}" if path else str(k)
            if k not in current:
                return f"{sub}: stored {_short(stored[k])}, now absent"
            if k not in stored:
                return f"{sub}: absent in the stored header, now {_short(current[k])}"
            d = first_difference(stored[k], current[k], sub)
            if d:
                return d
        return None
    if stored != current:
        return f"{path or 'header'}: stored {_short(stored)}, now {_short(current)}"
    return None
