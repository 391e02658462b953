"""Run directories of ``iis-train fit``: one run, one directory.

* A run directory derived from the experiment file (``runs/<method>/<exp>``) is a *run root*: every fresh
  run gets the next ``version_N/`` in it, and ``<root>/latest`` (a relative symlink, replaced atomically)
  points at the newest one, so ``runs/quickstart/latest/checkpoints/last.ckpt`` is always the latest run's
  checkpoint and ``make train`` can run twice without the second run touching the first.
* A directory given explicitly (``--trainer.default_root_dir DIR``, in a config or on the command line, or a
  ``version_N`` folder) is the run directory itself; a fresh run into one that already holds a run is refused
  with one line (resume it with ``--ckpt_path last``, or pick another directory).
* ``--ckpt_path last`` resumes the latest run in place (root: ``latest``; explicit: the directory itself) and
  is an error when that run has no ``checkpoints/last.ckpt``. ``--ckpt_path <run>/checkpoints/last.ckpt``
  resumes that run in place; any other checkpoint file starts a new run from it.

Under DDP, Lightning re-runs the command line in each further process (``LOCAL_RANK`` > 0); those processes
take the run directory the first one chose from ``IIS_RUN_DIR`` instead of creating another version.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..core.errors import IISError

__all__ = ["resolve_run", "next_version", "claim", "discard", "latest_run", "LATEST", "RUN_DIR_ENV"]

LATEST = "latest"
RUN_DIR_ENV = "IIS_RUN_DIR"
_VERSION = re.compile(r"version_(\d+)$")
LAST = Path("checkpoints", "last.ckpt")


def _versions(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in root.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir()]
    return sorted(out)


def latest_run(root: Path) -> Path | None:
    """The run ``root/latest`` points at, else the highest ``version_N``; None without any."""
    pointer = root / LATEST
    if pointer.is_dir():
        return root / os.readlink(pointer) if pointer.is_symlink() else pointer
    versions = _versions(root)
    return versions[-1][1] if versions else None


def _point_latest(root: Path, run: Path) -> None:
    tmp = root / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run.name, target_is_directory=True)
    os.replace(tmp, root / LATEST)  # atomic: readers see the old or the new pointer, never none


def next_version(root: Path) -> Path:
    """``root/version_<N+1>`` (not created: :func:`claim` does, once the run has passed every check)."""
    versions = _versions(root)
    return root / f"version_{versions[-1][0] + 1 if versions else 0}"


def claim(run: Path) -> None:
    """Make ``run`` (from :func:`next_version`) this fresh run's directory and point ``<root>/latest`` at it.
    It may exist already, empty (the logger creates its folder when it is built); one that holds a run means
    another run took that number since :func:`next_version`: one line, never two runs in one directory."""
    run.mkdir(parents=True, exist_ok=True)
    if _holds_run(run):
        raise IISError(f"{run}: another run started in this directory meanwhile; start this one again")
    _point_latest(run.parent, run)


def discard(run: Path) -> None:
    """Remove ``run`` if a refused command left it empty (the logger may have created it)."""
    try:
        run.rmdir()
    except OSError:
        pass


def _holds_run(d: Path) -> bool:
    return (d / "config.yaml").exists() or any((d / "checkpoints").glob("*.ckpt"))


def _is_ddp_child() -> bool:
    return os.environ.get("LOCAL_RANK", "0") not in ("", "0")


def resolve_run(root: str, ckpt_path: str | None, versioned: bool) -> tuple[str, str | None, bool]:
    """``(run directory, checkpoint to resume or None, whether the directory is a new version to claim)`` of a
    fit whose run root / directory is ``root``. Creates nothing.

    ``versioned``: ``root`` was derived from the experiment file (a run root of ``version_N`` runs).
    Raises :class:`IISError` (one line) for ``--ckpt_path last`` without a checkpoint and for a fresh run
    into an explicit directory that holds a run already. ``ckpt_path`` files are checked by the caller.
    """
    base = Path(root)
    versioned = versioned and not _VERSION.match(base.name)
    child_dir = os.environ.get(RUN_DIR_ENV) if _is_ddp_child() else None
    if ckpt_path == "last":
        run = Path(child_dir) if child_dir else (latest_run(base) if versioned else base)
        if run is None or not (run / LAST).is_file():
            where = f"{run}" if run is not None else f"{base} (no run yet)"
            raise IISError(f"--ckpt_path last: no checkpoint to resume in {where}: no {LAST} there; "
                           f"start a fresh run without --ckpt_path")
        return _chosen(run), str(run / LAST), False
    if child_dir:
        return child_dir, ckpt_path, False
    if ckpt_path:
        p = Path(ckpt_path)
        if p.name == LAST.name and p.parent.name == LAST.parent.name and (p.parent.parent / "config.yaml").is_file():
            return _chosen(p.parent.parent), ckpt_path, False  # that run's own last checkpoint: resume it in place
    if versioned:
        return _chosen(next_version(base)), ckpt_path, True
    if _holds_run(base):
        raise IISError(f"trainer.default_root_dir {base} holds a run already; resume it with --ckpt_path last, "
                       f"or give a fresh run another directory (or remove this one)")
    return _chosen(base), ckpt_path, False


def _chosen(run: Path) -> str:
    os.environ[RUN_DIR_ENV] = str(run)  # for the DDP processes Lightning starts with this command line
    return str(run)
