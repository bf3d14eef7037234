"""A urllib opener that enforces the address policy on every connection and redirect, a byte
cap, a complete body, Content-Encoding and a total deadline on every response. img2dataset
downloads through urllib's global opener, so the download task installs this one in its worker
process before handing URLs to img2dataset."""
from __future__ import annotations

import functools
import heapq
import http.client
import itertools
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from fusionweave.transforms.url_safety import AddressPolicy, normalise_url, url_refusal

CHUNK = 64 * 1024
# Content-Encoding -> zlib wbits; deflate's wbits depend on whether the stream has a zlib header
DECODABLE = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class RefusedAddress(OSError):
    pass


class ResponseTooLarge(OSError):
    pass


class TruncatedBody(OSError):
    pass


class UnsupportedEncoding(OSError):
    pass


class BadEncoding(OSError):
    pass


class DeadlineExceeded(TimeoutError):
    pass


class Deadline:
    """A total wall-clock budget for one request: connect, redirects, headers and body."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.left() <= 0

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"download deadline of {self.seconds:g} s exceeded (timed out)")

    def check(self) -> None:
        if self.expired():
            raise self.error()

    def clip(self, timeout: Any) -> float:
        """The socket timeout for the next blocking step: never past the deadline."""
        self.check()
        left = self.left()
        unset = timeout is None or timeout is socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]
        return left if unset else min(timeout, left)


class Watchdog:
    """One daemon thread per process that shuts down each socket when its request's deadline
    passes. A socket timeout only bounds the gap between two packets; a shutdown ends any
    blocked recv at once, wherever it is (TLS handshake, headers, body), so no download thread
    outlives its deadline by more than a moment."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: Deadline, sock: socket.socket) -> None:
        with self._cv:
            heapq.heappush(self._heap, (deadline.at, next(self._seq), weakref.ref(sock)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fusionweave-deadline", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cv.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                sock = heapq.heappop(self._heap)[2]()
            if sock is not None:
                try:  # the plain socket's shutdown: an SSLSocket's own drops its TLS state under a reader
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed: the request ended in time


WATCHDOG = Watchdog()
# getaddrinfo cannot be interrupted, so lookups run on these threads: one that hangs past the
# deadline holds a resolver thread (until the system resolver gives up), not the download
RESOLVER = ThreadPoolExecutor(16, thread_name_prefix="fusionweave-dns")


def resolve(host: str, port: int, deadline: Deadline) -> list[tuple[Any, ...]]:
    lookup = RESOLVER.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        return lookup.result(timeout=max(0.0, deadline.left()))
    except TimeoutError:
        lookup.cancel()
        raise deadline.error() from None


class DeadlineContext:
    """An SSLContext whose sockets are armed before their handshake (wrap_socket replaces the
    armed TCP socket by a new TLS one)."""

    def __init__(self, context: Any, deadline: Deadline) -> None:
        self._context = context
        self._deadline = deadline

    def wrap_socket(self, sock: socket.socket, **kw: Any) -> Any:
        tls = self._context.wrap_socket(sock, do_handshake_on_connect=False, **kw)
        WATCHDOG.arm(self._deadline, tls)
        tls.do_handshake()
        return tls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def guarded_create_connection(policy: AddressPolicy):
    def create(address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
               source_address: tuple[str, int] | None = None, *, deadline: Deadline) -> socket.socket:
        host, port = address
        # the name itself (a literal IP, "localhost", a metadata name) is judged before any lookup
        reason = policy.address_refusal(host)
        if reason:
            raise RefusedAddress(f"refused address: {reason} ({host})")
        infos = resolve(host, port, deadline)
        last: Exception | None = None
        for family, socktype, proto, _, sockaddr in infos:
            ip = sockaddr[0]
            # a host explicitly allowed by name may resolve to a private address: that is the point
            if host.lower() not in {h.lower() for h in policy.allowed}:
                reason = policy.address_refusal(ip)
                if reason:
                    raise RefusedAddress(f"refused address: {reason} ({host} -> {ip})")
            sock = socket.socket(family, socktype, proto)
            try:
                sock.settimeout(deadline.clip(timeout))
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)  # connect to the vetted address, not a second lookup
                WATCHDOG.arm(deadline, sock)
                return sock
            except OSError as err:
                last = err
                sock.close()
        raise last or OSError(f"could not connect to {host}")
    return create


def content_codings(response: Any) -> list[str]:
    """The response's Content-Encoding list (applied in this order), or UnsupportedEncoding."""
    values = ",".join(response.headers.get_all("Content-Encoding") or [])
    codings = [c.strip().lower() for c in values.split(",") if c.strip().lower() not in ("", "identity")]
    unknown = [c for c in codings if c not in DECODABLE]
    if unknown:
        raise UnsupportedEncoding(f"unsupported Content-Encoding: {', '.join(unknown)}")
    return codings


def decode(data: bytes, coding: str, max_bytes: int) -> bytes:
    """Undo one gzip/deflate coding, capped at max_bytes of output (a gzip bomb is a few KB)."""
    wbits = DECODABLE[coding]
    if coding == "deflate" and not (len(data) > 1 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0):
        wbits = -zlib.MAX_WBITS  # raw deflate without the zlib header, as some servers send it
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, max_bytes + 1)
    except zlib.error as err:
        raise BadEncoding(f"bad {coding} Content-Encoding: {err}") from err
    if len(out) > max_bytes:
        raise ResponseTooLarge(f"response too large: {coding}-decoded body > {max_bytes} bytes")
    if not d.eof:
        raise TruncatedBody(f"truncated body: the {coding} stream ends early")
    return out


