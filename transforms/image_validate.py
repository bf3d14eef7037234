"""Decode, measure, normalise and hash images. Pure PIL/numpy: no engine, no model."""
from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError



@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 89_478_485  # PIL's default bomb threshold
    min_short_edge: int = 448
    max_aspect_ratio: float | None = None
    jpeg_quality: int = 95
    # "jpg" or "png": one image member type for every sample, which Hugging Face `datasets`
    # and Ray Data need (they infer one schema); "original": keep the source container
    output_format: str = "jpg"


@dataclass
class ValidatedImage:
    data: bytes | None
    ext: str | None
    width: int = 0
    height: int = 0
    source_format: str | None = None
    source_mode: str | None = None
    normalised: bool = False
    sha256: str | None = None
    phash: int | None = None
    reason: str | None = None
    detail: str | None = None


MAGIC = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)
# ISO-BMFF brands (ftyp box, major or compatible) of the one HEIF-family codec Pillow decodes
AVIF_BRANDS = frozenset({b"avif", b"avis"})
# The only decoders untrusted bytes are handed to (Pillow name -> member extension): raster
# formats browsers show. Never all of Pillow's plugins: EPS, for one, runs Ghostscript.
DECODERS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tiff", "AVIF": "avif"}


def sniff_format(data: bytes) -> str | None:
    """File type from magic bytes (never from a URL or a Content-Type header): an extension
    in DECODERS, or None. A fast path only: `validate_image` lets the decoder identify what
    the sniff does not know."""
    for magic, ext in MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        return _heif_brand(data)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF, BigTIFF
        return "tiff"
    return None


def _heif_brand(data: bytes) -> str | None:
    """"avif" when the ftyp box names AVIF among its brands. The major brand is often the
    container's (`mif1`, `msf1`) and the codec is named only among the compatible brands.
    HEIC has no decoder here (None: the validate stage calls it not_an_image)."""
    size = int.from_bytes(data[:4], "big")
    end = min(max(size, 16), len(data), 4096)
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}
    return "avif" if brands & AVIF_BRANDS else None


@functools.cache
def _decoders() -> tuple[str, ...]:
    """DECODERS this Pillow build has (Image.open raises on an unregistered name)."""
    Image.init()
    return tuple(name for name in DECODERS if name in Image.OPEN)


def open_image(data: bytes) -> Image.Image:
    """Pillow's lazy open, limited to DECODERS: how untrusted bytes reach a decoder. Raises
    PIL.UnidentifiedImageError when none of them recognises the bytes."""
    return Image.open(io.BytesIO(data), formats=_decoders())


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB with alpha composited on white; 16-bit and float greys scaled to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def validate_image(data: bytes | None, limits: ImageLimits) -> ValidatedImage:
    """Everything the validate stage needs from one encoded image, or a reject reason.

    A JPEG is decoded once, at reduced scale (libjpeg's DCT scaling): the whole entropy-coded
    stream is still read, so truncated or corrupt files fail as in a full decode, and the small
    picture is all the pHash needs. Full pixels are decoded only for an image that must be
    re-encoded (another colour mode, an EXIF rotation, another output format). The pHash always
    comes from the reduced decode, whatever the settings: it is a function of the bytes alone, so
    `image_phash` gives what any build recorded."""
    if not data:
        return ValidatedImage(None, None, reason="empty_file")
    if len(data) > limits.max_bytes:
        return ValidatedImage(None, None, reason="file_too_large", detail=f"{len(data)} bytes")
    d = _decode(data, sniff_format(data), limits, reduced=True)  # the sniff is a fast path; the decoder has the last word
    if isinstance(d, ValidatedImage):
        return d
    fmt, mode = d.fmt, d.mode
    upright = _upright(d.img, d.orientation)
    rotated = upright is not d.img
    w, h = d.size[::-1] if rotated and d.orientation in _SWAPS_AXES else d.size
    short, long_ = min(w, h), max(w, h)
    if short < limits.min_short_edge:
        return ValidatedImage(None, None, w, h, fmt, mode, reason="short_edge_too_small", detail=f"{w}x{h}")
    if limits.max_aspect_ratio is not None and long_ / short > limits.max_aspect_ratio:
        return ValidatedImage(None, None, w, h, fmt, mode, reason="aspect_ratio_too_large", detail=f"{w}x{h}")
    phash = phash64(upright)
    target = limits.output_format
    if target == "original":
        target = "jpg" if fmt == "jpg" or (fmt == "webp" and mode == "RGB") else "png"
    keep_bytes = fmt == target and mode == "RGB" and not rotated
    if keep_bytes:
        out, ext = data, fmt
    else:
        if d.reduced:
            d = _decode(data, fmt, limits, reduced=False)
            if isinstance(d, ValidatedImage):
                return d
            upright = _upright(d.img, d.orientation)
        rgb = to_rgb(upright)
        buf = io.BytesIO()
        if target == "jpg":
            rgb.save(buf, format="JPEG", quality=limits.jpeg_quality)
        else:
            rgb.save(buf, format="PNG", optimize=False)
        out, ext = buf.getvalue(), target
    return ValidatedImage(out, ext, w, h, fmt, mode, normalised=not keep_bytes,
                          sha256=hashlib.sha256(data).hexdigest(), phash=phash)


