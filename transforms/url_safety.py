"""URL normalisation and the address policy for downloading from the open web.

Pure: no DNS and no sockets here. The download stage re-applies `address_refusal` to every
address a host resolves to, right before connecting (see pipelines/curate/safe_http.py).

Hosts are read as a browser reads them (WHATWG URL host parsing): percent-decoded, then mapped
by IDNA (UTS #46) to lower-case ASCII. So `bücher.example` becomes `xn--bcher-kva.example`
(downloadable: urllib cannot send a non-ASCII Host header), and every Unicode spelling of a
private address (fullwidth `ｌｏｃａｌｈｏｓｔ`, `127。0。0。1`, circled digits) is judged as the
address it maps to.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

import idna
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_PORTS = {"http": 80, "https": 443}
# cloud metadata services are refused even when private networks are allowed, unless listed
METADATA_HOSTS = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "metadata.google.internal", "metadata"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True)
class AddressPolicy:
    """`allow_private` True allows every private/loopback/link-local address; otherwise only
    the listed hosts or networks (e.g. ["127.0.0.1"] for a test server) are allowed."""

    allow_private: bool = False
    allowed: tuple[str, ...] = field(default_factory=tuple)

    def _allowed_explicitly(self, host: str) -> bool:
        for entry in self.allowed:
            if host == entry.lower():
                return True
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def address_refusal(self, host: str) -> str | None:
        """Reason to refuse a host name or IP literal (as written: percent-encoded or Unicode
        spellings are read as `canonical_host` reads them), or None. No resolution happens here.
        Cached per (policy, host): web-scale URL lists repeat the same hosts millions of times."""
        return _address_refusal(self, host)

    def _decide(self, host: str) -> str | None:
        try:  # as a browser reads it: a Unicode spelling of an address is that address
            host = canonical_host(host.strip("[]"))
        except ValueError:
            return "malformed_url"
        if self._allowed_explicitly(host):
            return None
        if host in METADATA_HOSTS:
            return "metadata_address"
        if host in LOOPBACK_NAMES or host.endswith(".localhost"):
            return None if self.allow_private else "private_address"
        ip = parse_ip(host)
        if ip is None:
            return None
        if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
            if ip.is_link_local and str(ip).startswith("169.254."):
                return "metadata_address" if not self.allow_private else None
            return None if self.allow_private else "private_address"
        return None


@functools.lru_cache(maxsize=1 << 16)
def _address_refusal(policy: AddressPolicy, host: str) -> str | None:
    return policy._decide(host)


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP literal, including the decimal/hex/octal IPv4 spellings browsers accept."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = _legacy_ipv4(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums: list[int] = []
    for p in parts:
        try:
            nums.append(int(p, 0) if p.lower().startswith(("0x", "0o")) else int(p, 8) if len(p) > 1 and p.startswith("0") else int(p))
        except ValueError:
            return None
    value = 0
    for n in nums[:-1]:
        if not 0 <= n <= 255:
            return None
        value = value * 256 + n
    last_bits = 8 * (4 - len(nums) + 1)
    if not 0 <= nums[-1] < 2**last_bits:
        return None
    value = (value << last_bits) + nums[-1]
    return ipaddress.IPv4Address(value) if value < 2**32 else None


# what may be left in a host once it is ASCII: RFC 3986 reg-name characters, no percent signs.
# A space, a slash, a colon or a control character (raw or percent-encoded) makes the URL malformed.
_HOST_CHARS = re.compile(r"[a-z0-9._~!$&'()*+,;=-]+")


def canonical_host(host: str) -> str:
    """The host a browser would connect to: percent-decoded, IDNA (UTS #46, non-transitional)
    mapped to lower-case ASCII, trailing dot removed. IPv6 literals (with a colon) are returned
    as they are. Raises ValueError for a host no browser would accept."""
    if ":" in host:
        return host.lower()
    if host.isascii() and "%" not in host:  # nearly every host: no cache needed
        return _checked(host.lower().rstrip("."), host)
    return _canonical_encoded(host)


@functools.lru_cache(maxsize=1 << 14)
def _canonical_encoded(host: str) -> str:
    h = unquote(host, errors="strict") if "%" in host else host
    return _checked((h if h.isascii() else _idna_to_ascii(h)).lower().rstrip("."), host)


def _checked(ascii_host: str, written: str) -> str:
    if not _HOST_CHARS.fullmatch(ascii_host):
        raise ValueError(f"malformed host: {written!r}")
    return ascii_host


def _idna_to_ascii(host: str) -> str:
    """UTS #46 mapping over the whole host (which also maps the ideographic and fullwidth full
    stops to "."), then punycode for each label that is still non-ASCII. ASCII labels are left
    alone: the web has hosts with `_` or `--` that strict IDNA 2008 would refuse."""
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        return ".".join(lbl if lbl.isascii() else idna.alabel(lbl).decode("ascii") for lbl in mapped.split("."))
    except (idna.IDNAError, UnicodeError) as err:
        raise ValueError(f"invalid international host {host!r}: {err}") from err


def _raw_host(parts: SplitResult) -> str:
    """The host as written (urlsplit's `hostname` lower-cases it with str.lower, which is not
    the UTS #46 case mapping for every script)."""
    if parts.hostname is None or ":" in parts.hostname:  # none, or an IPv6 literal urlsplit has checked
        return parts.hostname or ""
    return parts.netloc.rpartition("@")[2].partition(":")[0]


# the common case, parsed with one regex instead of urlsplit: http(s), a plain host (no
# userinfo, no IPv6 brackets), an optional port. Anything else takes the general path.
_SIMPLE = re.compile(r"(?i)(https?)://([a-z0-9._~%!$&'()*+,;=-]+)(?::(\d{1,5}))?(?=[/?#]|$)")


# What browsers percent-encode (as UTF-8) in a path and in a query: the WHATWG URL path and
# special-query percent-encode sets. urllib sends neither a space nor a non-ASCII character, so
# without this such URLs could never be downloaded. Existing escapes are kept as written.
_PRINTABLE = "".join(map(chr, range(0x21, 0x7F)))
_PATH_SAFE = "".join(c for c in _PRINTABLE if c not in '"<>`{}')
_QUERY_SAFE = "".join(c for c in _PRINTABLE if c not in "\"<>'")
# a character either set may encode: quote() only runs on the few targets that have one
_MAY_ENCODE = re.compile(r"[^!#-&(-;=?-_a-z|~]")
_TAB_NEWLINE = re.compile("[\t\r\n]")  # browsers drop them anywhere in a URL, as urlsplit does


def _encode_path(path: str) -> str:
    return quote(path, safe=_PATH_SAFE) if _MAY_ENCODE.search(path) else path


def _encode_query(query: str) -> str:
    return quote(query, safe=_QUERY_SAFE) if _MAY_ENCODE.search(query) else query


def normalise_url(url: str) -> str:
    """Canonical form used for exact URL dedup and for the download, as a browser would send
    it: lower-case scheme, host as ASCII (`canonical_host`), no default port, no fragment, no
    surrounding whitespace, tabs or newlines; path and query as written except that spaces,
    controls and non-ASCII characters are percent-encoded. Raises ValueError for a malformed
    port or host."""
    u = url.strip()
    if "\t" in u or "\n" in u or "\r" in u:
        u = _TAB_NEWLINE.sub("", u)
    m = _SIMPLE.match(u)
    if m and (m.group(3) is None or int(m.group(3)) <= 65535):
        scheme, host, port = m.group(1).lower(), canonical_host(m.group(2)), m.group(3)
        target = u[m.end():].split("#", 1)[0]
        if _MAY_ENCODE.search(target):
            path, q, query = target.partition("?")
            target = _encode_path(path) + q + _encode_query(query)
        netloc = host if port is None or DEFAULT_PORTS[scheme] == int(port) else f"{host}:{int(port)}"
        if not target.startswith("/"):
            target = "/" + target
        return f"{scheme}://{netloc}{target}"
    return _normalise_general(u)


def _normalise_general(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = canonical_host(_raw_host(parts)) if parts.hostname else ""
    port = parts.port
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, _encode_path(parts.path or "/"), _encode_query(parts.query), ""))


