"""Read ``.pth`` / ``.ckpt`` files without ever importing or running code named in them.

A torch checkpoint is a pickle: any class or function it names is imported and called while loading,
which is how a hostile file runs ``os.system`` and why the authors' files fail without their packages
(``isegm``/``easydict`` config objects are pickled beside the weights). Every file iis reads goes
through :func:`safe_load`:

* files whose every pickled global is in torch's own weights-only allow-list (iis and Lightning
  checkpoints, MAE weights, plain state dicts) are read with ``torch.load(weights_only=True)``;
* anything else (the authors' checkpoints, legacy non-zip files, a checkpoint with a foreign callback
  state) is read with :class:`RestrictedUnpickler`: tensors, storages, containers, numbers and strings
  come through; every other class or function becomes an inert :class:`Foreign` stand-in that only
  records what the pickle tried to do with it. Nothing is imported, nothing foreign is called.

Stand-ins are ``dict`` subclasses, so pickled dict subclasses (``EasyDict``, yacs ``CfgNode``) keep
their items and read like plain dicts; other objects keep their constructor arguments (``_foreign_args``)
and pickled state (``_foreign_state``). :func:`to_plain` turns a loaded object into plain Python types.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import IISError

__all__ = ["safe_load", "safe_pickle_load", "UnreadableFileError", "RestrictedUnpickler", "Foreign",
           "restricted_pickle_module", "to_plain"]


class UnreadableFileError(IISError):
    """A file that is not a readable torch checkpoint (truncated, not a pickle, unsupported format)."""


class Foreign(dict):
    """Inert stand-in for a class or function a pickle names but iis does not allow.

    Subclasses are made per pickled name (``_foreign_name = "module.qualname"``). Calling one (pickle's
    REDUCE/NEWOBJ/INST) returns a new inert instance recording the arguments; item and list opcodes fill
    the dict / ``_foreign_items``; BUILD stores the state. No method of the real class ever runs.
    """

    _foreign_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Foreign":
        obj = dict.__new__(cls)
        obj.__dict__["_foreign_args"] = args
        obj.__dict__["_foreign_kwargs"] = kwargs
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # never populate from constructor arguments
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_foreign_state"] = state

    def __call__(self, *args: Any, **kwargs: Any) -> "Foreign":
        return type(self)(*args, **kwargs)

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("_foreign_items", []).append(item)

    def extend(self, items: Any) -> None:
        self.__dict__.setdefault("_foreign_items", []).extend(items)

    def __reduce__(self):  # a stand-in is saved as what it is: a plain dict of its items
        return (dict, (dict(self),))

    def __repr__(self) -> str:
        return f"<foreign {self._foreign_name} {dict.__repr__(self)}>"


def _foreign(module: str, name: str) -> type[Foreign]:
    return type(name.rsplit(".", 1)[-1] if isinstance(name, str) else "Foreign", (Foreign,),
                {"_foreign_name": f"{module}.{name}", "__module__": "iis.core.safe_load.foreign"})


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """Safe ``copyreg._reconstructor`` (protocol 0/1 objects): never calls a foreign ``__init__``."""
    if isinstance(cls, type) and issubclass(cls, Foreign):
        obj = cls()
        if isinstance(state, dict):
            dict.update(obj, state)
        return obj
    if cls is base and base in (dict, list, set, tuple, object) and state is None:
        return base()
    raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r} is not allowed")


def _numpy_globals() -> dict[str, Any]:
    """numpy scalars and arrays of plain dtypes (numpy 1 and 2 module paths)."""
    import numpy as np

    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
    import codecs

    # frombuffer builds an array from bytes (pickle protocol 5 and numpy's own reducers use it)
    out: dict[str, Any] = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray, "numpy.frombuffer": np.frombuffer,
                           "_codecs.encode": codecs.encode}  # protocol 0-2 write bytes through it
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[f"{mod}.scalar"] = ma.scalar
        out[f"{mod}._reconstruct"] = _np_reconstruct
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[f"{mod}._frombuffer"] = _np_frombuffer
    for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
              np.uint32, np.uint64, np.bool_, np.complex64, np.complex128):
        out[f"numpy.dtypes.{type(np.dtype(t)).__name__}"] = type(np.dtype(t))
    return out


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> Any:
    import numpy as np

    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    import numpy as np

    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"numpy array subclass {subtype!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _allowed_globals() -> dict[str, Any]:
    """torch's own weights-only allow-list (tensor/storage rebuild functions, dtypes, Size, device, ...)
    plus plain builtins, OrderedDict and numpy scalars/arrays of plain dtypes."""
    from collections import OrderedDict, defaultdict  # noqa: F401

    allowed: dict[str, Any] = {}
    try:
        from torch import _weights_only_unpickler as wo

        allowed.update(wo._get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - very old/new torch: a minimal list
        import torch._utils as tu

        allowed.update({f"torch._utils.{n}": getattr(tu, n) for n in dir(tu) if n.startswith("_rebuild_")})
        allowed.update({"collections.OrderedDict": OrderedDict, "torch.Size": torch.Size,
                        "torch.device": torch.device, "torch.nn.parameter.Parameter": torch.nn.Parameter})
    allowed.update({
        "collections.OrderedDict": OrderedDict,
        "builtins.set": set, "builtins.frozenset": frozenset, "builtins.bytearray": bytearray,
        "builtins.complex": complex, "builtins.slice": slice, "builtins.range": range,
        "builtins.list": list, "builtins.dict": dict, "builtins.tuple": tuple, "builtins.object": object,
        "copyreg._reconstructor": _reconstructor,
    })
    for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int16,
              torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128):
        allowed.setdefault(str(t), t)
    allowed.update(_numpy_globals())
    return allowed


_ALLOWED: dict[str, Any] | None = None


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only allow-listed globals; everything else becomes a stand-in.

    Attributes:
        foreign: ``module.name`` of every replaced global, in order of first use (shared with the
            list given to :func:`restricted_pickle_module`, if any).
    """

    _collect: list[str] | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.foreign: list[str] = self._collect if self._collect is not None else []
        self._stand_ins: dict[str, type[Foreign]] = {}

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names (protocol 2: "__builtin__.set")
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = f"{module}.{name}"
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key not in self._stand_ins:
            self._stand_ins[key] = _foreign(module, name)
            if key not in self.foreign:
                self.foreign.append(key)
        return self._stand_ins[key]


