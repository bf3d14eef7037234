"""Response bodies at the edges (issue 14, items 4-6): a body cut short of its Content-Length,
a Content-Encoding on an image, and a total deadline per download. First img2dataset's own
`download_image` through our opener against loopback servers, then the real CLI on the
planted cases."""
from __future__ import annotations

import gzip
import io
import socket
import threading
import time
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fusionweave.pipelines.curate.safe_http import build_opener, classify_error
from fusionweave.pipelines.fixtures.sample_server import SampleServer
from fusionweave.transforms.url_safety import AddressPolicy
from tests.helpers import all_rejects, curate_and_verify, write_recipe

ROUTES = ["images", "truncated", "gzip", "deflate", "br", "drip"]


def jpeg(seed: int, side: int = 480) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


IMAGE = jpeg(0)


class Edges(BaseHTTPRequestHandler):
    """Cases the sample server has no route for."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: object) -> None:
        pass

    def _reply(self, body: bytes, headers: dict[str, str], length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        kind, _, arg = self.path.strip("/").partition("/")
        if kind == "chunked-cut":  # one chunk, then the connection ends without the last chunk
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (1000, IMAGE[:1000]))
            self.close_connection = True
        elif kind == "encoding":  # labelled with any Content-Encoding, the body left as is
            self._reply(IMAGE, {"Content-Encoding": arg.replace("+", ", ")})
        elif kind == "raw-deflate":  # "deflate" without the zlib header, as some servers send it
            c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            self._reply(c.compress(IMAGE) + c.flush(), {"Content-Encoding": "deflate"})
        elif kind == "gzip-bomb":  # 4 MB of zeros in a few KB
            self._reply(gzip.compress(b"\0" * 4_000_000), {"Content-Encoding": "gzip"})
        elif kind == "gzip-corrupt":
            self._reply(b"\x1f\x8b\x08\x00garbage-not-deflate", {"Content-Encoding": "gzip"})
        elif kind == "gzip-cut":  # a complete HTTP body holding half a gzip stream
            self._reply(gzip.compress(IMAGE)[:2000], {"Content-Encoding": "gzip"})
        elif kind == "drip-headers":  # the status line, then one header byte every 0.2 s
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for b in b"X-Slow: " + b"z" * 200:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                time.sleep(0.2)
        elif kind == "to-drip":  # a redirect to the sample server's drip
            self.send_response(302)
            self.send_header("Location", arg.replace("~", "/"))
            self.send_header("Content-Length", "0")
            self.end_headers()


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, *a: object) -> None:
            pass  # clients hang up on drips: that is the point

    httpd = Quiet(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def edges() -> Iterator[str]:
    yield from serve(Edges)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("bodies")
    (root / "images").mkdir()
    (root / "images" / "a.jpg").write_bytes(IMAGE)
    with SampleServer(root, drip_seconds=0.2) as srv:
        yield srv.base_url


def download(url: str, monkeypatch: pytest.MonkeyPatch, *, timeout: float = 5, deadline: float = 5,
             max_bytes: int = 1_000_000) -> tuple[bytes | str, float]:
    """img2dataset's own download call through our opener: the bytes, or the reject reason;
    and the seconds it took."""
    from img2dataset.downloader import download_image

    opener = build_opener(AddressPolicy(allowed=("127.0.0.1",)), max_bytes=max_bytes, max_redirects=5,
                          deadline=deadline)
    monkeypatch.setattr(urllib.request, "_opener", opener)
    t0 = time.monotonic()
    _, stream, err = download_image((0, url), timeout, "fusionweave", None)
    took = time.monotonic() - t0
    return (stream.getvalue() if stream is not None else classify_error(err)), took


# --- 4. a body shorter than its Content-Length ----------------------------------------------

def test_body_short_of_content_length_is_truncated(sample: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert download(f"{sample}/truncated/a.jpg", monkeypatch)[0] == "truncated_body"
    assert download(f"{sample}/images/a.jpg", monkeypatch)[0] == IMAGE


def test_chunked_body_cut_short_is_truncated(edges: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert download(f"{edges}/chunked-cut", monkeypatch)[0] == "truncated_body"


# --- 5. Content-Encoding -------------------------------------------------------------------

@pytest.mark.parametrize("route", ["gzip", "deflate"])
def test_gzip_and_deflate_are_decoded(sample: str, route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert download(f"{sample}/{route}/a.jpg", monkeypatch)[0] == IMAGE


def test_raw_deflate_is_decoded(edges: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert download(f"{edges}/raw-deflate", monkeypatch)[0] == IMAGE


@pytest.mark.parametrize("path", ["encoding/br", "encoding/zstd", "encoding/compress", "encoding/gzip+br"])
def test_unknown_encodings_are_refused_by_name(edges: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from img2dataset.downloader import download_image

    assert download(f"{edges}/{path}", monkeypatch)[0] == "unsupported_content_encoding"
    _, _, err = download_image((0, f"{edges}/{path}"), 5, None, None)
    assert f"unsupported Content-Encoding: {path.split('/')[1].split('+')[-1]}" in err


def test_identity_encoding_is_no_encoding(edges: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert download(f"{edges}/encoding/identity", monkeypatch)[0] == IMAGE


@pytest.mark.parametrize("path,reason", [("gzip-bomb", "response_too_large"), ("gzip-corrupt", "bad_content_encoding"),
                                         ("gzip-cut", "truncated_body")])
def test_bad_gzip_bodies(edges: str, path: str, reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    got, took = download(f"{edges}/{path}", monkeypatch, max_bytes=1_000_000)
    assert got == reason and took < 5


# --- 6. a total deadline per download --------------------------------------------------------

@pytest.mark.parametrize("route", ["drip-body", "drip-headers", "redirect-to-drip"])
def test_drip_ends_at_the_deadline(sample: str, edges: str, route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = {"drip-body": f"{sample}/drip/a.jpg", "drip-headers": f"{edges}/drip-headers",
           "redirect-to-drip": f"{edges}/to-drip/{sample.replace('/', '~')}~drip~a.jpg"}[route]
    # every gap (0.2 s) is well inside the socket timeout; only the deadline can end it
    got, took = download(url, monkeypatch, timeout=5, deadline=1.5)
    assert got == "timeout"
    assert 1.4 < took < 3.5


def test_tls_handshake_stall_ends_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that never accepts: the TCP connect succeeds (the kernel's backlog), the TLS
    handshake then waits forever for a ServerHello."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        got, took = download(f"https://127.0.0.1:{listener.getsockname()[1]}/x.jpg", monkeypatch,
                             timeout=30, deadline=1)
    assert got == "timeout" and took < 3


def test_hung_dns_lookup_ends_at_the_deadline(sample: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def hung(host: str, *a: object, **kw: object) -> list:
        if host == "hung.test":
            time.sleep(3)
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    opener = build_opener(AddressPolicy(allowed=("hung.test",)), max_bytes=1000, max_redirects=0, deadline=0.5)
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        opener.open(f"http://hung.test:{sample.rsplit(':', 1)[1]}/images/a.jpg", timeout=30)
    assert classify_error(str(e.value)) == "timeout" and time.monotonic() - t0 < 1.5


def test_fast_downloads_are_unaffected_after_the_deadline(sample: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog shuts down each request's socket at its deadline, long after the request
    is done: that must not touch later requests."""
    assert download(f"{sample}/images/a.jpg", monkeypatch, deadline=0.3)[0] == IMAGE
    time.sleep(0.5)
    assert all(download(f"{sample}/gzip/a.jpg", monkeypatch, deadline=5)[0] == IMAGE for _ in range(5))


