"""The fast canonicalisation path agrees with the full (w3lib) path on every URL it accepts."""

from __future__ import annotations

import random

import pytest

from crawlq import urls
from crawlq.urls import _fast_canonical, canonical

HOST = "abcxyz0129.-"
SEGMENT = "aZ09_~!$'()*,;:@=-."
QUERY = "aZ09_.~-"


def random_url(rng: random.Random) -> str:
    host = rng.choice("abc") + "".join(rng.choice(HOST) for _ in range(rng.randint(0, 8)))
    port = rng.choice(["", ":80", ":443", ":8080", ":0", ":99999", ":1"])
    path = "".join(
        "/" + "".join(rng.choice(SEGMENT) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(0, 3))
    )
    query = ""
    if rng.random() < 0.6:
        parts = []
        for _ in range(rng.randint(1, 4)):
            key = "".join(rng.choice(QUERY) for _ in range(rng.randint(1, 3)))
            value = "".join(rng.choice(QUERY) for _ in range(rng.randint(0, 3)))
            parts.append(key if rng.random() < 0.2 else f"{key}={value}")
        query = "?" + "&".join(parts)
    return f"{rng.choice(['http', 'https'])}://{host}{port}{path}{query}"


def full_canonical(text: str) -> str:
    original = urls._fast_canonical
    try:
        urls._fast_canonical = lambda _text: None  # type: ignore[assignment]
        return canonical(text)
    finally:
        urls._fast_canonical = original


@pytest.mark.parametrize("seed", range(5))
def test_fast_path_equals_full_path(seed: int) -> None:
    rng = random.Random(seed)
    taken = 0
    for _ in range(4000):
        text = random_url(rng)
        fast = _fast_canonical(text)
        if fast is None:
            continue
        taken += 1
        assert fast == full_canonical(text), text
    assert taken > 1000  # the fast path is really exercised


def test_fast_path_declines_what_it_cannot_do() -> None:
    for text in (
        "http://Example.com/",
        "http://a.com/%41",
        "http://a.com/a/../b",
        "http://a.com/?a=1&&b",
        "http://a.com/ü",
    ):
        assert _fast_canonical(text) is None
