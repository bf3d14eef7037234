"""A loopback HTTP server for the sample data, with the failure routes the tests need:
/images/NAME, /status/CODE/..., /slow/... (sleeps past timeouts), /loop/... (redirect loop),
/redirect-private/... (redirects to 10.0.0.1), /noai/NAME (X-Robots-Tag: noai)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def make_handler(root: Path, slow_seconds: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str = "image/jpeg", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            parts = self.path.split("?")[0].strip("/").split("/")
            kind = parts[0] if parts else ""
            if kind == "images" and len(parts) == 2:
                f = root / "images" / parts[1]
                if f.is_file() and f.resolve().parent == (root / "images").resolve():
                    return self._send(200, f.read_bytes())  # always claims image/jpeg, like many CDNs
                return self._send(404, b"not found", "text/plain")
            if kind == "noai" and len(parts) == 2:
                f = root / "images" / parts[1]
                return self._send(200, f.read_bytes() if f.is_file() else b"", headers={"X-Robots-Tag": "noai"})
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

    def __init__(self, root: str | Path, port: int = 0, slow_seconds: float = 12.0):
        self.httpd = _QuietServer(("127.0.0.1", port), make_handler(Path(root), slow_seconds))
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
