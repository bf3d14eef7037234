"""A loopback HTTP server for the sample data, with the failure routes the tests need:
/images/NAME, /status/CODE/..., /slow/... (sleeps past timeouts), /loop/... (redirect loop),
/redirect-private/... (redirects to 10.0.0.1), /noai/NAME (X-Robots-Tag: noai), /truncated/NAME
(half the body of its Content-Length, then hangs up), /gzip/NAME and /deflate/NAME (encoded with
Content-Encoding, as some servers send whatever the client asked for), /br/NAME (labelled
Content-Encoding: br) and /drip/NAME (one byte every `drip_seconds`: never a gap long enough
for a socket timeout)."""
from __future__ import annotations

import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


# route -> (Content-Encoding, encoder) for images served encoded
ENCODED = {"gzip": ("gzip", lambda b: zlib.compress(b, wbits=16 + zlib.MAX_WBITS)),
           "deflate": ("deflate", zlib.compress),
           "br": ("br", lambda b: b)}  # only labelled: the client must refuse it by the header alone


def make_handler(root: Path, slow_seconds: float, drip_seconds: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _head(self, code: int, length: int, ctype: str = "image/jpeg",
                  headers: dict[str, str] | None = None) -> bool:
            """Status and headers; True when a body should follow (not for HEAD)."""
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            return self.command != "HEAD"

        def _send(self, code: int, body: bytes, ctype: str = "image/jpeg", headers: dict[str, str] | None = None) -> None:
            if self._head(code, len(body), ctype, headers):
                self.wfile.write(body)

        def _image(self, name: str) -> bytes | None:
            f = root / "images" / name
            return f.read_bytes() if f.is_file() and f.resolve().parent == (root / "images").resolve() else None

        def _truncated(self, body: bytes) -> None:
            if self._head(200, len(body)):
                self.wfile.write(body[: len(body) // 2])
            self.close_connection = True  # the client sees the end of the stream mid-body

        def _drip(self, body: bytes) -> None:
            if self._head(200, len(body)):
                for i in range(len(body)):  # ends when the client hangs up (a broken pipe)
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(drip_seconds)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            parts = self.path.split("?")[0].strip("/").split("/")
            kind = parts[0] if parts else ""
            image = self._image(parts[1]) if len(parts) == 2 else None
            if kind == "images" and image is not None:
                return self._send(200, image)  # always claims image/jpeg, like many CDNs
            if kind == "noai" and image is not None:
                return self._send(200, image, headers={"X-Robots-Tag": "noai"})
            if kind in ENCODED and image is not None:
                coding, encode = ENCODED[kind]
                return self._send(200, encode(image), headers={"Content-Encoding": coding})
            if kind == "truncated" and image is not None:
                return self._truncated(image)
            if kind == "drip" and image is not None:
                return self._drip(image)
            if kind == "status" and len(parts) >= 2 and parts[1].isdigit():
                return self._send(int(parts[1]), b"error", "text/plain")
            if kind == "slow":
                time.sleep(slow_seconds)
                return self._send(200, b"late", "text/plain")
            if kind == "loop":
                return self._send(302, b"", "text/plain", {"Location": self.path})
            if kind == "redirect-private":
                return self._send(302, b"", "text/plain", {"Location": "http://10.0.0.1/x.jpg"})
            return self._send(404, b"not found", "text/plain")

    return Handler


class _QuietServer(ThreadingHTTPServer):
    # the default backlog of 5 drops connection attempts when many download threads connect at
    # once; the kernel then retries after a second, which turns into spurious timeouts
    request_queue_size = 512
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out on /slow hang up mid-response; that is the point


class SampleServer:
    """`with SampleServer(root) as s: s.base_url` serves on 127.0.0.1 only."""

    def __init__(self, root: str | Path, port: int = 0, slow_seconds: float = 12.0, drip_seconds: float = 0.5):
        self.httpd = _QuietServer(("127.0.0.1", port), make_handler(Path(root), slow_seconds, drip_seconds))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "SampleServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
