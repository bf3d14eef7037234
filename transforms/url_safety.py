"""URL normalisation and the address policy for downloading from the open web.

Pure: no DNS and no sockets here. The download stage re-applies `address_refusal` to every
address a host resolves to, right before connecting (see pipelines/curate/safe_http.py).
"""
from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

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
        """Reason to refuse a host name or IP literal, or None. No resolution happens here.
        Cached per (policy, host): web-scale URL lists repeat the same hosts millions of times."""
        return _address_refusal(self, host)

    def _decide(self, host: str) -> str | None:
        host = host.lower().strip("[]").rstrip(".")
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


# the common case, parsed with one regex instead of urlsplit: http(s), a plain host (no
# userinfo, no IPv6 brackets), an optional port. Anything else takes the general path.
_SIMPLE = re.compile(r"(?i)(https?)://([a-z0-9._~%!$&'()*+,;=-]+)(?::(\d{1,5}))?(?=[/?#]|$)")


def normalise_url(url: str) -> str:
    """Canonical form used for exact URL dedup: lower-case scheme and host, no default port,
    no fragment, surrounding whitespace removed. Path and query are kept as written."""
    u = url.strip()
    m = _SIMPLE.match(u)
    if m and (m.group(3) is None or int(m.group(3)) <= 65535):
        scheme, host, port = m.group(1).lower(), m.group(2).lower().rstrip("."), m.group(3)
        rest = u[m.end():].split("#", 1)[0]
        netloc = host if port is None or DEFAULT_PORTS[scheme] == int(port) else f"{host}:{int(port)}"
        if not rest.startswith("/"):
            rest = "/" + rest
        return f"{scheme}://{netloc}{rest}"
    return _normalise_general(u)


def _normalise_general(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    port = parts.port
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


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
    return policy.address_refusal(parts.hostname)
