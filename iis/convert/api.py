"""Official checkpoint in, iis state dict / checkpoint out: the functions behind ``iis-convert`` and
``iis-eval --weights``.

Families are discovered, not listed: every module ``iis/convert/<name>.py`` that defines ``FAMILY`` is
one (a new family needs no change here).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.safe_load import Foreign, safe_load
from ._mapping import short_list
from .base import ConversionError, ConversionReport, Family

__all__ = ["families", "get_family", "detect_family", "read_checkpoint", "extract_state_dict", "Conversion",
           "convert_state_dict", "convert_file", "load_weights", "sha256_of", "is_official"]

_NOT_FAMILIES = {"base", "api", "_mapping", "_vit"}


@lru_cache(maxsize=1)
def _discover() -> tuple[Family, ...]:
    found = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        if info.name in _NOT_FAMILIES or info.name.startswith("__"):
            continue
        mod = importlib.import_module(f"{__package__}.{info.name}")
        fam = getattr(mod, "FAMILY", None)
        if isinstance(fam, Family):
            found.append(fam)
    return tuple(found)


def families() -> dict[str, Family]:
    """``{name: Family}`` of every family module present (``official-simpleclick``, ...)."""
    return {f.name: f for f in _discover()}


def get_family(name: str) -> Family:
    fams = families()
    if name not in fams:
        raise ConversionError(f"--from {name!r}: unknown; available: auto, {', '.join(sorted(fams))}")
    return fams[name]


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path, what: str = "file") -> tuple[Any, list[str]]:
    """Safely unpickle ``path`` (no foreign code runs); returns the object and the stand-in class names."""
    foreign: list[str] = []
    return safe_load(path, what=what, foreign=foreign), foreign


def extract_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: ``obj["state_dict"]``, ``obj["model"]`` or ``obj`` itself;
    a ``module.`` prefix on every key (DataParallel) is removed.

    Raises:
        ConversionError: no mapping of names to tensors is found.
    """
    sd = None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "net"):
            if isinstance(obj.get(key), Mapping):
                sd = obj[key]
                break
        if sd is None and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            sd = obj
    if sd is None:
        kind = f"pickled {obj._foreign_name} object" if isinstance(obj, Foreign) else type(obj).__name__
        keys = f" with keys {short_list([str(k) for k in obj.keys()], 6)}" if isinstance(obj, Mapping) else ""
        raise ConversionError(f"{where}: found a {kind}{keys}; expected a state dict (names -> tensors) or a "
                              "checkpoint holding one under 'state_dict'")
    if not sd:
        raise ConversionError(f"{where}: the state dict is empty; expected the model's tensors")
    bad = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{where}: the state dict has {len(bad)} non-tensor entries ({short_list(bad)}); "
                              "expected only tensors")
    sd = {str(k): v for k, v in sd.items()}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def detect_family(shapes: Mapping[str, tuple[int, ...]]) -> Family | None:
    """The single family whose key set ``shapes`` fits, or None."""
    hits = [f for f in _discover() if f.matches(shapes)]
    if len(hits) > 1:
        raise ConversionError(f"the key set fits several families ({', '.join(f.name for f in hits)}); give --from")
    return hits[0] if hits else None


def is_official(sd: Mapping[str, torch.Tensor]) -> bool:
    return detect_family({k: tuple(v.shape) for k, v in sd.items()}) is not None


def _expected() -> str:
    return ", ".join(f.display for f in _discover()) or "no family installed"


@dataclass
class Conversion:
    """Result of a conversion.

    Attributes:
        family: the family used; model/kwargs: the iis model (registry name, builder kwargs).
        state_dict: iis state dict of that model; report: what happened to every official tensor.
        source: ``{"file", "sha256", "family", "foreign_classes"}`` (file entries only when read from a file).
    """

    family: Family
    model: str
    kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    report: ConversionReport
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        return self.family.protocol

    def checkpoint(self) -> dict[str, Any]:
        """What ``iis-convert`` writes: plain types only, readable with ``torch.load(weights_only=True)``
        and by ``iis-eval --ckpt`` (keys under ``model.`` as in iis-train's Lightning checkpoints)."""
        return {"iis": {"model": {"name": self.model, "kwargs": dict(self.kwargs)}, "protocol": self.protocol,
                        "method": "converted", "source": dict(self.source), "conversion": self.report.to_json()},
                "state_dict": {f"model.{k}": v.contiguous() for k, v in self.state_dict.items()}}


