"""Generate a LAION-format parquet plus images for local runs, tests and the demo.

The images vary in size, aspect ratio and format (JPEG, PNG, WebP, AVIF, CMYK, palette, 16-bit,
alpha, EXIF-rotated), some carry rendered words, and the set plants exact duplicates, near
duplicates, broken files and bad rows, each listed in `planted.json` with the reject reason
the curate pipeline must give it.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

WORDS = ["HELLO", "FUSION", "WEAVE", "OPEN", "DATA", "SALE", "CAFE", "STOP", "EXIT", "RIVER", "PARK", "MUSEUM"]
COLORS = [(200, 40, 40), (40, 160, 60), (40, 80, 200), (230, 200, 40), (150, 60, 170), (30, 170, 170), (240, 140, 30)]
SHAPES = ["circle", "square", "triangle"]
# served through sample_server's body routes (/KIND/NAME): kind -> reject reason (None: kept)
BODY_ROUTES = {"truncated": "truncated_body", "drip": "timeout", "br": "unsupported_content_encoding",
               "gzip": None, "deflate": None}
# hosts and containers at the edges: kind -> reject reason (None: downloaded and kept).
# idna_host: the sample server's host in fullwidth Unicode; idna_loopback: `localhost` in
# fullwidth; space_host: a space in the host; avif_mif1: AVIF whose major brand is `mif1`
EDGE_CASES = {"idna_host": None, "idna_loopback": "private_address", "space_host": "malformed_url",
              "avif_mif1": None}


def _scene(rng: random.Random, w: int, h: int, words: bool) -> tuple[Image.Image, str]:
    bg = tuple(rng.randint(0, 255) for _ in range(3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    # textured background so that distinct images get distinct perceptual hashes
    for _ in range(12):
        x0, y0 = rng.randint(0, w), rng.randint(0, h)
        d.rectangle([x0, y0, x0 + rng.randint(20, w // 2), y0 + rng.randint(20, h // 2)],
                    fill=tuple(rng.randint(0, 255) for _ in range(3)))
    parts = []
    for _ in range(rng.randint(1, 3)):
        shape, color = rng.choice(SHAPES), rng.choice(COLORS)
        s = rng.randint(min(w, h) // 8, min(w, h) // 3)
        x, y = rng.randint(0, w - s), rng.randint(0, h - s)
        if shape == "circle":
            d.ellipse([x, y, x + s, y + s], fill=color)
        elif shape == "square":
            d.rectangle([x, y, x + s, y + s], fill=color)
        else:
            d.polygon([(x + s // 2, y), (x, y + s), (x + s, y + s)], fill=color)
        parts.append(f"a {shape}")
    text = ""
    if words:
        text = " ".join(rng.sample(WORDS, 2))
        d.rectangle([10, 10, 10 + 14 * len(text), 40], fill=(255, 255, 255))
        d.text((16, 16), text, fill=(0, 0, 0))
    caption = " and ".join(parts) + (f' with the words "{text}"' if text else "")
    return img, caption


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _bomb_png(side: int = 20000) -> bytes:
    """A 20000x20000 PNG of a few hundred KB: a decompression bomb by pixel count."""
    return _encode(Image.new("1", (side, side), 0), "PNG", optimize=True)


def avif_mif1(img: Image.Image) -> bytes:
    """AVIF as many encoders write it: major brand `mif1` (the HEIF container), `avif` only
    among the compatible brands. Pillow writes major `avif` with compatible `avif mif1 miaf`,
    so only the major brand changes (same length: the item offsets stay right)."""
    data = _encode(img, "AVIF")
    if data[4:12] != b"ftypavif" or b"avif" not in data[16:int.from_bytes(data[:4], "big")]:
        raise ValueError(f"unexpected ftyp box from this Pillow's AVIF encoder: {data[:32]!r}")
    return data[:8] + b"mif1" + data[12:]


def _fullwidth(host: str) -> str:
    """`127.0.0.1` spelled `１２７。０。０。１`: IDNA (UTS #46) maps it back to the ASCII host."""
    return "".join("。" if c == "." else chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in host)


def _edge_case(kind: str, name: str, img: Image.Image, base_url: str) -> tuple[str | None, bytes | None, str]:
    """(image file, its bytes, URL) for one of EDGE_CASES."""
    if kind == "avif_mif1":
        return f"{name}.avif", avif_mif1(img), f"{base_url}/images/{name}.avif"
    if kind == "space_host":
        return None, None, f"http://exa mple.com/{name}.jpg"
    base = urlsplit(base_url)
    if kind == "idna_loopback":
        return None, None, f"{base.scheme}://ｌｏｃａｌｈｏｓｔ:{base.port}/images/{name}.jpg"
    host = _fullwidth(base.hostname or "")
    return f"{name}.jpg", _encode(img, "JPEG"), f"{base.scheme}://{host}:{base.port}/images/{name}.jpg"


def generate(n: int, out: str | Path, seed: int = 0, base_url: str = "http://127.0.0.1:8000") -> dict[str, Any]:
    """Write `out/images/*`, `out/laion.parquet` and `out/planted.json`. Returns the planted map."""
    out = Path(out)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    planted: dict[str, list[str]] = {}

    def add(name: str | None, data: bytes | None, caption: str, w: float | None, h: float | None,
            expect: str | None = None, url: str | None = None, **extra: Any) -> None:
        if name is not None and data is not None:
            (img_dir / name).write_bytes(data)
        u = url if url is not None else f"{base_url}/images/{name}"
        rows.append({"URL": u, "TEXT": caption, "WIDTH": w, "HEIGHT": h,
                     "similarity": extra.get("similarity", round(rng.uniform(0.28, 0.4), 4)),
                     "punsafe": extra.get("punsafe", round(rng.uniform(0, 0.1), 4)),
                     "pwatermark": extra.get("pwatermark", round(rng.uniform(0, 0.3), 4)),
                     "LICENSE": "?"})
        if expect:
            planted.setdefault(expect, []).append(u)

    special: list[tuple[str, Any]] = []
    # planted cases, spread through the input
    special += [("exact_dup", None)] * max(2, n // 50)
    special += [("near_dup", None)] * max(2, n // 50)
    special += [("dup_url", None)] * max(2, n // 100)
    special += [(k, None) for k in ["zero_byte", "truncated_jpeg", "html", "tiny", "bomb", "small_real", "small_meta",
                                    "http_404", "http_500", "slow", "redirect_loop", "redirect_private", "robots",
                                    "file_url", "private_ip", "userinfo", "empty_caption", "long_caption", "nan_size",
                                    "cmyk", "palette", "png16", "rgba", "webp", "exif_rotated", "png"]]
    special += [(k, None) for k in BODY_ROUTES]
    special += [(k, None) for k in EDGE_CASES]
    n_normal = max(0, n - len(special))
    kinds = [("normal", None)] * n_normal + special
    rng.shuffle(kinds)
    # the kept originals that duplicates point back to must come earlier in input order
    originals: list[tuple[str, bytes, str, int, int]] = []
    for i, (kind, _) in enumerate(kinds):
        name = f"{i:06d}"
        w, h = rng.randint(460, 900), rng.randint(460, 760)
        img, caption = _scene(rng, w, h, words=rng.random() < 0.3)
        if kind in ("exact_dup", "near_dup", "dup_url") and not originals:
            kind = "normal"
        if kind == "normal":
            data = _encode(img, "JPEG", quality=90)
            add(f"{name}.jpg", data, caption, w, h)
            originals.append((f"{name}.jpg", data, caption, w, h))
        elif kind == "exact_dup":
            src = rng.choice(originals)
            add(f"{name}.jpg", src[1], src[2] + " again", src[3], src[4], "duplicate_sha256")
        elif kind == "near_dup":
            src = rng.choice(originals)
            im = Image.open(io.BytesIO(src[1])).convert("RGB")
            add(f"{name}.jpg", _encode(im, "JPEG", quality=70), src[2], src[3], src[4], "near_duplicate")
        elif kind == "dup_url":
            src = rng.choice(originals)
            add(None, None, src[2] + " (mirror)", src[3], src[4], "duplicate_url", url=f"{base_url}/images/{src[0]}")
        elif kind == "zero_byte":
            add(f"{name}.jpg", b"", caption, w, h, "empty_file")
        elif kind == "truncated_jpeg":
            add(f"{name}.jpg", _encode(img, "JPEG")[:2000], caption, w, h, "decode_error")
        elif kind == "html":
            add(f"{name}.jpg", b"<!doctype html><html><body>Not found</body></html>", caption, w, h, "not_an_image")
        elif kind == "tiny":
            add(f"{name}.png", _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), caption, 500, 500,
                "short_edge_too_small")
        elif kind == "bomb":
            add(f"{name}.png", _bomb_png(), caption, None, None, "decompression_bomb")
        elif kind == "small_real":
            small = img.resize((320, 240))
            add(f"{name}.jpg", _encode(small, "JPEG"), caption, 640, 480, "short_edge_too_small")
        elif kind == "small_meta":
            add(f"{name}.jpg", _encode(img, "JPEG"), caption, 300, 200, "short_edge_too_small")
        elif kind == "http_404":
            add(None, None, caption, w, h, "http_404", url=f"{base_url}/images/missing-{name}.jpg")
        elif kind == "http_500":
            add(None, None, caption, w, h, "http_500", url=f"{base_url}/status/500/{name}.jpg")
        elif kind == "slow":
            add(None, None, caption, w, h, "timeout", url=f"{base_url}/slow/{name}.jpg")
        elif kind == "redirect_loop":
            add(None, None, caption, w, h, "redirect_loop", url=f"{base_url}/loop/{name}.jpg")
        elif kind == "redirect_private":
            add(None, None, caption, w, h, "refused_address", url=f"{base_url}/redirect-private/{name}.jpg")
        elif kind == "robots":
            data = _encode(img, "JPEG")
            (img_dir / f"{name}.jpg").write_bytes(data)
            add(None, None, caption, w, h, "x_robots_tag", url=f"{base_url}/noai/{name}.jpg")
        elif kind in BODY_ROUTES:  # a real image, served cut short, dripped or Content-Encoded
            add(f"{name}.jpg", _encode(img, "JPEG"), caption, w, h, BODY_ROUTES[kind],
                url=f"{base_url}/{kind}/{name}.jpg")
        elif kind in EDGE_CASES:
            file, data, url = _edge_case(kind, name, img, base_url)
            add(file, data, caption, w, h, EDGE_CASES[kind], url=url)
        elif kind == "file_url":
            add(None, None, caption, w, h, "unsupported_scheme", url=f"file:///etc/{name}.jpg")
        elif kind == "private_ip":
            add(None, None, caption, w, h, "private_address", url=f"http://10.{i % 250}.0.7/{name}.jpg")
        elif kind == "userinfo":
            add(None, None, caption, w, h, "userinfo_in_url", url=f"http://user:pw@example.com/{name}.jpg")
        elif kind == "empty_caption":
            add(f"{name}.jpg", _encode(img, "JPEG"), "   ", w, h, "empty_caption")
        elif kind == "long_caption":
            add(f"{name}.jpg", _encode(img, "JPEG"), "long " * 2000, w, h, "caption_too_long")
        elif kind == "nan_size":
            add(f"{name}.jpg", _encode(img, "JPEG"), caption, float("nan"), None)
        elif kind == "cmyk":
            add(f"{name}.jpg", _encode(img.convert("CMYK"), "JPEG"), caption, w, h)
        elif kind == "palette":
            pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
            pal.info["transparency"] = 0
            add(f"{name}.png", _encode(pal, "PNG", transparency=0), caption, w, h)
        elif kind == "png16":
            arr = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
            add(f"{name}.png", _encode(Image.fromarray(arr), "PNG"), caption, w, h)
        elif kind == "rgba":
            rgba = img.convert("RGBA")
            rgba.putalpha(200)
            add(f"{name}.png", _encode(rgba, "PNG"), caption, w, h)
        elif kind == "webp":
            add(f"{name}.webp", _encode(img, "WEBP", quality=90), caption, w, h)
        elif kind == "exif_rotated":
            exif = Image.Exif()
            exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
            rot = img.transpose(Image.Transpose.ROTATE_90)
            add(f"{name}.jpg", _encode(rot, "JPEG", exif=exif.tobytes()), caption, rot.height, rot.width)
        elif kind == "png":
            add(f"{name}.png", _encode(img, "PNG"), caption, w, h)
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("URL", pa.string()), ("TEXT", pa.string()), ("WIDTH", pa.float64()), ("HEIGHT", pa.float64()),
        ("similarity", pa.float64()), ("punsafe", pa.float64()), ("pwatermark", pa.float64()), ("LICENSE", pa.string())]))
    pq.write_table(table, out / "laion.parquet", row_group_size=max(1, n // 4))
    (out / "planted.json").write_text(json.dumps(planted, indent=1, sort_keys=True))
    return planted
