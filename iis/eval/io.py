"""Atomic writes, standard JSON, the ``--out`` lock and run provenance for result files."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from ..core.errors import IISError

__all__ = ["atomic_write_json", "atomic_write_bytes", "atomic_write_text", "json_safe", "dumps", "exclusive_lock",
           "LockedError", "provenance"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make results unreadable to the group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None, numpy scalars as Python numbers and tuples as lists.

    ``json.dumps`` writes NaN as a bare ``NaN`` token, which strict JSON parsers (``jq``, browsers,
    most non-Python readers) reject; a missing number is ``null`` instead.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(obj, "ndim", None) == 0:
        return json_safe(item())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def dumps(obj: Any, **kw: Any) -> str:
    """Standard JSON (never NaN/Infinity tokens); see :func:`json_safe`."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (dumps(obj, indent=1) + "\n").encode())


class LockedError(IISError):
    """Another live process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str = "--out") -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on ``path`` (created, left in place) for the ``with`` block.

    ``fcntl.flock`` (``msvcrt.locking`` on Windows) is tied to the open file, so the operating system
    releases it when the holder exits or is killed: a lock file left behind by a dead process never
    blocks. The file is not deleted on exit (deleting a lock file others may have opened lets two
    processes hold "the" lock at once); it holds the pid of the last holder, for the error message.

    Raises:
        LockedError: the lock is held by another live process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            _lock(fd)
        except OSError:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() if hasattr(os, "pread") else ""
            except OSError:
                holder = ""
            raise LockedError(f"{what} {path.parent}: in use by another run (pid {holder or '?'}, lock file "
                              f"{path}); wait for it to finish or choose another {what}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


try:  # POSIX
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """Package version, git SHA and the versions of the libraries that can move a number."""
    import iis

    libs = {}
    for name in ("torch", "numpy", "scipy", "opencv-python-headless", "scikit-image", "timm", "diffusers",
                 "transformers", "lightning"):
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"iis_version": iis.__version__, "git_sha": _git_sha(), "libraries": libs}
