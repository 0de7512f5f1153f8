"""Link following: a batch's follow options and the scope rule that says which found links it keeps.

A batch that follows links (`crawlq submit --follow`) adds the links of its HTML pages to itself, up to
`max_depth` links away from its seeds (depth 0) and while its total is below `max_pages`. A link is kept
when it is in scope of the page it was found on:

- `same-host`: the same host name and port as the page;
- `same-domain`: the same registrable domain (`a.example.co.uk` and `b.example.co.uk`), read from the
  public suffix list snapshot bundled with `tldextract` (never fetched); IP addresses and single-label
  hosts (`localhost`) are their own domain;
- anything else is a regular expression searched in the link's canonical URL.

Seeds are never filtered: the scope only decides which found links join the batch.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["NAMED_SCOPES", "FollowOptions", "Scope", "registrable_domain"]

NAMED_SCOPES = ("same-host", "same-domain")
MAX_SCOPE_CHARS = 500  #: a longer --scope regex is refused


class FollowOptions(BaseModel):
    """How far a batch follows the links of its pages (`BatchOptions.follow`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_depth: int = Field(default=2, ge=0, le=1000)  #: links this many hops from a seed are the last added
    scope: str = "same-host"  #: same-host, same-domain or a regular expression (see the module docstring)
    max_pages: int | None = Field(default=None, ge=1)  #: found links stop joining once the batch has this many

    @field_validator("scope")
    @classmethod
    def _check_scope(cls, value: str) -> str:
        if value in NAMED_SCOPES:
            return value
        if not value or len(value) > MAX_SCOPE_CHARS:
            raise ValueError(
                f"--scope is same-host, same-domain or a regular expression of 1 to {MAX_SCOPE_CHARS} characters"
            )
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"--scope {value[:80]!r} is not a regular expression ({exc})") from exc
        return value


@functools.cache
def _extractor() -> Any:
    """tldextract on its bundled snapshot only (offline), imported on first use (it costs ~130 ms)."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@functools.lru_cache(maxsize=4096)
def registrable_domain(host: str) -> str:
    """`a.b.example.co.uk` -> `example.co.uk`; an IP address or a host without a public suffix is itself."""
    found = _extractor()(host)
    if not found.suffix or not found.domain:
        return host
    return f"{found.domain}.{found.suffix}"


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2].lower()


def _hostname(url: str) -> str:
    return urlsplit(url).hostname or ""


class Scope:
    """The compiled scope rule of one batch."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self._pattern = re.compile(rule) if rule not in NAMED_SCOPES else None

    def allows(self, page_url: str, link_url: str) -> bool:
        """Whether `link_url` (canonical) found on `page_url` joins the batch."""
        if self._pattern is not None:
            return self._pattern.search(link_url) is not None
        if self.rule == "same-host":
            return _netloc(link_url) == _netloc(page_url)
        return registrable_domain(_hostname(link_url)) == registrable_domain(_hostname(page_url))
