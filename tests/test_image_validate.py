import io

import numpy as np
import pytest
from PIL import Image

from fusionweave.transforms.image_validate import ImageLimits, image_phash, phash64, sniff_format, validate_image

LIM = ImageLimits(min_short_edge=32)


def enc(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, format=fmt, **kw)
    return b.getvalue()


def scene(w=96, h=64):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    return Image.fromarray(arr)


def test_sniff():
    assert sniff_format(enc(scene(), "JPEG")) == "jpg"
    assert sniff_format(enc(scene(), "PNG")) == "png"
    assert sniff_format(enc(scene(), "WEBP")) == "webp"
    assert sniff_format(b"<html>") is None


@pytest.mark.parametrize("data,reason", [
    (b"", "empty_file"),
    (None, "empty_file"),
    (b"<!doctype html><html></html>", "not_an_image"),
    (enc(scene(), "JPEG")[:300], "decode_error"),
    (enc(Image.new("RGB", (1, 1)), "PNG"), "short_edge_too_small"),
])
def test_bad_images_are_rejects(data, reason):
    r = validate_image(data, LIM)
    assert r.reason == reason and r.data is None


def test_pixel_bomb_refused_from_header_only():
    bomb = enc(Image.new("1", (20000, 20000)), "PNG", optimize=True)
    assert len(bomb) < 2_000_000
    r = validate_image(bomb, ImageLimits())
    assert r.reason == "decompression_bomb" and r.data is None
    # below PIL's own guard, our cap reads the size from the header
    r = validate_image(enc(Image.new("1", (3000, 3000)), "PNG"), ImageLimits(max_pixels=1_000_000))
    assert r.reason == "decompression_bomb" and r.detail == "3000x3000"


def test_byte_cap():
    r = validate_image(enc(scene(), "PNG"), ImageLimits(max_bytes=100, min_short_edge=1))
    assert r.reason == "file_too_large"


def test_rgb_jpeg_bytes_are_kept():
    data = enc(scene(), "JPEG", quality=90)
    r = validate_image(data, LIM)
    assert r.reason is None and r.data == data and not r.normalised and r.ext == "jpg"
    assert (r.width, r.height) == (96, 64)


