"""International hostnames (issue 14, item 7): hosts are read as browsers read them (IDNA,
UTS #46) before the safety check and before the download."""
from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fusionweave.transforms.url_safety import AddressPolicy, canonical_host, normalise_url, url_refusal
from tests.helpers import all_rejects, curate_and_verify, write_recipe

DEFAULT = AddressPolicy()
UNICODE_HOST = "bücher.test"  # .test: reserved (RFC 2606), never a real name
ASCII_HOST = "xn--bcher-kva.test"


@pytest.mark.parametrize("url,reason", [
    ("http://ｌｏｃａｌｈｏｓｔ/a.jpg", "private_address"),  # fullwidth letters
    ("http://ＬＯＣＡＬＨＯＳＴ./a.jpg", "private_address"),
    ("http://ℓocalhost/a.jpg", "private_address"),  # script small l
    ("http://127。0。0。1/a.jpg", "private_address"),  # ideographic full stops
    ("http://１２７．０．０．１:8000/a.jpg", "private_address"),  # fullwidth digits and stops
    ("http://①②⑦.0.0.1/a.jpg", "private_address"),  # circled digits
    ("http://⑫⑦.0.0.1/a.jpg", "private_address"),
    ("http://𝟏𝟐𝟕.𝟎.𝟎.𝟏/a.jpg", "private_address"),  # mathematical bold digits
    ("http://１０.０.０.７/a.jpg", "private_address"),
    ("http://0ｘ7f.1/a.jpg", "private_address"),  # fullwidth x in a hex literal
    ("http://127.0.0.%31/a.jpg", "private_address"),  # percent-encoded host
    ("http://%6c%6fcalhost/a.jpg", "private_address"),
    ("http://①⑥⑨.②⑤④.①⑥⑨.②⑤④/latest/meta-data/", "metadata_address"),
    ("http://ｍｅｔａｄａｔａ.google.internal/computeMetadata/v1/", "metadata_address"),
    ("http://exa mple.com/a.jpg", "malformed_url"),  # a space in the host
    ("http://ex%20ample.com/a.jpg", "malformed_url"),
    ("http://a%2fb.com/a.jpg", "malformed_url"),
    ("http://⒈⒉⒎.0.0.1/a.jpg", "malformed_url"),  # disallowed by UTS #46
    ("http://\u200d.com/a.jpg", "malformed_url"),  # a joiner out of context: invalid IDNA
    ("http://bücher.example/a.jpg", None),
    ("http://b%C3%BCcher.example/a.jpg", None),
    ("http://x_y.bücher.de/a.jpg", None),  # ASCII labels keep what the web uses
])
def test_unicode_spellings_are_judged_as_what_they_map_to(url, reason):
    assert url_refusal(url, DEFAULT) == reason


def test_hosts_normalise_to_ascii():
    assert normalise_url("http://bücher.example/a.jpg?q=1#f") == "http://xn--bcher-kva.example/a.jpg?q=1"
    assert normalise_url("HTTP://BÜCHER.example.:80/a") == "http://xn--bcher-kva.example/a"
    assert normalise_url("http://１２７。０。０。１:8000/a") == "http://127.0.0.1:8000/a"
    # Unicode and punycode spellings are one URL for dedup and for the key
    assert normalise_url("http://xn--bcher-kva.example/a") == normalise_url("http://bücher.example/a")
    assert canonical_host("ß.de") == "xn--zca.de"  # non-transitional, as browsers do now
    for bad in ("http://exa mple.com/x", "http://⒈.com/x"):
        with pytest.raises(ValueError):
            normalise_url(bad)


def test_paths_and_queries_are_percent_encoded_as_browsers_send_them():
    # urllib refuses a space and cannot encode a non-ASCII character in the request line
    assert normalise_url("http://x.org/Bild ä.jpg?q=ü v&x=\"1\"") == "http://x.org/Bild%20%C3%A4.jpg?q=%C3%BC%20v&x=%221%22"
    assert normalise_url("http://x.org/Bild%20%C3%A4.jpg") == normalise_url("http://x.org/Bild ä.jpg")
    assert normalise_url("http://x.org/a\tb\n.jpg?a=b?c&d=/e") == "http://x.org/ab.jpg?a=b?c&d=/e"


def test_fast_path_agrees_with_urlsplit_on_encoded_urls():
    from fusionweave.transforms.url_safety import _normalise_general, _refusal_general

    p = AddressPolicy(allowed=("127.0.0.1",))
    for u in ["http://127.0.0.%31:8000/x", "http://%6c%6fcalhost/x", "http://x.org/Bild ä.jpg?q=ü",
              "http://x.org/a\tb.jpg", "http://x.org/{a}?b='c'"]:
        assert normalise_url(u) == _normalise_general(u), u
        assert url_refusal(u, p) == _refusal_general(u, p), u