@pytest.mark.parametrize("msg,reason", [
    ("truncated body: 100 of 200 bytes (Content-Length)", "truncated_body"),
    ("IncompleteRead(10 bytes read, 5 more expected)", "truncated_body"),
    ("unsupported Content-Encoding: br", "unsupported_content_encoding"),
    ("bad gzip Content-Encoding: Error -3 while decompressing data", "bad_content_encoding"),
    ("response too large: gzip-decoded body > 10 bytes", "response_too_large"),
    ("<urlopen error download deadline of 2 s exceeded (timed out)>", "timeout"),
])
def test_classify_new_messages(msg: str, reason: str) -> None:
    assert classify_error(msg) == reason


# --- the real CLI on planted cases ----------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str], dict[str, dict]]]:
    """One image per route, each a distinct 480x480 JPEG, built by the CLI with a 2 s deadline;
    every stage balanced and `fusionweave verify OUT` clean (curate_and_verify)."""
    root = tmp_path_factory.mktemp("bodies-cli")
    (root / "images").mkdir()
    with SampleServer(root, drip_seconds=0.5) as srv:
        urls = {}
        for i, route in enumerate(ROUTES):
            (root / "images" / f"{route}.jpg").write_bytes(jpeg(100 + i))
            urls[route] = f"{srv.base_url}/{route}/{route}.jpg"
        pq.write_table(pa.table({"URL": list(urls.values()), "TEXT": [f"a {r} picture" for r in urls],
                                 "WIDTH": [480.0] * len(urls), "HEIGHT": [480.0] * len(urls)}), root / "in.parquet")
        recipe = write_recipe(root / "c.yaml", root / "in.parquet", download={"deadline": 2, "timeout": 5},
                              validate={"near_dup": False})
        stats = curate_and_verify(recipe, root / "out")
    yield root / "out", urls, stats


def reasons_by_url(out: Path, stage: str) -> dict[str, str]:
    rej = all_rejects(out, stage)
    return {r["url"]: r["reason"] for r in rej.to_pylist()} if rej is not None else {}


def kept_urls(out: Path) -> set[str]:
    import webdataset as wds

    files = sorted(str(p) for p in (out / "validate").glob("shard-*.tar"))
    return {s["json"]["url"] for s in wds.WebDataset(files, shardshuffle=False).decode()}


@pytest.mark.heavy
def test_cli_truncated_body(built: tuple[Path, dict[str, str], dict[str, dict]]) -> None:
    out, urls, stats = built
    assert reasons_by_url(out, "download")[urls["truncated"]] == "truncated_body"
    assert stats["download"]["rejects_by_reason"]["truncated_body"] == 1
    assert urls["images"] in kept_urls(out)


@pytest.mark.heavy
def test_cli_content_encoding(built: tuple[Path, dict[str, str], dict[str, dict]]) -> None:
    out, urls, stats = built
    assert {urls["gzip"], urls["deflate"]} <= kept_urls(out)
    assert reasons_by_url(out, "download")[urls["br"]] == "unsupported_content_encoding"
    assert stats["validate"]["rejected"] == 0  # the decoded bytes are the real images


@pytest.mark.heavy
def test_cli_drip_is_a_timeout(built: tuple[Path, dict[str, str], dict[str, dict]]) -> None:
    out, urls, stats = built
    assert reasons_by_url(out, "download")[urls["drip"]] == "timeout"
    assert stats["download"]["rows_in"] == len(ROUTES)
    assert stats["download"]["rejects_by_reason"] == {"truncated_body": 1, "unsupported_content_encoding": 1,
                                                      "timeout": 1}
