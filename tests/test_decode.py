"""bench.decode: every image mode to RGB uint8 by the documented rule; masks by explicit policies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.decode import DecodeError, MaskPolicy, decode_image, decode_mask, long_side_size
from tests.data_fixtures import (
    H,
    W,
    cmyk_jpeg,
    exif_rotated_jpeg,
    grey_mask,
    palette_png,
    png16,
    png_bytes,
    png_header_only,
    rgb,
    truncated_jpeg,
)


def test_rgb_png_round_trip_is_exact_from_bytes_and_path(tmp_path):
    arr = rgb(0)
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(arr))
    for source in (path, str(path), png_bytes(arr)):
        out = decode_image(source)
        assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
        np.testing.assert_array_equal(out, arr)


def test_exif_orientation_6_is_applied():
    out = decode_image(exif_rotated_jpeg())
    assert out.shape == (W, H, 3)  # rotated 90° clockwise: stored left half (red) is now on top
    top, bottom = out[2].mean(axis=0), out[-3].mean(axis=0)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_cmyk_jpeg_becomes_rgb():
    white = decode_image(cmyk_jpeg((0, 0, 0, 0)))
    assert white.shape == (H, W, 3) and white.min() >= 245
    cyan = decode_image(cmyk_jpeg((255, 0, 0, 0)))
    assert cyan[..., 0].max() <= 10 and cyan[..., 1:].min() >= 245


def test_16bit_png_maps_linearly_by_257():
    values = np.array([[0, 257 * 100, 65535, 128]], dtype=np.uint16).repeat(4, axis=0)
    out = decode_image(png16(values))
    expected = np.round(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_palette_png_uses_palette_and_transparency_composites_on_white():
    data, expected = palette_png()
    np.testing.assert_array_equal(decode_image(data), expected)
    data, expected = palette_png(transparent_index=3)
    out = decode_image(data)
    transparent = (np.arange(H * W).reshape(H, W) % 4) == 3
    assert (out[transparent] == 255).all()
    np.testing.assert_array_equal(out[~transparent], expected[~transparent])


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode):
    if mode == "RGBA":
        img = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
        expected = np.array([255, 127, 127])  # 255*a + 255*(1-a) ; 0*a + 255*(1-a), a = 128/255
    else:
        img = Image.new("LA", (4, 4), (0, 128))
        expected = np.array([127, 127, 127])
    out = decode_image(png_bytes(img))
    np.testing.assert_allclose(out[0, 0], expected, atol=1)


def test_grey_is_replicated():
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    out = decode_image(png_bytes(grey))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image", "not a recognised image"),
        (truncated_jpeg(), "truncated"),
    ],
)
def test_bad_data_raises_decode_error_with_reason(data, message):
    with pytest.raises(DecodeError, match=message):
        decode_image(data)


def test_zero_byte_and_missing_files(tmp_path):
    empty = tmp_path / "z.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="zero-byte"):
        decode_image(empty)
    with pytest.raises(DecodeError, match="not found"):
        decode_image(tmp_path / "missing.png")


def test_decompression_bomb_limit_is_checked_before_decoding_and_raisable():
    bomb = png_header_only(30_000, 30_000)  # 900 M pixels, beyond Pillow's own limit too
    with pytest.raises(DecodeError, match="max_pixels"):
        decode_image(bomb)
    small = png_bytes(rgb(1, 50, 50))
    with pytest.raises(DecodeError, match="2500 pixels exceeds max_pixels=2000"):
        decode_image(small, max_pixels=2000)
    assert decode_image(small, max_pixels=2500).shape == (50, 50, 3)
    # a raised limit lets the header through; the missing pixel data is then a per-sample error
    with pytest.raises(DecodeError, match="corrupt or truncated"):
        decode_image(bomb, max_pixels=10**9)


# ------------------------------------------------------------------------------------------ masks

VALUES = np.array([[0, 100, 127, 128, 254, 255]], dtype=np.uint8)


def test_binarisation_policies():
    data = grey_mask(VALUES)
    m, note = decode_mask(data, (1, 6))
    np.testing.assert_array_equal(m[0], [False, False, False, True, True, True])
    assert m.dtype == np.bool_ and not note.resized
    m, _ = decode_mask(data, (1, 6), MaskPolicy(binarize="official"))
    np.testing.assert_array_equal(m[0], [False, False, False, False, False, True])


def test_zero_one_masks_are_rescaled_under_default_only():
    data = grey_mask(np.array([[0, 1, 1, 0]]))
    m, note = decode_mask(data, (1, 4))
    assert note.rescaled_01 and m[0].tolist() == [False, True, True, False]
    m, note = decode_mask(data, (1, 4), MaskPolicy(binarize="official"))
    assert not note.rescaled_01 and not m.any()


def test_multichannel_masks():
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    rgb_same = np.dstack([grey] * 3)
    m, _ = decode_mask(png_bytes(rgb_same), (2, 2))
    np.testing.assert_array_equal(m, grey > 127)
    rgba = np.dstack([grey] * 3 + [np.full((2, 2), 7, np.uint8)])
    m, _ = decode_mask(png_bytes(rgba), (2, 2))
    np.testing.assert_array_equal(m, grey > 127)
    colour = rgb_same.copy()
    colour[0, 0] = (10, 200, 30)
    with pytest.raises(DecodeError, match="differing colour channels"):
        decode_mask(png_bytes(colour), (2, 2))


def test_16bit_mask():
    m, _ = decode_mask(png16(np.array([[0, 65535, 257 * 100]])), (1, 3))
    assert m[0].tolist() == [False, True, False]


def test_soft_masks_are_noted_or_rejected():
    soft = np.tile(np.linspace(0, 255, 20).astype(np.uint8), (5, 1))
    m, note = decode_mask(grey_mask(soft), (5, 20))
    assert note.soft
    np.testing.assert_array_equal(m, soft > 127)
    with pytest.raises(DecodeError, match="not binary-like"):
        decode_mask(grey_mask(soft), (5, 20), MaskPolicy(non_binary="error"))
    _, note = decode_mask(grey_mask(np.where(soft > 127, 255, 0)), (5, 20))
    assert not note.soft


def test_size_mismatch_resize_nearest_and_error():
    small = np.zeros((2, 3), np.uint8)
    small[0, 1] = 255
    m, note = decode_mask(grey_mask(small), (4, 6))
    expected = np.zeros((4, 6), bool)
    expected[0:2, 2:4] = True  # nearest neighbour x2
    np.testing.assert_array_equal(m, expected)
    assert note.resized and note.original_size == (2, 3)
    with pytest.raises(DecodeError, match="differs from image size"):
        decode_mask(grey_mask(small), (4, 6), MaskPolicy(size_mismatch="error"))


def test_official_size_rule_is_long_side_1024_bilinear_then_binarised():
    assert long_side_size(500, 750) == (683, 1024)
    assert long_side_size(1024, 1024) == (1024, 1024)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 3:7] = 255
    policy = MaskPolicy(binarize="official", size_mismatch="official")
    m, note = decode_mask(grey_mask(mask), (1024, 1024), policy)
    reference = np.asarray(Image.fromarray(mask).resize((1024, 1024), Image.Resampling.BILINEAR)) == 255
    np.testing.assert_array_equal(m, reference)
    assert note.resized
    # a mask whose long side is already 1024 but whose shape differs is then fitted with nearest
    m, _ = decode_mask(grey_mask(np.full((512, 1024), 255, np.uint8)), (1024, 1024), policy)
    assert m.shape == (1024, 1024) and m.all()


def test_mask_policy_validation():
    with pytest.raises(ValueError, match="binarize"):
        MaskPolicy(binarize="gt128")  # type: ignore[arg-type]