def restricted_pickle_module(collect: list[str] | None = None) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose unpickler is :class:`RestrictedUnpickler`.

    ``torch.load`` subclasses ``pickle_module.Unpickler`` (to resolve storages) and calls
    ``pickle_module.load`` for the legacy format's headers, so both are restricted. The names of
    replaced globals are appended to ``collect``.
    """
    unpickler = type("RestrictedUnpickler", (RestrictedUnpickler,), {"_collect": collect})

    def load(file: Any, **kwargs: Any) -> Any:
        return unpickler(file, **kwargs).load()

    mod = types.ModuleType("iis_restricted_pickle")
    mod.Unpickler = unpickler
    mod.load = load
    mod.loads = lambda data, **kw: load(io.BytesIO(data), **kw)
    return mod


def _needs_restricted(path: Path) -> bool:
    """True unless ``path`` is a zip checkpoint whose globals are all in torch's weights-only allow-list."""
    if not zipfile.is_zipfile(path):
        return True
    try:
        return bool(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - unreadable zip: let the restricted reader produce the error
        return True


def _describe(path: Path) -> str:
    """What the first bytes of an unreadable file look like (for the one-line error)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return "an unreadable file"
    if size == 0:
        return "an empty file"
    if head.startswith(b"PK"):
        return f"a zip archive of {size} bytes that is not a complete torch checkpoint (truncated?)"
    if head[:1] == b"\x80":
        return f"a pickle of {size} bytes that ends early or is corrupt (truncated?)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (run `git lfs pull`)"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head[:16]):
        return f"a text file ({head[:12].decode(errors='replace')!r}...)"
    return f"{size} bytes that are not a pickle (starts {head[:4].hex()})"


def safe_load(path: str | Path, *, what: str = "file", map_location: str | torch.device = "cpu",
              foreign: list[str] | None = None) -> Any:
    """Load a torch file without executing code from it.

    Args:
        path: the file.
        what: how error messages name the file (e.g. ``"--ckpt"``, ``"--weights"``).
        map_location: as in ``torch.load``.
        foreign: if given, receives ``module.name`` of every global replaced by a stand-in.

    Returns:
        The unpickled object: tensors, containers, numbers, strings; foreign objects as :class:`Foreign`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnreadableFileError: not a (complete) torch file; the message says what the file looks like.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        if not _needs_restricted(path):
            return torch.load(path, map_location=map_location, weights_only=True)
        with warnings.catch_warnings():  # legacy files: "couldn't retrieve source code" of stand-in classes
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=False,
                              pickle_module=restricted_pickle_module(foreign))
    except (FileNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - any failure to parse means the same thing to the user
        detail = str(e).splitlines()[0].split(". ")[0][:100] if str(e) else "no message"
        raise UnreadableFileError(f"{what} {path}: not a readable torch checkpoint; found {_describe(path)} "
                                  f"({e.__class__.__name__}: {detail}); expected a file written by "
                                  "torch.save") from None


def safe_pickle_load(path: str | Path, *, what: str = "file", foreign: list[str] | None = None) -> Any:
    """A plain pickle (not a torch file, e.g. RITM's ``hannotation.pickle``) read with :class:`RestrictedUnpickler`:
    containers, numbers, strings and numpy arrays come through, anything else is an inert stand-in.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnreadableFileError: not a complete pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        with open(path, "rb") as f:
            return restricted_pickle_module(foreign).load(f)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001
        detail = str(e).splitlines()[0][:100] if str(e) else "no message"
        raise UnreadableFileError(f"{what} {path}: not a readable pickle; found {_describe(path)} "
                                  f"({e.__class__.__name__}: {detail})") from None


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """``obj`` with stand-ins replaced by plain dicts (``{"__class__": name, ...items}``), for JSON/reports."""
    if _depth > 50:
        return "..."
    if isinstance(obj, type) and issubclass(obj, Foreign):
        return obj._foreign_name
    if isinstance(obj, Foreign):
        out: dict[str, Any] = {"__class__": obj._foreign_name}
        out.update({str(k): to_plain(v, _depth + 1) for k, v in dict.items(obj)})
        state = obj.__dict__.get("_foreign_state")
        if isinstance(state, dict) and not dict.__len__(obj):
            out.update({str(k): to_plain(v, _depth + 1) for k, v in state.items()})
        return out
    if isinstance(obj, dict):
        return {str(k): to_plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, _depth + 1) for v in obj]
    if isinstance(obj, torch.Tensor):
        return f"<tensor {list(obj.shape)} {str(obj.dtype).replace('torch.', '')}>"
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)
