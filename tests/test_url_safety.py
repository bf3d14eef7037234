import pytest

from fusionweave.transforms.url_safety import AddressPolicy, normalise_url, parse_ip, url_refusal

DEFAULT = AddressPolicy()


@pytest.mark.parametrize("url,reason", [
    ("http://example.com/a.jpg", None),
    ("https://example.com:8443/a.jpg?x=1", None),
    ("file:///etc/passwd", "unsupported_scheme"),
    ("gopher://example.com/", "unsupported_scheme"),
    ("http://10.0.0.8/a.jpg", "private_address"),
    ("http://192.168.1.1/a.jpg", "private_address"),
    ("http://172.16.5.4/a.jpg", "private_address"),
    ("http://127.0.0.1:8000/a.jpg", "private_address"),
    ("http://localhost/a.jpg", "private_address"),
    ("http://[::1]/a.jpg", "private_address"),
    ("http://[::ffff:10.0.0.1]/a.jpg", "private_address"),
    ("http://0x0a000001/a.jpg", "private_address"),
    ("http://167772161/a.jpg", "private_address"),
    ("http://012.0.0.1/a.jpg", "private_address"),
    ("http://169.254.169.254/latest/meta-data/", "metadata_address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata_address"),
    ("http://user:pass@example.com/a.jpg", "userinfo_in_url"),
    ("http://example.com@10.0.0.1/a.jpg", "userinfo_in_url"),
    ("http://example.com:99999/", "malformed_url"),
    ("", "missing_url"),
    (None, "missing_url"),
    ("http:///nohost", "malformed_url"),
])
def test_default_policy(url, reason):
    assert url_refusal(url, DEFAULT) == reason


def test_allow_list_opens_only_listed_hosts():
    p = AddressPolicy(allowed=("127.0.0.1",))
    assert url_refusal("http://127.0.0.1:9000/x", p) is None
    assert url_refusal("http://localhost:9000/x", p) == "private_address"
    assert url_refusal("http://10.0.0.1/x", p) == "private_address"
    assert url_refusal("http://169.254.169.254/x", p) == "metadata_address"


def test_allow_all_private_still_refuses_metadata_names():
    p = AddressPolicy(allow_private=True)
    assert url_refusal("http://10.0.0.1/x", p) is None
    assert url_refusal("http://metadata.google.internal/x", p) == "metadata_address"


def test_allow_list_accepts_networks():
    p = AddressPolicy(allowed=("10.0.0.0/8",))
    assert url_refusal("http://10.2.3.4/x", p) is None
    assert url_refusal("http://192.168.0.1/x", p) == "private_address"


def test_normalise_url():
    assert normalise_url(" HTTP://Example.COM:80/a.jpg#frag ") == "http://example.com/a.jpg"
    assert normalise_url("https://example.com:443") == "https://example.com/"
    assert normalise_url("https://example.com:8443/A?b=1") == "https://example.com:8443/A?b=1"


def test_parse_ip_rejects_names():
    assert parse_ip("example.com") is None
    assert str(parse_ip("0x7f.1")) == "127.0.0.1"


def test_fast_path_agrees_with_urlsplit():
    from fusionweave.transforms.url_safety import _normalise_general

    urls = ["http://Example.com/a?b=1#f", "HTTPS://x.org:443", "https://x.org:8443/p", "http://x.org?q", "http://x.org#f",
            "http://a.b.c/%20x", "http://10.0.0.1/x", "http://127.0.0.1:8000/img.jpg", "https://x.org:99999/",
            "http://x.org./p", "http://[::1]/a", "http://u@x.org/", "http://x_y.org/a"]
    for u in urls:
        try:
            slow = _normalise_general(u.strip())
        except ValueError:
            slow = "error"
        try:
            fast = normalise_url(u)
        except ValueError:
            fast = "error"
        assert fast == slow, u
    from fusionweave.transforms.url_safety import _refusal_general

    for p in (AddressPolicy(allowed=("127.0.0.1",)), AddressPolicy()):
        for u in urls:
            assert url_refusal(u, p) == _refusal_general(u, p), u
