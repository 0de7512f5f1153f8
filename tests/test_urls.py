"""crawlq.urls: validation, canonical form (two spellings of one URL collide) and the stable URL id."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crawlq.errors import InvalidURL
from crawlq.urls import MAX_URL_LENGTH, canonical, host_of, origin_of, url_id

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Example.COM/Path", "http://example.com/Path"),  # scheme and host lower-cased, path kept
        ("http://example.com:80/a", "http://example.com/a"),  # default port dropped
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:80/a", "https://example.com:80/a"),  # not the default for https
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("http://example.com/a#section-2", "http://example.com/a"),  # fragment dropped
        ("http://example.com/a?b=2&a=1&c=3", "http://example.com/a?a=1&b=2&c=3"),  # query sorted
        ("http://example.com", "http://example.com/"),
        ("  http://example.com/a  ", "http://example.com/a"),  # surrounding blanks stripped
        ("http://bücher.test/", "http://xn--bcher-kva.test/"),  # IDN -> punycode
        ("http://BÜCHER.test:8080/x", "http://xn--bcher-kva.test:8080/x"),
        ("http://example.com/café", "http://example.com/caf%C3%A9"),  # unicode path percent-encoded
        ("http://example.com/a b", "http://example.com/a%20b"),
        ("http://example.com/?q=ü", "http://example.com/?q=%C3%BC"),
    ],
)
def test_canonical_form(raw: str, expected: str) -> None:
    assert canonical(raw) == expected
    assert canonical(expected) == expected  # idempotent


def test_spellings_of_one_url_collide() -> None:
    spellings = [
        "HTTP://Bücher.TEST:80/café?b=2&a=1#top",
        "http://xn--bcher-kva.test/caf%C3%A9?a=1&b=2",
        "http://bücher.test/café?a=1&b=2",
    ]
    assert len({canonical(s) for s in spellings}) == 1
    assert len({url_id(canonical(s)) for s in spellings}) == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("http://example.com/" + "a" * MAX_URL_LENGTH, "longer than"),
        ("http:///path", "missing host"),
        ("http://", "missing host"),
        ("http://:8080/", "missing host"),
        ("ftp://example.com/file", "scheme 'ftp'"),
        ("javascript:alert(1)", "scheme"),
        ("example.com/no-scheme", "scheme"),
        ("http://exa mple.com/", "space in the host"),
        ("http://[::1", "malformed"),
        ("http://example.com:99999/", "malformed"),
        ("http://example.com:0/", "port 0"),
        ("http://xn--/", "invalid punycode label 'xn--'"),
        ("http://xn--zz.test/", "invalid punycode label 'xn--zz'"),
        ("http://xn--abc-.test/", "invalid punycode label"),  # decodes to ASCII: not an A-label
        ("http://a..b/", "empty label in the host 'a..b'"),
        ("http://.a/", "empty label"),
        ("http://./", "empty label"),
        ("http://127.0.0.1./", "trailing dot after the IP address 127.0.0.1"),
        ("http://10.0.0.1.:8080/x", "trailing dot after the IP address 10.0.0.1"),
        ("http://" + "a" * 64 + ".test/", "host label longer than 63 characters (64)"),
        ("http://" + ("a" * 63 + ".") * 3 + "a" * 62 + "/", "host longer than 253 characters (254)"),
        ("http://a.test/\x0cb", "control character form feed (U+000C)"),
        ("http://a.test/b\rc", "control character carriage return (U+000D)"),
        ("http://a.test/b\x85", "control character next line (U+0085)"),
        ("http://a.test/\u2028b", "control character line separator (U+2028)"),
        ("http://a.test/\u2029", "control character paragraph separator (U+2029)"),
        ("http://a.test/\x1b]0;evil\x07", "control character escape (U+001B)"),
        ("http://a.test/\tb", "control character tab (U+0009)"),
        ("http://a.test/\x00", "control character U+0000"),
        ("http://a.test/\u202eabc", "control character U+202E"),  # bidi override: spoofs the echoed text
    ],
)
def test_invalid_urls_are_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidURL) as caught:
        canonical(raw)
    assert reason in caught.value.reason
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://example.com./a", "http://example.com/a"),  # a host name's trailing dot is dropped
        ("http://Example.COM.:8080/a", "http://example.com:8080/a"),
        ("http://user:pw@example.com.:80/x?b=1&a=2", "http://user:pw@example.com/x?a=2&b=1"),
        ("http://bücher.test./", "http://xn--bcher-kva.test/"),
        ("http://xn--bcher-kva.test/", "http://xn--bcher-kva.test/"),  # valid punycode is kept
        ("http://" + "a" * 63 + ".test/", "http://" + "a" * 63 + ".test/"),  # limits are inclusive
        ("http://" + ("a" * 63 + ".") * 3 + "a" * 61 + "/", "http://" + ("a" * 63 + ".") * 3 + "a" * 61 + "/"),
        ("\t http://a.test/b \t\r\n", "http://a.test/b"),  # blanks around the URL are not part of it
    ],
)
def test_hosts_at_the_limits_and_trailing_dots(raw: str, expected: str) -> None:
    assert canonical(raw) == expected


def test_length_limit_is_inclusive() -> None:
    base = "http://example.com/"
    at_limit = base + "a" * (MAX_URL_LENGTH - len(base))
    assert canonical(at_limit) == at_limit
    with pytest.raises(InvalidURL):
        canonical(at_limit + "a")


def test_url_id_is_pinned_and_stable_across_processes() -> None:
    # Pinned: changing the hash would silently break de-duplication of batches already in Redis.
    assert url_id("http://example.com/") == "fb2241160c9dad06"
    assert url_id("http://xn--bcher-kva.test/") == "8332b901770d2a93"
    code = "from crawlq.urls import url_id; print(url_id('http://example.com/'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10, check=True)
    assert other.stdout.strip() == "fb2241160c9dad06"  # no per-process salt (unlike hash())
    ids = {url_id(f"http://example.com/{i}") for i in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_host_and_origin_keys_of_canonical_urls() -> None:
    assert host_of(canonical("http://Example.com/a")) == "example.com"
    assert host_of(canonical("http://example.com:8080/a")) == "example.com:8080"
    assert host_of(canonical("https://bücher.test:443/")) == "xn--bcher-kva.test"
    assert host_of(canonical("http://user:pw@example.com:81/a?b=1")) == "example.com:81"
    assert origin_of(canonical("http://example.com:8080/a?b=1")) == "http://example.com:8080"
    assert origin_of(canonical("HTTPS://example.com:443/a#x")) == "https://example.com"
