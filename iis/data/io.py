"""The one reader of image and mask files for the whole package: strict, with the reference's values.

Every evaluation reader, training source, preparation step and benchmark reads pixels through
:func:`read_image` / :func:`read_mask`, so a file is either decoded completely or refused with one
line naming it (:class:`DataFileError`).

Why two decoders: OpenCV gives the reference values (protocol.md §B: ``cv2.imread`` then BGR->RGB,
EXIF orientation applied), but it silently accepts a truncated file (``imread`` returns the decoded
part; only libjpeg's own stderr line shows it). Pillow, with truncated loading off, refuses it. So the
file's bytes are read once, Pillow checks that they decode to the end (JPEGs at 1/8 scale: the whole
entropy-coded stream is still parsed, at a fraction of the cost), and OpenCV decodes the same bytes.
Corruption that a format cannot detect (flipped bits inside JPEG entropy data, which has no checksum)
is not detectable by any reader; PNG and zlib checksums are checked by Pillow.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..core.errors import IISError

__all__ = [
    "IMAGE_EXTS",
    "DataFileError",
    "MaskFile",
    "read_image",
    "read_mask",
    "read_bytes",
    "decode_image_bytes",
    "decode_mask_bytes",
    "describe_values",
    "safe_pickle_load",
]

# Extensions listed as images/masks by the readers (case-insensitive); Pillow and OpenCV read them all.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STRICT_LOCK = threading.Lock()
# Pillow modes whose samples are at most 8 bits (what the reference's cv2.imread(IMREAD_COLOR) keeps intact)
EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "LA", "PA", "La", "RGBa"})


class DataFileError(IISError):
    """A data file that cannot be used: missing, truncated, corrupt, wrong bit depth, unexpected values.

    The message is one line that names the file and says what was found and what was expected.

    Attributes:
        path: the file.
    """

    def __init__(self, path: str | Path, message: str):
        super().__init__(message)
        self.path = Path(path)

    def __reduce__(self):  # picklable across processes (the default would call cls(message))
        return type(self), (self.path, str(self))


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The file's bytes; :class:`DataFileError` ("<what> <path>: ...") when missing, unreadable or empty."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(path, f"{what} {path}: file not found") from None
    except IsADirectoryError:
        raise DataFileError(path, f"{what} {path}: is a folder, expected a file") from None
    except OSError as e:
        raise DataFileError(path, f"{what} {path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise DataFileError(path, f"{what} {path}: empty file (0 bytes)")
    return data


def _pil_strict(data: bytes, path: Path, what: str, draft: bool) -> Image.Image:
    """Decodes ``data`` completely with Pillow, truncated loading off; returns the loaded image."""
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DataFileError(path, f"{what} {path}: not an image file Pillow can identify "
                                  f"(expected one of {', '.join(IMAGE_EXTS)})") from None
    except Exception as e:  # corrupt headers raise many types (SyntaxError, struct.error, ...)
        raise DataFileError(path, f"{what} {path}: corrupt header ({type(e).__name__}: {e})") from None
    try:
        if draft and im.format == "JPEG":
            im.draft(im.mode, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
        if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone turned lenient loading on process-wide
            with _STRICT_LOCK:
                old, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
                try:
                    im.load()
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = old
        else:
            im.load()
    except Image.DecompressionBombError as e:
        raise DataFileError(path, f"{what} {path}: {e}") from None
    except Exception as e:
        raise DataFileError(path, f"{what} {path}: truncated or corrupt {im.format or ''} file "
                                  f"({type(e).__name__}: {e})".replace("  ", " ")) from None
    return im


def decode_image_bytes(data: bytes, path: str | Path, what: str = "image") -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB from encoded bytes, strictly (see the module docstring)."""
    path = Path(path)
    _pil_strict(data, path, what, draft=True).close()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataFileError(path, f"{what} {path}: OpenCV cannot decode this file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB, decoded like the reference (``cv2.imread(IMREAD_COLOR)`` then BGR->RGB).

    Raises:
        DataFileError: missing, empty, truncated or corrupt file (the message names it).
    """
    return decode_image_bytes(read_bytes(path, "image"), path, "image")


@dataclass
class MaskFile:
    """A mask file decoded strictly, with two views of its pixels.

    Attributes:
        path: the file.
        mode: Pillow mode (``"L"``, ``"P"``, ``"RGB"``, ``"RGBA"``, ``"I;16"``, ``"1"``, ...).
        bits: bits per sample (from the PNG header for PNGs, else from the mode).
        values: the stored samples: palette indices for ``P``, 16-bit values for ``I;16``, 0/1 for
            ``1``; ``(H, W)`` or ``(H, W, C)``.
    """

    path: Path
    mode: str
    bits: int
    values: np.ndarray
    _data: bytes = field(repr=False)
    _bgr: np.ndarray | None = field(default=None, repr=False)

    @property
    def bgr(self) -> np.ndarray:
        """``uint8 (H, W, 3)`` BGR exactly as ``cv2.imread(path, IMREAD_COLOR)`` gives it: what the
        reference loaders decode (channel 0, or the max over channels). 16-bit samples are reduced
        to 8 bits here, which is why the readers check :attr:`bits` first."""
        if self._bgr is None:
            bgr = cv2.imdecode(np.frombuffer(self._data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DataFileError(self.path, f"mask {self.path}: OpenCV cannot decode this file")
            self._bgr = bgr
        return self._bgr

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.values.shape[0]), int(self.values.shape[1])

    def describe_format(self) -> str:
        """E.g. ``"16-bit gray PNG (Pillow mode I;16)"``."""
        kind = {"1": "1-bit", "L": "gray", "P": "palette", "RGB": "RGB", "RGBA": "RGBA", "LA": "gray+alpha",
                "PA": "palette+alpha", "F": "float", "I": "integer"}.get(self.mode, "gray" if self.mode.startswith("I;16")
                                                                         else self.mode)
        return f"{self.bits}-bit {kind} (Pillow mode {self.mode})"


def _bits(data: bytes, mode: str) -> int:
    if data[:8] == _PNG_SIGNATURE and len(data) >= 26:
        return int(data[24])  # IHDR bit depth: a 16-bit RGB PNG opens as 8-bit "RGB" in Pillow
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def decode_mask_bytes(data: bytes, path: str | Path, what: str = "mask") -> MaskFile:
    """:class:`MaskFile` from encoded bytes (a file's, or a PNG layer inside a pickle), strictly."""
    path = Path(path)
    with _pil_strict(data, path, what, draft=False) as im:
        mode = im.mode
        values = np.asarray(im)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    elif values.dtype.byteorder not in ("=", "|"):
        values = values.astype(values.dtype.newbyteorder("="))
    return MaskFile(path, mode, _bits(data, mode), values, data)


def read_mask(path: str | Path) -> MaskFile:
    """Decodes a mask file strictly (Pillow, truncated loading off) and keeps its stored values.

    Raises:
        DataFileError: missing, empty, truncated or corrupt file (the message names it).
    """
    return decode_mask_bytes(read_bytes(path, "mask"), path)


def describe_values(a: np.ndarray, limit: int = 8) -> str:
    """The distinct values of ``a``: ``"0, 1, 2, 7"`` or ``"0, 1, 2, ... 254 (37 values)"``."""
    u = np.unique(a)
    if len(u) <= limit:
        return ", ".join(str(int(v)) for v in u)
    return ", ".join(str(int(v)) for v in u[:limit - 1]) + f", ... {int(u[-1])} ({len(u)} values)"


def safe_pickle_load(path: str | Path) -> Any:
    """Loads a pickle of plain data (RITM's packed C+L masks, the SBD sample weights are exactly that)
    with the package's restricted unpickler (:mod:`iis.core.safe_load`: nothing foreign is imported or
    run); a pickle that names any other class is refused, since a data file has no reason to."""
    from ..core.safe_load import UnreadableFileError
    from ..core.safe_load import safe_pickle_load as _restricted_load

    path = Path(path)
    foreign: list[str] = []
    try:
        obj = _restricted_load(path, what="pickle", foreign=foreign)
    except (UnreadableFileError, FileNotFoundError) as e:
        raise DataFileError(path, str(e)) from None
    if foreign:
        raise DataFileError(path, f"pickle {path}: not plain data (it names {', '.join(foreign[:3])}); refusing it")
    return obj
