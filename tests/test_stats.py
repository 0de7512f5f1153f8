"""crawlq/stats.py: the counter names the Lua scripts spell out are the Python ones, and results add the counters
the readers expect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crawlq.models import BatchStats, ErrorClass
from crawlq.stats import Family, Field, counters
from tests import factories

LUA = Path(__file__).resolve().parent.parent / "crawlq" / "lua"
#: per script, the KEYS indexes that are a batch's meta hash or the overall counters
META_KEYS = {"commit.lua": {1, 8}, "enqueue.lua": {1}, "discover.lua": {1}, "cancel.lua": {1}}
_HASH_CALL = re.compile(r"redis\.call\('H[A-Z]+', KEYS\[(\d+)\], ([^)]*)\)")
_NAME = re.compile(r"'([a-z_]+:?)'")
_MIRRORED = re.compile(r"^-- meta fields \(mirrored from crawlq/stats\.py[^)]*\): (.*?)\n(?!--   )", re.M | re.S)
KNOWN = {member.value for member in Field} | {member.value for member in Family}


def fields_used(text: str, meta_keys: set[int]) -> set[str]:
    """The field names a script writes or reads in the meta/counters hashes (literal arguments of H* calls)."""
    code = "\n".join(line.split("--")[0] for line in text.splitlines())
    return {
        name
        for index, arguments in _HASH_CALL.findall(code)
        if int(index) in meta_keys
        for name in _NAME.findall(arguments)
    }


def fields_listed(text: str) -> set[str]:
    match = _MIRRORED.search(text)
    assert match, "the script does not list the meta fields it mirrors from crawlq/stats.py"
    return {name.strip() for name in match.group(1).replace("--", " ").replace("\n", " ").split(",")}


@pytest.mark.parametrize("script", sorted(META_KEYS))
def test_lua_field_names_are_the_python_ones(script: str) -> None:
    text = (LUA / script).read_text()
    used = fields_used(text, META_KEYS[script])
    assert used, f"{script}: no meta field found (has the call shape changed?)"
    assert used <= KNOWN, f"{script} uses fields crawlq/stats.py does not define: {sorted(used - KNOWN)}"
    assert fields_listed(text) == used, f"{script}: its 'mirrored' comment and its code disagree"


def test_the_checker_sees_an_unknown_field() -> None:
    lua = "redis.call('HINCRBY', KEYS[1], 'dones', 1)\nredis.call('HSET', KEYS[2], 'total', 1)\n"
    assert fields_used(lua, {1}) == {"dones"}
    assert "dones" not in KNOWN


def test_counters_are_named_by_field_and_family() -> None:
    results = [
        factories.result("http://a.test/1", latency_ms=10.0),
        factories.result("http://a.test/2", status=503, error=ErrorClass.HTTP_STATUS, latency_ms=None, attempts=2),
    ]
    counts, latency_sum_ms = counters(results)
    assert counts[Field.DONE] == 2 and counts[Field.SUCCEEDED] == 1 and counts[Field.FAILED] == 1
    assert counts[Family.STATUS.field(503)] == 1 and counts["e:http_status"] == 1
    assert counts[Field.LATENCY_N] == 1 and latency_sum_ms == 10.0
    assert sum(by for name, by in counts.items() if name.startswith(Family.LATENCY_BUCKET)) == 1
    assert set(counts) <= {str(field) for field in Field} | {
        name for name in counts if any(name.startswith(family) for family in Family)
    }
    assert all(type(name) is str for name in counts)  # plain strings on the wire to Lua


def test_a_family_reads_its_fields_back() -> None:
    raw = {"s:200": "3", "s:404": "1", "e:timeout": "2", "done": "6"}
    assert Family.STATUS.counts(raw) == {"200": "3", "404": "1"}
    stats = BatchStats.from_counters("b", {**raw, Field.TOTAL: "6"})
    assert stats.status_counts == {"200": 3, "404": 1} and stats.error_counts == {"timeout": 2}
