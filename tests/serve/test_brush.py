"""Label Studio brush RLE: our encoder against a decoder written from the format description, and one
stream written out bit by bit by hand."""

from __future__ import annotations

import numpy as np
import pytest
from iis_serve_helpers import ls_brush_mask, ls_rle_decode

from iis.serve.brush import encode_values, mask_to_rle


def test_hand_written_stream():
    # a 1x2 mask [background, object] -> RGBA values 0,0,0,0,255,255,255,255: two repeat runs of 4
    bits = (f"{8:032b}" + f"{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))  # header, 53 bits
            + "1" + "00" + "011" + "00000000"      # repeat, class 0 (3 bits), count 4, value 0
            + "1" + "00" + "011" + "11111111")     # repeat, class 0, count 4, value 255
    bits += "0" * (8 - len(bits) % 8)
    expected = [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]
    assert mask_to_rle(np.array([[False, True]])) == expected


def test_padding_to_whole_bytes():
    # 53 header bits + one literal chunk (1 + 2 + 3 + 8 bits) = 67 bits -> 5 zero bits -> 9 bytes
    assert len(encode_values(np.array([7]))) == 9
    # one run of 20 (class 2: 1 + 2 + 8 + 8 bits) -> 72 bits, already whole bytes: the format's reference
    # encoder (and so ours) still appends a zero byte -> 10 bytes
    rle = encode_values(np.zeros(20, np.uint8))
    assert len(rle) == 10 and rle[-1] == 0
    assert np.array_equal(ls_rle_decode(rle)[0], np.zeros(20))


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 33), (120, 161), (300, 300)])
def test_roundtrip_random_and_shapes(shape, rng):
    h, w = shape
    masks = [np.zeros(shape, bool), np.ones(shape, bool), rng.random(shape) > 0.5]
    m = np.zeros(shape, bool)
    m[h // 4: 3 * h // 4 + 1, w // 3: 2 * w // 3 + 1] = True
    masks.append(m)
    for mask in masks:
        rle = mask_to_rle(mask)
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in rle)
        values, head = ls_rle_decode(rle)
        assert head["n"] == h * w * 4 and head["word_size"] == 8 and head["rle_sizes"] == [3, 4, 8, 16]
        assert head["bits_used"] <= 8 * head["bytes"] < head["bits_used"] + 9
        rgba = values.reshape(h, w, 4)
        assert np.array_equal(rgba[..., 3] > 0, mask) and (rgba == rgba[..., :1]).all()  # 4 equal channels
        assert set(np.unique(values)) <= {0, 255}


def test_runs_longer_than_the_largest_class():
    m = np.zeros((400, 400), bool)  # 640000 values: runs of 4 * 120000 zeros > 65536
    m[300:, :] = True
    m[350, 7] = False
    assert np.array_equal(ls_brush_mask(mask_to_rle(m), 400, 400), m)
    values = np.r_[np.zeros(65536, np.uint8), np.full(65537, 9, np.uint8), np.zeros(1, np.uint8)]
    assert np.array_equal(ls_rle_decode(encode_values(values))[0], values)


def test_value_and_bad_input():
    values, _ = ls_rle_decode(mask_to_rle(np.eye(3, dtype=bool), value=1))
    assert set(np.unique(values)) == {0, 1}
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="0..255"):
        encode_values(np.array([300]))
