"""Label Studio's brush RLE (``BrushLabels`` ``value.rle``): an encoder written from the format.

Label Studio stores a brush mask as the RGBA pixels of the image, flattened row-major (``H * W * 4``
bytes: each pixel's value repeated in its 4 channels; readers take channel 3), packed with the
bit-level run-length format of the ``rle-pack`` package (thi.ng umbrella) that its front end decodes.
It is not COCO RLE. The bit stream, most significant bit first:

* header: 32 bits ``n`` (values), 5 bits ``word_size - 1``, then four 4-bit fields ``size_k - 1``, the
  bit widths of the four run-length classes;
* then chunks until ``n`` values are produced: 1 bit ``repeat``, 2 bits class ``k``, ``size_k`` bits
  ``count - 1``; a repeat chunk is followed by one word (the value, ``count`` times), a literal chunk by
  ``count`` words;
* zero bits up to a whole byte.

The answer is the list of those bytes as integers. :func:`mask_to_rle` makes exactly the bytes that
``label_studio_converter.brush.mask2rle`` makes (8-bit words, classes 3/4/8/16 bits, every run of
length 1 a 1-word literal, longer runs repeats of the smallest class that holds them, runs longer
than 65536 split into repeats of 65536 (the largest class) and the rest, and one whole zero byte of
padding when the stream already ends on a byte boundary), so masks decode identically in Label Studio.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_to_rle", "encode_values", "RLE_SIZES", "WORD_SIZE"]

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)  # bit widths of the four run-length classes
_MAX_RUN = 1 << RLE_SIZES[-1]  # 65536 values per repeat chunk at most


def _pack(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate ``values[i]`` written MSB-first in ``widths[i]`` bits -> bit array (uint8 0/1)."""
    widths = widths.astype(np.int64)
    total = int(widths.sum())
    field = np.repeat(np.arange(len(widths)), widths)
    starts = np.cumsum(widths) - widths
    shift = (widths[field] - 1 - (np.arange(total) - starts[field])).astype(np.uint64)
    return ((values.astype(np.uint64)[field] >> shift) & np.uint64(1)).astype(np.uint8)


def encode_values(values: np.ndarray) -> list[int]:
    """Encode a 1-D array of bytes (0..255) in the rle-pack format with 8-bit words (see the module doc)."""
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"values: expected a 1-D array, got shape {v.shape}")
    if v.size and (v.min() < 0 or v.max() > 255):
        raise ValueError(f"values: expected bytes 0..255, got [{v.min()}, {v.max()}]")
    v = v.astype(np.uint8)
    n = int(v.size)
    if n >= 1 << 32:
        raise ValueError(f"values: {n} values do not fit the 32-bit count of the format")
    head = n
    head = (head << 5) | (WORD_SIZE - 1)
    for size in RLE_SIZES:
        head = (head << 4) | (size - 1)
    head_w = 32 + 5 + 4 * len(RLE_SIZES)  # 53 bits

    if n:
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        lengths = np.diff(np.r_[starts, n])
        vals = v[starts].astype(np.uint64)
        # runs > 65536: (L - 1) // 65536 full chunks of 65536, then the rest, all in the 16-bit class
        full = (lengths - 1) // _MAX_RUN
        n_chunks = full + 1
        run = np.repeat(np.arange(len(lengths)), n_chunks)
        is_last = np.zeros(len(run), bool)
        is_last[np.cumsum(n_chunks) - 1] = True
        count = np.where(is_last, lengths[run] - full[run] * _MAX_RUN, _MAX_RUN).astype(np.int64)
        orig = lengths[run]
        k = np.select([orig == 1, orig <= 8, orig <= 16, orig <= 256], [0, 0, 1, 2], 3).astype(np.int64)
        size = np.asarray(RLE_SIZES, np.int64)[k]
        repeat = (orig > 1).astype(np.uint64)
        word = vals[run]
        body_w = 1 + 2 + size + WORD_SIZE
        body = ((repeat << (np.uint64(2) + size.astype(np.uint64) + np.uint64(WORD_SIZE)))
                | (k.astype(np.uint64) << (size.astype(np.uint64) + np.uint64(WORD_SIZE)))
                | ((count - 1).astype(np.uint64) << np.uint64(WORD_SIZE))
                | word)
        all_vals = np.r_[np.uint64(head), body]
        all_w = np.r_[head_w, body_w]
    else:
        all_vals, all_w = np.array([head], np.uint64), np.array([head_w])
    bits = _pack(all_vals, all_w)
    pad = 8 - bits.size % 8  # 1..8: a whole zero byte when already aligned (as mask2rle does)
    bits = np.r_[bits, np.zeros(pad, np.uint8)]
    return np.packbits(bits).tolist()


def mask_to_rle(mask: np.ndarray, value: int = 255) -> list[int]:
    """A 2-D mask (bool, or 0/1 numbers) -> Label Studio brush RLE of its RGBA image (object pixels
    ``value`` in every channel, background 0), for ``result.value.rle`` with ``format: "rle"``."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask: expected a 2-D array, got shape {m.shape}")
    if not 1 <= int(value) <= 255:
        raise ValueError(f"value: expected 1..255, got {value}")
    px = np.where(m.astype(bool), np.uint8(value), np.uint8(0)).ravel()
    return encode_values(np.repeat(px, 4))