def read_body(response: Any, max_bytes: int, deadline: Deadline) -> bytes:
    """The whole raw body, one recv at a time (each bounded by the socket timeout and the
    watchdog), refused when over the cap, cut short of its Content-Length, or late."""
    declared = response.length  # None when chunked or without Content-Length
    buf = bytearray()
    try:
        while chunk := response.read1(CHUNK):
            buf += chunk
            if len(buf) > max_bytes:
                raise ResponseTooLarge(f"response too large: > {max_bytes} bytes")
    except (OSError, http.client.HTTPException) as err:
        deadline.check()
        if isinstance(err, http.client.IncompleteRead):  # a chunked body that ends early
            raise TruncatedBody(f"truncated body: {len(buf)} bytes, then the chunked stream ended") from err
        raise
    deadline.check()  # a body the watchdog cut short is late, not complete
    if declared is not None and len(buf) < declared:
        # http.client returns a short body from read(n) without complaint
        raise TruncatedBody(f"truncated body: {len(buf)} of {declared} bytes (Content-Length)")
    return bytes(buf)


def guard_response(response: Any, max_bytes: int, deadline: Deadline) -> Any:
    """Checks the headers now; on the first read, reads, checks and decodes the whole body,
    then serves it from memory."""
    try:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise ResponseTooLarge(f"response too large: {length} bytes > {max_bytes}")
        codings = content_codings(response)
    except OSError:
        response.close()
        raise
    body: list[bytes] = []
    offset = 0

    def read(amt: int | None = None) -> bytes:
        nonlocal offset
        if not body:
            data = read_body(response, max_bytes, deadline)
            for coding in reversed(codings):
                data = decode(data, coding, max_bytes)
            body.append(data)
        end = len(body[0]) if amt is None or amt < 0 else offset + amt
        chunk, offset = body[0][offset:end], min(end, len(body[0]))
        return chunk

    response.read = read
    response.fw_guarded = True
    return response


def _open(handler: urllib.request.AbstractHTTPHandler, conn: Callable[..., Any], req: Any, seconds: float,
          **kw: Any) -> Any:
    deadline = req.__dict__.setdefault("fw_deadline", Deadline(seconds))  # a redirect carries it over
    try:
        return handler.do_open(functools.partial(conn, deadline=deadline), req, **kw)
    except Exception:
        deadline.check()  # whatever broke after the deadline (a watchdog shutdown) is a timeout
        raise


def build_opener(policy: AddressPolicy, max_bytes: int, max_redirects: int,
                 deadline: float) -> urllib.request.OpenerDirector:
    create = guarded_create_connection(policy)

    class GuardedHTTPConnection(http.client.HTTPConnection):
        def __init__(self, *a: Any, deadline: Deadline, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._create_connection = functools.partial(create, deadline=deadline)

    class GuardedHTTPSConnection(http.client.HTTPSConnection):
        def __init__(self, *a: Any, deadline: Deadline, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._create_connection = functools.partial(create, deadline=deadline)
            self._context = DeadlineContext(self._context, deadline)

    class GuardedHTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:
            return _open(self, GuardedHTTPConnection, req, deadline)

    class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:
            return _open(self, GuardedHTTPSConnection, req, deadline, context=self._context)

    class GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
        max_redirections = max_redirects

        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            reason = url_refusal(newurl, policy)
            if reason:
                raise urllib.error.HTTPError(newurl, code, f"redirect refused: {reason} ({newurl})", headers, fp)
            # followed as a browser would: IDNA host in ASCII, spaces and non-ASCII in the path escaped
            new = super().redirect_request(req, fp, code, msg, headers, normalise_url(newurl))
            if new is not None:
                new.fw_deadline = req.fw_deadline  # one deadline for the whole redirect chain
            return new

    class BodyGuard(urllib.request.BaseHandler):
        handler_order = 1000

        def http_response(self, req: Any, response: Any) -> Any:
            # after a redirect, the final response passes here once per hop: guard it once
            if getattr(response, "fw_guarded", False):
                return response
            return guard_response(response, max_bytes, req.fw_deadline)

        https_response = http_response

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), GuardedHTTPHandler, GuardedHTTPSHandler,
                                       GuardedRedirectHandler, BodyGuard)


def install(policy: AddressPolicy, max_bytes: int, max_redirects: int, deadline: float) -> None:
    urllib.request.install_opener(build_opener(policy, max_bytes, max_redirects, deadline))


def classify_error(message: str | None) -> str:
    """img2dataset's free-text error -> a short reject reason."""
    m = (message or "").lower()
    if "refused address" in m or "redirect refused" in m or "redirection to url" in m:
        return "refused_address"
    if "x-robots-tag" in m:
        return "x_robots_tag"
    if "infinite loop" in m or "redirect" in m and "exceed" in m:
        return "redirect_loop"
    if "too large" in m:
        return "response_too_large"
    if "truncated body" in m or "incompleteread" in m:
        return "truncated_body"
    if "unsupported content-encoding" in m:
        return "unsupported_content_encoding"
    if "content-encoding" in m:
        return "bad_content_encoding"
    if "timed out" in m or "timeout" in m:
        return "timeout"
    if m.startswith("http error "):
        code = m.split()[2].rstrip(":")
        return f"http_{code}" if code.isdigit() else "http_error"
    if "hash mismatch" in m:
        return "hash_mismatch"
    if "connection refused" in m:
        return "connection_refused"
    if "name or service not known" in m or "nodename nor servname" in m or "temporary failure in name" in m:
        return "dns_failure"
    return "download_error"
