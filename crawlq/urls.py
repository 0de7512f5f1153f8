"""URL validation, canonicalisation (w3lib) and the stable per-batch URL id.

A URL is refused (`InvalidURL` with a reason) if it holds a control character or a line or paragraph
separator anywhere, or if its host has an empty label (`a..b`), a label over 63 characters, more than 253
characters, an `xn--` label that is not valid punycode, or is an IP address with a trailing dot. A trailing
dot on a host name is dropped (`example.com.` is `example.com`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

from w3lib.url import canonicalize_url

from crawlq.errors import InvalidURL

__all__ = ["MAX_URL_LENGTH", "canonical", "control_character", "host_of", "origin_of", "url_id"]

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253  #: RFC 1035, in punycode, without a trailing dot
MAX_LABEL_LENGTH = 63
#: C0 and C1 controls (tab included), DEL, the Unicode line/paragraph separators and the bidi controls
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_NAMES = {
    "\t": "tab",
    "\n": "line feed",
    "\r": "carriage return",
    "\x0b": "vertical tab",
    "\x0c": "form feed",
    "\x1b": "escape",
    "\x85": "next line",
    "\u2028": "line separator",
    "\u2029": "paragraph separator",
}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_CHARS = re.compile(r"^[A-Za-z0-9.\-_\[\]:%]+$")


# URLs made only of these characters, with a lower-case host, no dot segments and no empty query parts,
# are canonicalised by `_fast_canonical` exactly as w3lib would (tests/test_canonical_fast.py checks
# that on random URLs); anything else takes the full path.
_SIMPLE = re.compile(
    r"^(https?)://([a-z0-9][a-z0-9.-]*)(?::(\d{1,5}))?((?:/[A-Za-z0-9_~!$'()*,:@=-]+(?:\.[A-Za-z0-9_~!$'()*,:@=-]+)*)*/?)"
    r"(?:\?((?:[A-Za-z0-9_.~-]+(?:=[A-Za-z0-9_.~-]*)?)(?:&[A-Za-z0-9_.~-]+(?:=[A-Za-z0-9_.~-]*)?)*))?$"
)


def _fast_canonical(text: str) -> str | None:
    match = _SIMPLE.match(text)
    if match is None:
        return None
    scheme, host, port, path, query = match.groups()
    if host.endswith(".") or ".." in host or "xn--" in host or len(host) > MAX_LABEL_LENGTH:
        return None  # the full path checks these hosts
    if port is not None:
        number = int(port)
        if number == 0 or number > 65535:
            return None
        host = host if _DEFAULT_PORTS[scheme] == number else f"{host}:{number}"
    if query:
        pairs = sorted(tuple(part.split("=", 1)) if "=" in part else (part, "") for part in query.split("&"))
        return f"{scheme}://{host}{path or '/'}?{'&'.join(k + '=' + v for k, v in pairs)}"
    return f"{scheme}://{host}{path or '/'}"


def canonical(raw: str) -> str:
    """Validate `raw` and return its canonical form; raise `InvalidURL` with a reason.

    The canonical form has a lower-case scheme and host, the host in punycode (IDN), the default port
    dropped, the query sorted and percent-encoded, and no fragment, so two spellings of one URL collide.
    """
    text = _check_shape(raw)
    fast = _fast_canonical(text)
    if fast is not None:
        return fast
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"malformed URL ({exc})") from exc
    hostport = parts.netloc.rpartition("@")[2]
    if not hostport:
        raise InvalidURL("missing host")
    if any(ch.isspace() for ch in hostport):
        raise InvalidURL("space in the host")
    host = parts.hostname
    if not host:
        raise InvalidURL("missing host")
    if port is not None and port == 0:
        raise InvalidURL("invalid port 0")
    if not _HOST_CHARS.match(host) and not _HOST_CHARS.match(_punycode(host)):
        raise InvalidURL(f"invalid character in the host {host!r}")
    drop_dot = _check_host(host)
    drop_port = port is not None and _DEFAULT_PORTS.get(parts.scheme.lower()) == port
    if drop_dot or drop_port:
        text = urlunsplit((parts.scheme, _netloc_without(parts, drop_dot, drop_port), *parts[2:]))
    try:
        return str(canonicalize_url(text))
    except (ValueError, UnicodeError) as exc:
        raise InvalidURL(f"malformed URL ({exc})") from exc


def _punycode(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidURL(f"invalid international host name {host!r}") from exc


def _check_host(host: str) -> bool:
    """Raise `InvalidURL` for a malformed host (lower case, no brackets); True if it ends with a dot to drop."""
    if ":" in host:
        return False  # an IPv6 literal, checked by urlsplit
    name = host.removesuffix(".")
    if name != host and _is_ip_address(name):
        raise InvalidURL(f"trailing dot after the IP address {name}")
    if not name or "" in name.split("."):
        raise InvalidURL(f"empty label in the host {host!r}")
    ascii_name = name if name.isascii() else _punycode(name)
    if len(ascii_name) > MAX_HOST_LENGTH:
        raise InvalidURL(f"host longer than {MAX_HOST_LENGTH} characters ({len(ascii_name)})")
    for label in ascii_name.split("."):
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidURL(f"host label longer than {MAX_LABEL_LENGTH} characters ({len(label)})")
        if label[:4].lower() == "xn--":
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                raise InvalidURL(f"invalid punycode label {label!r} in the host") from None
    return name != host


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _netloc_without(parts: SplitResult, drop_dot: bool, drop_port: bool) -> str:
    """`parts.netloc` without the trailing dot of its host and/or without its (default) port."""
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, colon, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    if drop_dot:
        host = host.removesuffix(".")
    return f"{userinfo}{at}{host}{'' if drop_port else colon + port}"


def control_character(text: str) -> str | None:
    """A description of the first control character or line separator in `text` ("form feed (U+000C)"), or None."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    char = found.group()
    name = _CONTROL_NAMES.get(char)
    return f"{name} (U+{ord(char):04X})" if name else f"U+{ord(char):04X}"


def _check_shape(raw: str) -> str:
    text = raw.strip(" \t\r\n")
    if not text:
        raise InvalidURL("empty line")
    control = control_character(text)
    if control is not None:
        raise InvalidURL(f"control character {control} in the line")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidURL(f"URL longer than {MAX_URL_LENGTH} characters ({len(text)})")
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise InvalidURL("missing scheme (expected http:// or https://)")
    if scheme.lower() not in ("http", "https"):
        raise InvalidURL(f"scheme {scheme!r} is not http or https")
    return text


def url_id(canonical_url: str) -> str:
    """A 64-bit id of a canonical URL, as 16 hex characters (collisions: ~3e-8 at a million URLs)."""
    return hashlib.blake2b(canonical_url.encode(), digest_size=8).hexdigest()


def _netloc(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a canonical URL, without userinfo, by string slicing (hot path)."""
    scheme, _, rest = url.partition("://")
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1 and found < end:
            end = found
    return scheme, rest[:end].rpartition("@")[2]


def host_of(url: str) -> str:
    """The politeness key of a canonical URL: its host (punycode, lower case) and non-default port."""
    return _netloc(url)[1]


def origin_of(url: str) -> str:
    """scheme://host[:port] of a canonical URL (the robots.txt scope)."""
    scheme, netloc = _netloc(url)
    return f"{scheme}://{netloc}"