def convert_state_dict(sd: Mapping[str, torch.Tensor], *, family: str = "auto", model: str | None = None,
                       where: str = "state dict") -> Conversion:
    """Convert an official state dict to iis.

    Args:
        sd: the authors' state dict (keys -> tensors).
        family: ``"auto"`` (detect from the key set) or a family name (``official-simpleclick``, ...).
        model: expected iis model name (``--model``/``--method``); checked against the size read from shapes.
        where: how messages name the input (a file name, ``--weights F``).

    Raises:
        ConversionError: unknown layout, wrong family/size, or keys that are neither mapped nor known-unused.
    """
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    detected = detect_family(shapes)
    if family == "auto":
        if detected is None:
            raise ConversionError(f"{where}: no official layout recognised in its {len(sd)} tensors (first keys: "
                                  f"{short_list(list(sd), 3)}); expected a checkpoint of {_expected()}")
        fam = detected
    else:
        fam = get_family(family)
        if not fam.matches(shapes):
            found = f"it looks like {detected.name}" if detected else "no official layout recognised"
            raise ConversionError(f"{where}: --from {fam.name}, but its keys are not {fam.display}'s ({found}; first "
                                  f"keys: {short_list(list(sd), 3)})")
    try:
        name, kwargs = fam.infer_model(shapes)
    except ConversionError as e:
        raise ConversionError(f"{where}: {e}") from None
    if model is not None and model != name:
        raise ConversionError(f"{where}: holds {fam.display} weights of {name} (size read from its shapes), but "
                              f"{model} was asked for")
    try:
        out, report = fam.convert(dict(sd), name)
    except ConversionError as e:
        raise ConversionError(f"{where}: {e}") from None
    return Conversion(fam, name, dict(kwargs), out, report, {"family": fam.name})


def convert_file(src: str | Path, dst: str | Path | None = None, *, family: str = "auto",
                 model: str | None = None) -> Conversion:
    """Read an official checkpoint safely, convert it and (if ``dst``) write the iis checkpoint atomically.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        IISError (ConversionError / UnreadableFileError): one line saying what was found and expected.
    """
    src = Path(src)
    obj, foreign = read_checkpoint(src, what="input")
    if isinstance(obj, Mapping) and isinstance(obj.get("iis"), Mapping):
        name = obj["iis"].get("model", {}).get("name", "?")
        raise ConversionError(f"{src}: already an iis checkpoint (model {name}); evaluate it with iis-eval --ckpt")
    sd = extract_state_dict(obj, str(src))
    conv = convert_state_dict(sd, family=family, model=model, where=str(src))
    conv.source = {"file": src.name, "sha256": sha256_of(src), "family": conv.family.name,
                   "foreign_classes": foreign}
    cfg = obj.get("config") if isinstance(obj, Mapping) else None
    if cfg is not None:
        kind = cfg._foreign_name if isinstance(cfg, Foreign) else type(cfg).__name__
        conv.report.notes.append(f"the file's 'config' ({kind}) was read as inert data and is not used; the model "
                                 "is rebuilt from the state dict's shapes")
    if dst is not None:
        _atomic_save(conv.checkpoint(), Path(dst))
    return conv


def _atomic_save(obj: Any, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the output is an ordinary file
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(path: str | Path, model: str, *, what: str = "--weights") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict for ``model`` in a weights file, read safely: an official checkpoint (detected by its
    key set) is converted in memory; anything else (an iis/Lightning state dict or checkpoint) is returned
    as stored, for the caller to clean (``iis.eval.checkpoint.clean_state_dict``) and load strictly.

    Returns:
        ``(state dict, info)``; ``info`` has ``file``, ``sha256``, ``official`` and, for an official file,
        ``family``, ``kwargs`` (the builder kwargs read from shapes), ``conversion`` (the report) and
        ``foreign_classes``; for an iis checkpoint written by iis-convert, its ``source``.
    """
    path = Path(path)
    where = f"{what} {path}"
    obj, foreign = read_checkpoint(path, what=what)
    info: dict[str, Any] = {"file": path.name, "sha256": sha256_of(path), "official": False}
    sd = extract_state_dict(obj, where)
    if is_official(sd):
        conv = convert_state_dict(sd, model=model, where=where)
        info.update(official=True, family=conv.family.name, kwargs=conv.kwargs, conversion=conv.report.to_json(),
                    foreign_classes=foreign)
        return conv.state_dict, info
    if isinstance(obj, Mapping) and isinstance(obj.get("iis"), Mapping) and isinstance(obj["iis"].get("source"), Mapping):
        info["source"] = dict(obj["iis"]["source"])  # a converted checkpoint given as --weights
    return sd, info
