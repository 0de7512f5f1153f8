"""Host rules set at run time (`crawlq hosts set`): stored in Redis (`keys.HOST_RULES`, pattern -> JSON), read by
every worker (at least every `workers.control.REFRESH_S`, and at once on a message on `keys.CONTROL`) and applied
before the environment's CRAWLQ_HOST_RULES: the first matching rule wins, run-time rules first."""

from __future__ import annotations

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis

from crawlq import keys
from crawlq.connection import result_of
from crawlq.settings import HostRule

__all__ = ["RULES_MESSAGE", "read_rules", "set_rule", "unset_rule"]

RULES_MESSAGE = "host-rules"  #: published on keys.CONTROL when the run-time host rules change


def _rule(pattern: bytes, raw: bytes) -> HostRule | None:
    try:
        return HostRule(pattern=pattern.decode(), **orjson.loads(raw))
    except (ValueError, TypeError, ValidationError):
        return None  # a rule written by hand that does not parse is ignored


async def read_rules(redis: Redis) -> list[HostRule]:
    """The run-time host rules, in pattern order (a more specific pattern sorts first when it is longer)."""
    stored = await result_of(redis.hgetall(keys.HOST_RULES))
    rules = [rule for pattern, raw in stored.items() if (rule := _rule(pattern, raw)) is not None]
    return sorted(rules, key=lambda rule: (-len(rule.pattern), rule.pattern))


async def set_rule(redis: Redis, rule: HostRule) -> None:
    """Store (or replace) the rule for its pattern and tell the workers."""
    body = orjson.dumps({"concurrency": rule.concurrency, "delay_s": rule.delay_s}).decode()
    await result_of(redis.hset(keys.HOST_RULES, rule.pattern, body))
    await result_of(redis.publish(keys.CONTROL, RULES_MESSAGE))


async def unset_rule(redis: Redis, pattern: str) -> bool:
    """Remove the rule for `pattern`; False if there was none."""
    removed = int(await result_of(redis.hdel(keys.HOST_RULES, pattern)))
    if removed:
        await result_of(redis.publish(keys.CONTROL, RULES_MESSAGE))
    return removed > 0