@pytest.mark.parametrize("make", [
    lambda: enc(scene().convert("CMYK"), "JPEG"),
    lambda: enc(scene().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    lambda: enc(Image.fromarray((np.asarray(scene().convert("L"), np.uint16) * 257)), "PNG"),
    lambda: enc(scene().convert("RGBA"), "PNG"),
    lambda: enc(scene().convert("LA"), "PNG"),
    lambda: enc(scene(), "WEBP"),
    lambda: enc(scene(), "PNG"),
])
def test_modes_normalised_to_rgb_jpeg(make):
    r = validate_image(make(), LIM)
    assert r.reason is None
    out = Image.open(io.BytesIO(r.data))
    assert out.mode == "RGB" and out.format == "JPEG" and r.ext == "jpg"
    assert out.size == (96, 64)


def test_png_output_format_is_lossless():
    src = scene()
    r = validate_image(enc(src.convert("RGBA"), "PNG"), ImageLimits(min_short_edge=32, output_format="png"))
    out = Image.open(io.BytesIO(r.data))
    assert out.format == "PNG" and np.array_equal(np.asarray(out), np.asarray(src))


def test_alpha_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    r = validate_image(enc(rgba, "PNG"), ImageLimits(min_short_edge=32, output_format="png"))
    assert np.asarray(Image.open(io.BytesIO(r.data))).min() == 255


def test_16bit_scaled_not_clipped():
    arr = np.full((40, 40), 32768, np.uint16)
    r = validate_image(enc(Image.fromarray(arr), "PNG"), ImageLimits(min_short_edge=32, output_format="png"))
    v = np.asarray(Image.open(io.BytesIO(r.data)))[0, 0, 0]
    assert 126 <= v <= 129


def test_exif_orientation_applied():
    upright = scene(96, 64)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 64x96 on disk
    exif = Image.Exif()
    exif[0x0112] = 6
    r = validate_image(enc(stored, "JPEG", exif=exif.tobytes(), quality=95), LIM)
    assert (r.width, r.height) == (96, 64) and r.normalised
    out = np.asarray(Image.open(io.BytesIO(r.data))).astype(int)
    # the red quadrant is back at the top-left
    assert out[5, 5, 0] > 200 and out[5, 5, 1] < 60


def test_min_short_edge_and_aspect():
    assert validate_image(enc(scene(96, 64), "PNG"), ImageLimits(min_short_edge=448)).reason == "short_edge_too_small"
    assert validate_image(enc(scene(96, 32), "PNG"), ImageLimits(min_short_edge=16, max_aspect_ratio=2)).reason == \
        "aspect_ratio_too_large"


def test_phash_near_and_far():
    a = scene(400, 300)
    b = Image.open(io.BytesIO(enc(a, "JPEG", quality=60)))
    c = Image.fromarray(np.random.default_rng(5).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    ha, hb, hc = phash64(a), phash64(b), phash64(c)
    assert bin(ha ^ hb).count("1") <= 4
    assert bin(ha ^ hc).count("1") > 12
    assert 0 <= ha < 2**64


def photo(w=640, h=480):
    """A smooth picture (pHash is meant for photographs, not noise)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack([128 + 100 * np.sin(x / 50), 128 + 100 * np.cos(y / 40), 128 + 60 * np.sin((x + y) / 90)], -1)
    arr[h // 4: h // 2, w // 4: w // 2] = (240, 30, 30)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def hamming(a, b):
    return bin(a ^ b).count("1")


def test_large_jpeg_decoded_reduced_still_fails_when_broken():
    data = enc(photo(), "JPEG", quality=90)
    for cut in (0.3, 0.9):
        r = validate_image(data[: int(len(data) * cut)], LIM)
        assert r.reason == "decode_error" and "truncated" in r.detail
    broken = bytearray(data)
    broken[len(data) // 2: len(data) // 2 + 200] = b"\xff" * 200
    assert validate_image(bytes(broken), LIM).reason == "decode_error"


def test_reduced_decode_hashes_like_the_full_picture():
    img = photo()
    jpg = validate_image(enc(img, "JPEG", quality=90), LIM)
    png = validate_image(enc(img, "PNG"), LIM)
    assert jpg.data is not None and not jpg.normalised and (jpg.width, jpg.height) == (640, 480)
    assert png.normalised and (png.width, png.height) == (640, 480)
    # the JPEG's reduced decode and the PNG's full pixels give near-identical hashes, so a
    # re-encoded copy is still found as a near duplicate across formats
    assert hamming(jpg.phash, png.phash) <= 2
    assert hamming(jpg.phash, phash64(img)) <= 2


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_large_jpeg_in_another_mode_is_decoded_whole_and_reencoded(mode):
    r = validate_image(enc(photo().convert(mode), "JPEG", quality=90), LIM)
    assert r.normalised and r.source_mode == mode and (r.width, r.height) == (640, 480)
    out = Image.open(io.BytesIO(r.data))
    assert out.mode == "RGB" and out.size == (640, 480)


def test_large_rotated_jpeg_is_turned_and_hashed_upright():
    upright = photo(640, 480)
    exif = Image.Exif()
    exif[0x0112] = 6
    r = validate_image(enc(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes(), quality=95), LIM)
    assert (r.width, r.height) == (640, 480) and r.normalised
    assert Image.open(io.BytesIO(r.data)).size == (640, 480)
    assert hamming(r.phash, phash64(upright)) <= 2


def test_image_phash_is_what_validate_records():
    data = enc(photo(), "JPEG", quality=80)
    assert image_phash(data) == validate_image(data, LIM).phash
    assert image_phash(b"<html>") is None
