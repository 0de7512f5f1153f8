"""A batch's fetch options: request headers, cookies, user agent, proxy, the batch it re-crawls, whether it
follows links (`crawlq.follow`), and the address rules that replace the workers' own for its fetches (set by
the API, never by the CLI).

They are written once into Redis at submit (`keys.batch_options`, JSON) and read by each worker once per
batch. Secrets (cookie values, the proxy's credentials, credential-bearing headers) travel to the workers
but are never shown: `repr`, `str` and `display()` print them as `***`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crawlq.addresses import AddressRules
from crawlq.follow import FollowOptions

__all__ = [
    "REDACTED",
    "BatchOptions",
    "is_secret_header",
    "parse_cookie",
    "parse_header",
    "redact_url",
]

REDACTED = "***"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  #: an HTTP header name (RFC 9110 token)
_SECRET_HEADER_WORDS = ("auth", "cookie", "token", "secret", "key", "session", "password", "signature")
#: headers the fetcher sets itself, per request; a batch may not set them
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "if-none-match"})


def is_secret_header(name: str) -> bool:
    """Whether a header's value is shown as `***` (Authorization, Cookie, X-Api-Key, X-Auth-Token...)."""
    lower = name.lower()
    return any(word in lower for word in _SECRET_HEADER_WORDS)


def _no_controls(value: str, what: str) -> str:
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{what} may not contain control characters (CR, LF, ...)")
    return value


def parse_header(text: str) -> tuple[str, str]:
    """`'Name: value'` -> (name, value); raises ValueError with one sentence."""
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not _TOKEN.match(name):
        raise ValueError("a header is 'Name: value' with a name of letters, digits and -")
    return name, _no_controls(value.strip(), f"the value of header {name}")


def parse_cookie(text: str) -> tuple[str, str]:
    """`'name=value'` -> (name, value); raises ValueError with one sentence (the value is never quoted)."""
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not _TOKEN.match(name):
        raise ValueError(f"a cookie is 'name=value' (name {name[:40]!r})")
    if any(char in value for char in ";,") or value != value.strip():
        raise ValueError(f"the value of cookie {name} may not contain ';', ',' or surrounding spaces")
    return name, _no_controls(value, f"the value of cookie {name}")


def redact_url(url: str) -> str:
    """`http://user:pass@proxy:3128` -> `http://***@proxy:3128` (the password and the user name)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{REDACTED}@{host}", parts.path, parts.query, parts.fragment))


class BatchOptions(BaseModel):
    """What every fetch of one batch carries. Empty options change nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    headers: dict[str, str] = Field(default_factory=dict)  #: extra request headers
    cookies: dict[str, str] = Field(default_factory=dict)  #: sent as one Cookie header (never shown)
    #: replaces crawlq's User-Agent; the default keeps identifying crawlq (say so on purpose to hide it)
    user_agent: str | None = None
    proxy: str | None = None  #: an http(s) proxy URL; its own address is checked by the SSRF guard
    recrawl_of: str | None = None  #: an earlier batch whose validators make this one's requests conditional
    #: the SSRF rules for every connection of the batch, instead of the workers' own; the API always sets its own
    address_policy: AddressRules | None = None
    follow: FollowOptions | None = None  #: add the links of the batch's pages to it (`crawlq.follow`)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            parse_header(f"{name}: {header}")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by crawlq itself")
        return value

    @field_validator("cookies")
    @classmethod
    def _check_cookies(cls, value: dict[str, str]) -> dict[str, str]:
        for name, cookie in value.items():
            parse_cookie(f"{name}={cookie}")
        return value

    @field_validator("user_agent")
    @classmethod
    def _check_agent(cls, value: str | None) -> str | None:
        return _no_controls(value, "the user agent") if value is not None else None

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"the proxy is not a URL ({exc})") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the proxy must be an http:// or https:// URL with a host, not {redact_url(value)!r}")
        return value

    @field_validator("recrawl_of")
    @classmethod
    def _check_batch(cls, value: str | None) -> str | None:
        if value is not None and (not value or len(value) > 200 or not value.isprintable()):
            raise ValueError("--recrawl-of names a batch id")
        return value

    @property
    def empty(self) -> bool:
        return self == BatchOptions()

    def request_headers(self) -> dict[str, str]:
        """The headers every request of the batch sends (User-Agent and Cookie included)."""
        out = dict(self.headers)
        if self.user_agent is not None:
            out["User-Agent"] = self.user_agent
        if self.cookies:
            out["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return out

    def to_json(self) -> bytes:
        """The stored form, secrets included (Redis only)."""
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> BatchOptions:
        return cls.model_validate_json(raw) if raw else cls()

    def display(self) -> dict[str, Any]:
        """The options as shown to people and API clients: every secret is `***`."""
        shown: dict[str, Any] = {}
        if self.headers:
            shown["headers"] = {n: REDACTED if is_secret_header(n) else v for n, v in self.headers.items()}
        if self.cookies:
            shown["cookies"] = dict.fromkeys(self.cookies, REDACTED)
        if self.user_agent is not None:
            shown["user_agent"] = self.user_agent
        if self.proxy is not None:
            shown["proxy"] = redact_url(self.proxy)
        if self.recrawl_of is not None:
            shown["recrawl_of"] = self.recrawl_of
        if self.address_policy is not None:
            shown["address_policy"] = self.address_policy.model_dump()
        if self.follow is not None:
            shown["follow"] = self.follow.model_dump()
        return shown

    def __repr__(self) -> str:
        return f"BatchOptions({self.display()!r})"

    def __str__(self) -> str:
        return repr(self)