def url_refusal(url: str | None, policy: AddressPolicy) -> str | None:
    """Reason this URL may not be downloaded, or None. Never resolves or connects."""
    if url is None or not url.strip():
        return "missing_url"
    m = _SIMPLE.match(url.strip())
    if m and (m.group(3) is None or int(m.group(3)) <= 65535):
        return policy.address_refusal(m.group(2))
    return _refusal_general(url, policy)


def _refusal_general(url: str, policy: AddressPolicy) -> str | None:
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return "malformed_url"
    if parts.scheme.lower() not in DEFAULT_PORTS:
        return "unsupported_scheme"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "userinfo_in_url"
    if not parts.hostname:
        return "malformed_url"
    return policy.address_refusal(_raw_host(parts))


def normalised_or_none(url: str | None) -> str | None:
    """`normalise_url`, None for a missing, empty or malformed URL."""
    if not url:
        return None
    try:
        return normalise_url(url)
    except ValueError:
        return None


# The common case of `normalise_url` and `url_refusal` over a whole Arrow array (RE2): http(s),
# an ASCII host without percent signs, no userinfo, no port, no whitespace or control anywhere
# before the fragment and nothing there either function would percent-encode. For these rows
# both functions reduce to string splicing plus one decision per distinct host; every other row
# is sent through the per-row functions, which stay the reference.
_FAST_URL = (r"(?s)^(?P<scheme>[hH][tT][tT][pP][sS]?)://(?P<host>[A-Za-z0-9._~!$&'()*+,;=-]+)"
             r"(?P<target>(?:[/?][!$-&(-;=?-_a-z|~]*)?)(?:#.*)?$")