def test_allowed_hosts_match_their_unicode_spellings():
    p = AddressPolicy(allowed=("127.0.0.1",))
    assert url_refusal("http://１２７.０.０.１:9000/x", p) is None
    assert url_refusal("http://ｌｏｃａｌｈｏｓｔ:9000/x", p) == "private_address"
    assert p.address_refusal("ｌｏｃａｌｈｏｓｔ") == "private_address"  # the connection guard's check too


# A test-only resolver: the download's guarded connection looks up UNICODE_HOST's ASCII form and
# gets 127.0.0.1. It is loaded into every process of the build (driver and Ray workers) through
# PYTHONPATH, and records each name asked for.
RESOLVER = '''
import os, socket
_real = socket.getaddrinfo
def getaddrinfo(host, *args, **kw):
    if isinstance(host, str) and host.lower() == {ascii_host!r}:
        with open(os.environ["FW_TEST_LOOKUPS"], "a") as f:
            f.write(host + "\\n")
        host = "127.0.0.1"
    return _real(host, *args, **kw)
socket.getaddrinfo = getaddrinfo
'''


def _jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (480, 520, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.heavy
def test_idna_hosts_through_the_cli(tmp_path):
    from fusionweave.pipelines.fixtures.sample_server import SampleServer

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RESOLVER.format(ascii_host=ASCII_HOST))
    lookups = tmp_path / "lookups.txt"
    (tmp_path / "images").mkdir()
    for i in range(2):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(_jpeg(i))
    # the sample server does not unquote paths: the file is named as the request must spell it
    (tmp_path / "images" / "Bild%20%C3%A4.jpg").write_bytes(_jpeg(2))
    with SampleServer(tmp_path) as srv:
        port = srv.base_url.rsplit(":", 1)[1]
        urls = {
            f"http://{UNICODE_HOST}:{port}/images/0.jpg": None,  # resolved by the hook, downloaded
            f"http://{ASCII_HOST}:{port}/images/0.jpg": "duplicate_url",  # the same URL, spelled in ASCII
            f"http://１２７。０。０。１:{port}/images/1.jpg": None,  # the allowed test server, in Unicode
            f"http://127.0.0.1:{port}/images/Bild ä.jpg": None,  # a space and a non-ASCII letter in the path
            f"http://ｌｏｃａｌｈｏｓｔ:{port}/images/1.jpg": "private_address",
            "http://①⑥⑨.②⑤④.①⑥⑨.②⑤④/latest/meta-data/": "metadata_address",
            f"http://exa mple.com:{port}/images/1.jpg": "malformed_url",
            "http://⒈⒉⒎.0.0.1/a.jpg": "malformed_url",
        }
        parquet = tmp_path / "laion.parquet"
        pq.write_table(pa.table({"URL": list(urls), "TEXT": [f"caption {i}" for i in range(len(urls))],
                                 "WIDTH": [520.0] * len(urls), "HEIGHT": [480.0] * len(urls)}), parquet)
        recipe = write_recipe(tmp_path / "curate.yaml", parquet)
        out = tmp_path / "out"
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
               "FW_TEST_LOOKUPS": str(lookups)}
        stats = curate_and_verify(recipe, out, env=env)

    assert stats["metadata"]["rows_in"] == len(urls)
    assert stats["metadata"]["rejects_by_reason"] == Counter(r for r in urls.values() if r)
    assert stats["download"]["rejected"] == 0 and stats["validate"]["rejected"] == 0
    rej = all_rejects(out, "metadata")
    assert {r["url"]: r["reason"] for r in rej.to_pylist()} == {u: r for u, r in urls.items() if r}
    # downloaded with the host in ASCII: the guarded connection asked for the punycode name
    assert lookups.read_text().split() and set(lookups.read_text().split()) == {ASCII_HOST}
    kept = pq.read_table(sorted((out / "metadata").glob("shard-*.parquet"))[0]).column("url").to_pylist()
    assert kept == [f"http://{ASCII_HOST}:{port}/images/0.jpg", f"http://127.0.0.1:{port}/images/1.jpg",
                    f"http://127.0.0.1:{port}/images/Bild%20%C3%A4.jpg"]
    assert sorted(_validated_urls(out)) == sorted(kept)


def _validated_urls(out: Path) -> list[str]:
    import webdataset as wds

    files = sorted(str(p) for p in (out / "validate").glob("shard-*.tar"))
    return [json.loads(s["json"])["url"] for s in wds.WebDataset(files, shardshuffle=False)]


def test_allowed_hosts_are_compared_in_their_ascii_form() -> None:
    import pydantic

    from fusionweave.pipelines.curate.config import UrlPolicyConfig

    cfg = UrlPolicyConfig(allow_private_networks=["Bücher.Intern", "10.0.0.0/8", "127.0.0.1"])
    assert cfg.policy().allowed == ("xn--bcher-kva.intern", "10.0.0.0/8", "127.0.0.1")
    assert cfg.policy().address_refusal("bücher.intern") is None
    with pytest.raises(pydantic.ValidationError, match="allow_private_networks"):
        UrlPolicyConfig(allow_private_networks=["exa mple.test"])
