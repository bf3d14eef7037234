"""The download guard against a real server on 127.0.0.1."""
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fusionweave.pipelines.curate.safe_http import build_opener, classify_error
from fusionweave.transforms.url_safety import AddressPolicy


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/to-private":
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/secret")
            self.end_headers()
        elif self.path == "/to-metadata":
            self.send_response(301)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/big":
            body = b"x" * 5000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/big-chunked":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"y" * 5000)
        else:
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def opener(allowed=("127.0.0.1",), max_bytes=1000):
    return build_opener(AddressPolicy(allowed=allowed), max_bytes=max_bytes, max_redirects=5, deadline=10)


def test_allowed_host_downloads(server):
    assert opener().open(f"{server}/ok", timeout=5).read() == b"ok"


def test_default_policy_refuses_loopback_before_connecting(server, monkeypatch):
    attempts = []
    real = socket.socket.connect

    def spy(self, addr):
        attempts.append(addr)
        return real(self, addr)

    monkeypatch.setattr(socket.socket, "connect", spy)
    with pytest.raises(Exception, match="refused address: private_address") as e:
        opener(allowed=()).open(f"{server}/ok", timeout=5)
    assert attempts == []
    assert classify_error(str(e.value)) == "refused_address"


@pytest.mark.parametrize("path,what", [("/to-private", "redirect refused: private_address"),
                                       ("/to-metadata", "redirect refused: metadata_address"),
                                       ("/to-file", "Redirection to url 'file:///etc/passwd' is not allowed")])
def test_redirects_are_checked(server, path, what):
    with pytest.raises(Exception, match=what) as e:
        opener().open(f"{server}{path}", timeout=5)
    assert classify_error(str(e.value)) == "refused_address"


def test_localhost_name_is_not_the_allowed_ip(server):
    port = server.rsplit(":", 1)[1]
    with pytest.raises(Exception, match="refused address"):
        opener().open(f"http://localhost:{port}/ok", timeout=5)


def test_byte_cap_by_header_and_by_stream(server):
    with pytest.raises(Exception, match="too large"):
        opener().open(f"{server}/big", timeout=5)
    with pytest.raises(Exception, match="too large"):
        opener().open(f"{server}/big-chunked", timeout=5).read()


@pytest.mark.parametrize("msg,reason", [
    ("HTTP Error 404: Not Found", "http_404"),
    ("HTTP Error 500: Internal Server Error", "http_500"),
    ("<urlopen error timed out>", "timeout"),
    ("The read operation timed out", "timeout"),
    ("HTTP Error 302: The HTTP server returned a redirect error that would lead to an infinite loop.", "redirect_loop"),
    ("Use of image disallowed by X-Robots-Tag directive", "x_robots_tag"),
    ("<urlopen error [Errno 111] Connection refused>", "connection_refused"),
    ("something odd", "download_error"),
])
def test_classify(msg, reason):
    assert classify_error(msg) == reason
