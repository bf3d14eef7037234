"""Image sniffing is a fast path; the decoder decides (issue 14, item 8)."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fusionweave.pipelines.fixtures.sample_laion import avif_mif1
from fusionweave.transforms import image_validate
from fusionweave.transforms.image_validate import ImageLimits, sniff_format, validate_image
from tests.helpers import curate_and_verify, write_recipe

LIMITS = ImageLimits(min_short_edge=32)


def scene(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    """A smooth gradient with a seeded tint: quick to encode as AVIF, distinct perceptual hashes."""
    tint = np.random.default_rng(seed).integers(0, 255, 3)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 255 // w + tint[0]) % 256, (y * 255 // h + tint[1]) % 256,
                    ((x + y) * 128 // (w + h) + tint[2]) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_avif_with_mif1_major_brand_is_sniffed_and_decoded():
    data = avif_mif1(scene())
    assert data[8:12] == b"mif1"
    assert sniff_format(data) == "avif"
    v = validate_image(data, LIMITS)
    assert v.reason is None and (v.width, v.height) == (64, 48)
    assert v.source_format == "avif" and v.ext == "jpg"


def test_decoder_decides_what_the_sniff_does_not_know(monkeypatch):
    monkeypatch.setattr(image_validate, "sniff_format", lambda data: None)  # a format variant the sniff misses
    v = validate_image(avif_mif1(scene()), LIMITS)
    assert v.reason is None and v.source_format == "avif"
    big_tiff = encode(scene(), "TIFF", big_tiff=True)
    assert validate_image(big_tiff, LIMITS).source_format == "tiff"


@pytest.mark.parametrize("data,reason", [
    (b"<!doctype html><html><body>Not found</body></html>", "not_an_image"),
    # a format Pillow could open but untrusted bytes never reach (EPS runs Ghostscript)
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\n", "not_an_image"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "not_an_image"),  # HEIC: no decoder here
    (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "decode_error"),  # JPEG magic, broken body: a broken image
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif" + b"\x00" * 16, "decode_error"),
])
def test_not_images_and_broken_images(data, reason):
    assert validate_image(data, LIMITS).reason == reason


def test_sniff_fast_path():
    assert sniff_format(encode(scene(), "TIFF", big_tiff=True)) == "tiff"
    assert sniff_format(encode(scene(), "TIFF")) == "tiff"
    assert sniff_format(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") is None
    assert sniff_format(b"\x00\x00\x00\x0cftyp") is None  # a truncated box reads nothing past its end


@pytest.mark.heavy
def test_mif1_avif_through_the_cli(tmp_path):
    from fusionweave.pipelines.fixtures.sample_server import SampleServer

    images = tmp_path / "images"
    images.mkdir()
    files = {"a.avif": (avif_mif1(scene(520, 480, seed=1)), None),
             "b.jpg": (encode(scene(520, 480, seed=2), "JPEG"), None),
             "c.jpg": (b"<!doctype html><html><body>Not found</body></html>", "not_an_image")}
    for name, (data, _) in files.items():
        (images / name).write_bytes(data)
    with SampleServer(tmp_path) as srv:
        urls = [f"{srv.base_url}/images/{name}" for name in files]
        parquet = tmp_path / "laion.parquet"
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"caption {n}" for n in files],
                                 "WIDTH": [520.0] * len(urls), "HEIGHT": [480.0] * len(urls)}), parquet)
        out = tmp_path / "out"
        stats = curate_and_verify(write_recipe(tmp_path / "curate.yaml", parquet, validate={"near_dup": False}), out)
    assert stats["metadata"]["rows_in"] == len(files)
    assert stats["metadata"]["rejected"] == stats["download"]["rejected"] == 0
    assert stats["validate"]["rejects_by_reason"] == {"not_an_image": 1}
    import webdataset as wds

    shards = sorted(str(p) for p in (out / "validate").glob("shard-*.tar"))
    got = {json.loads(s["json"])["url"].rsplit("/", 1)[1]: json.loads(s["json"]) for s in wds.WebDataset(shards, shardshuffle=False)}
    assert set(got) == {"a.avif", "b.jpg"}
    assert got["a.avif"]["source_format"] == "avif" and (got["a.avif"]["width"], got["a.avif"]["height"]) == (520, 480)
    # the download stage named the member by the sniff: an .avif member, not .bin
    dl = sorted(str(p) for p in (out / "download").glob("shard-*.tar"))
    assert any("avif" in s for s in wds.WebDataset(dl, shardshuffle=False))