# EXIF orientations that turn the picture by 90 degrees (width and height swap)
_SWAPS_AXES = frozenset({5, 6, 7, 8})
PHASH_EDGE = 48  # the reduced decode keeps at least this many pixels on the short edge


@dataclass
class _Decoded:
    img: Image.Image  # loaded; for `reduced`, smaller than `size` and possibly grey
    fmt: str | None
    mode: str  # the source's colour mode (before any reduced decode)
    size: tuple[int, int]  # the source's stored size
    orientation: int | None
    reduced: bool


def _decode(data: bytes, fmt: str | None, limits: ImageLimits, reduced: bool) -> _Decoded | ValidatedImage:
    """The loaded image, or a reject. The pixel cap is checked from the header, before any pixel
    is decoded. `reduced`: a JPEG is decoded at the smallest DCT scale that keeps PHASH_EDGE
    pixels on its short edge."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = open_image(data)
        fmt = DECODERS.get(img.format or "", fmt)
        w0, h0 = img.size
        if w0 * h0 > limits.max_pixels:
            return ValidatedImage(None, None, source_format=fmt, reason="decompression_bomb", detail=f"{w0}x{h0}")
        mode, orientation = img.mode, _orientation(img)
        reduced = reduced and img.format == "JPEG" and min(w0, h0) >= 2 * PHASH_EDGE
        if reduced:
            scale = min(w0, h0) / PHASH_EDGE
            img.draft("L" if mode in ("RGB", "L") else mode, (int(w0 / scale), int(h0 / scale)))
        img.load()
        return _Decoded(img, fmt, mode, (w0, h0), orientation, reduced)
    except UnidentifiedImageError as err:
        # no allowed decoder recognises the bytes: not an image, unless the sniff saw an
        # image's magic (then it is a broken one)
        if fmt is None:
            return ValidatedImage(None, None, reason="not_an_image", detail=repr(data[:16]))
        return ValidatedImage(None, None, source_format=fmt, reason="decode_error", detail=str(err)[:300])
    except Image.DecompressionBombError as err:
        return ValidatedImage(None, None, source_format=fmt, reason="decompression_bomb", detail=str(err)[:300])
    except Exception as err:  # noqa: BLE001 - any decoder error is a reject, never a crash
        return ValidatedImage(None, None, source_format=fmt, reason="decode_error",
                              detail=f"{type(err).__name__}: {err}"[:300])


def _upright(img: Image.Image, orientation: int | None) -> Image.Image:
    """`img` turned as its EXIF orientation says; `img` itself when there is nothing to turn
    or the EXIF block is broken (which should not lose the image)."""
    if orientation in (None, 1):
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        return img


def image_phash(data: bytes) -> int | None:
    """The pHash `validate_image` records for these bytes (None: not a decodable image), for
    tools that compare an image against a recorded one."""
    d = _decode(data, sniff_format(data), ImageLimits(), reduced=True)
    return None if isinstance(d, ValidatedImage) else phash64(_upright(d.img, d.orientation))


def _orientation(img: Image.Image) -> int | None:
    try:
        return img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001
        return None


def phash64(img: Image.Image) -> int:
    """imagehash's DCT perceptual hash as an unsigned 64-bit int. Large images are turned grey,
    then reduced with PIL's fast integer `reduce` (to 48-95 px): the hash only looks at 32x32.
    Grey first, as a JPEG's reduced decode does (its luma, box-averaged by the DCT scaling),
    so that a JPEG and a PNG of one picture hash alike."""
    grey = img.convert("L") if img.mode != "L" else img
    factor = max(1, min(img.size) // PHASH_EDGE)
    small = grey.reduce(factor) if factor > 1 else grey
    bits = imagehash.phash(small).hash.flatten()
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])