@dataclass(frozen=True)
class _SplitUrls:
    fast: np.ndarray  # bool per row: the fast path applies
    scheme: pa.Array  # lower-case; null where not fast
    host_index: pa.Array  # into `hosts`; null where not fast
    hosts: list[str]  # distinct hosts, as written
    target: pa.Array  # path and query, "/" prefixed as `normalise_url` writes it


def _split_urls(urls: pa.Array) -> _SplitUrls:
    parts = pc.extract_regex(urls, _FAST_URL)
    fast = pc.fill_null(parts.is_valid(), False).to_numpy(zero_copy_only=False)
    scheme, host, target = (pc.struct_field(parts, [i]) for i in range(3))
    hosts = pc.dictionary_encode(host)
    target = pc.if_else(pc.starts_with(target, "/"), target, pc.binary_join_element_wise("/", target, ""))
    return _SplitUrls(fast, pc.ascii_lower(scheme), hosts.indices, hosts.dictionary.to_pylist(), target)


def _with_slow_rows(fast_values: pa.Array, split: _SplitUrls, urls: pa.Array,
                    per_row: Callable[[str | None], str | None]) -> pa.Array:
    """`fast_values` with the rows the fast path does not cover computed by `per_row`."""
    slow = ~split.fast
    if not slow.any():
        return fast_values
    values = [per_row(u) for u in urls.filter(pa.array(slow)).to_pylist()]
    return pc.replace_with_mask(fast_values, pa.array(slow), pa.array(values, pa.string()))


def _string_array(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    arr = urls.combine_chunks() if isinstance(urls, pa.ChunkedArray) else urls
    return arr.cast(pa.string())


def normalise_urls(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`normalised_or_none` of every URL: Python once per distinct host, and per row only for
    the URLs the fast path does not cover."""
    urls = _string_array(urls)
    split = _split_urls(urls)
    canonical = pa.array([_canonical_or_none(h) for h in split.hosts], pa.string())
    fast = pc.binary_join_element_wise(split.scheme, "://", canonical.take(split.host_index), split.target, "")
    return _with_slow_rows(fast, split, urls, normalised_or_none)


def url_refusals(urls: pa.Array | pa.ChunkedArray, policy: AddressPolicy) -> pa.Array:
    """`url_refusal` of every URL, decided once per distinct host on the fast path."""
    urls = _string_array(urls)
    split = _split_urls(urls)
    per_host = pa.array([policy.address_refusal(h) for h in split.hosts], pa.string())
    return _with_slow_rows(per_host.take(split.host_index), split, urls, lambda u: url_refusal(u, policy))


def _canonical_or_none(host: str) -> str | None:
    try:
        return canonical_host(host)
    except ValueError:
        return None
