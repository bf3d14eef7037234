"""A urllib opener that enforces the address policy on every connection and redirect, and
a byte cap on every response. img2dataset downloads through urllib's global opener, so the
download task installs this one in its worker process before handing URLs to img2dataset."""
from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from typing import Any

from fusionweave.transforms.url_safety import AddressPolicy, url_refusal


class RefusedAddress(OSError):
    pass


class ResponseTooLarge(OSError):
    pass


def guarded_create_connection(policy: AddressPolicy):
    def create(address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
               source_address: tuple[str, int] | None = None, **kw: Any) -> socket.socket:
        host, port = address
        # the name itself (a literal IP, "localhost", a metadata name) is judged before any lookup
        reason = policy.address_refusal(host)
        if reason:
            raise RefusedAddress(f"refused address: {reason} ({host})")
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
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
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)  # connect to the vetted address, not a second lookup
                return sock
            except OSError as err:
                last = err
                sock.close()
        raise last or OSError(f"could not connect to {host}")
    return create


def build_opener(policy: AddressPolicy, max_bytes: int, max_redirects: int) -> urllib.request.OpenerDirector:
    create = guarded_create_connection(policy)

    class GuardedHTTPConnection(http.client.HTTPConnection):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._create_connection = create

    class GuardedHTTPSConnection(http.client.HTTPSConnection):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._create_connection = create

    class GuardedHTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(GuardedHTTPConnection, req)

    class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(GuardedHTTPSConnection, req, context=self._context)

    class GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
        max_redirections = max_redirects

        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            reason = url_refusal(newurl, policy)
            if reason:
                raise urllib.error.HTTPError(newurl, code, f"redirect refused: {reason} ({newurl})", headers, fp)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    class ByteCap(urllib.request.BaseHandler):
        handler_order = 1000

        def http_response(self, req: Any, response: Any) -> Any:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ResponseTooLarge(f"response too large: {length} bytes > {max_bytes}")
            raw_read = response.read

            def read(amt: int | None = None) -> bytes:
                data = raw_read(max_bytes + 1 if amt is None else min(amt, max_bytes + 1))
                if len(data) > max_bytes:
                    raise ResponseTooLarge(f"response too large: > {max_bytes} bytes")
                return data

            response.read = read
            return response

        https_response = http_response

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), GuardedHTTPHandler, GuardedHTTPSHandler,
                                       GuardedRedirectHandler, ByteCap)


def install(policy: AddressPolicy, max_bytes: int, max_redirects: int) -> None:
    urllib.request.install_opener(build_opener(policy, max_bytes, max_redirects))


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
