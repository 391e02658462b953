"""SHA-256 manifests of dataset folders, in ``sha256sum`` format (users.md §1.3: checksums).

A manifest lists every file under a folder as ``<hex digest>  <relative/posix/path>``, sorted by path,
so ``sha256sum -c MANIFEST.sha256`` run inside the folder verifies it without this package. Symbolic
links are followed (a prepared set whose images are symlinks hashes like one with copied images). The
manifest file itself and the atomic-write temporaries of `iis.data.prepare` are not listed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

__all__ = ["MANIFEST_NAME", "file_sha256", "list_files", "build_manifest", "write_manifest", "read_manifest",
           "verify_manifest", "manifest_digest", "format_manifest"]

MANIFEST_NAME = "MANIFEST.sha256"
_TMP_MARK = ".tmp-"  # atomic-write temporaries (`iis.data.prepare.cocolvis`): never part of a set


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (symlinks followed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _walk(root: Path) -> Iterator[str]:
    seen: set[str] = set()  # real paths of visited folders: guards against symlink loops
    for cur, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(cur)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        rel_dir = Path(cur).relative_to(root)
        for name in files:
            rel = (rel_dir / name).as_posix()
            if rel == MANIFEST_NAME or (name.startswith(".") and _TMP_MARK in name):
                continue
            if "\n" in rel or "\\" in rel:
                raise ValueError(f"{root / rel}: names with newlines or backslashes cannot be listed in a manifest")
            yield rel


def list_files(root: str | Path) -> list[str]:
    """Relative POSIX paths of the files a manifest of ``root`` covers, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"manifest: expected a folder, not found: {root}")
    return sorted(_walk(root))


def _hash_all(root: Path, rels: list[str], workers: int | None, progress: bool) -> dict[str, str]:
    # hashlib releases the GIL on large buffers, so threads read and hash files in parallel.
    workers = workers or min(8, os.cpu_count() or 1)
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = list(tqdm(pool.map(lambda r: file_sha256(root / r), rels), total=len(rels), desc="sha256",
                            unit="file", disable=not progress))
    return dict(zip(rels, digests))


def build_manifest(root: str | Path, workers: int | None = None, progress: bool = False) -> dict[str, str]:
    """``{relative path: hex sha256}`` of every file under ``root`` (see module docstring)."""
    root = Path(root)
    return _hash_all(root, list_files(root), workers, progress)


def format_manifest(entries: dict[str, str]) -> str:
    """The ``sha256sum`` text of ``entries`` (sorted by path)."""
    return "".join(f"{entries[rel]}  {rel}\n" for rel in sorted(entries))


def write_manifest(root: str | Path, out: str | Path | None = None, workers: int | None = None,
                   progress: bool = False) -> Path:
    """Hashes ``root`` and writes the manifest atomically.

    Args:
        root: the dataset folder.
        out: manifest file; default ``root/MANIFEST.sha256``. Use another path for read-only datasets.

    Returns:
        The manifest path.
    """
    root = Path(root)
    text = format_manifest(build_manifest(root, workers, progress))
    out = Path(out) if out is not None else root / MANIFEST_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}{_TMP_MARK}")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, out)
    return out


def read_manifest(path: str | Path) -> dict[str, str]:
    """Parses a ``sha256sum`` file (text ``"<hex>  path"`` or binary ``"<hex> *path"`` lines).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line (the message names the file and line number).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    entries: dict[str, str] = {}
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition(" ")
        rel = rel[1:] if rel[:1] in (" ", "*") else ""
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest) or not rel:
            raise ValueError(f"{path}:{no}: expected '<64 hex digits>  <relative path>', got {line[:80]!r}")
        if rel in entries:
            raise ValueError(f"{path}:{no}: {rel!r} is listed twice")
        entries[rel] = digest.lower()
    return entries


def verify_manifest(root: str | Path, manifest: str | Path | None = None, workers: int | None = None,
                    progress: bool = False) -> list[str]:
    """Checks the files under ``root`` against a manifest.

    Args:
        root: the dataset folder.
        manifest: manifest file; default ``root/MANIFEST.sha256``.

    Returns:
        One line per problem (empty when the folder matches): a missing manifest, a malformed line,
        a listed file that is missing or whose content changed, a file the manifest does not list.
    """
    root = Path(root)
    mpath = Path(manifest) if manifest is not None else root / MANIFEST_NAME
    try:
        expected = read_manifest(mpath)
        present = set(list_files(root))
    except (FileNotFoundError, ValueError) as e:
        return [str(e)]
    problems = [f"{root / rel}: listed in {mpath} but missing" for rel in sorted(set(expected) - present)]
    common = sorted(set(expected) & present)
    for rel, digest in _hash_all(root, common, workers, progress).items():
        if digest != expected[rel]:
            problems.append(f"{root / rel}: content differs from {mpath} (sha256 {digest[:12]}..., "
                            f"expected {expected[rel][:12]}...)")
    problems += [f"{root / rel}: not listed in {mpath}" for rel in sorted(present - set(expected))]
    return problems


def manifest_digest(path: str | Path) -> str:
    """One SHA-256 naming a whole set: the hash of its manifest text (compare it between labs)."""
    return file_sha256(path)
