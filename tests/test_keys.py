"""crawlq/keys.py: every key builder's exact string. A change here changes what is stored in Redis (and what
the Lua scripts and arq read), so it must be deliberate: these strings pin it."""

from __future__ import annotations

import fnmatch

import pytest

from crawlq import keys

BUILT = [
    (keys.batch_meta, "b1", "crawlq:b:b1:meta"),
    (keys.batch_urls, "b1", "crawlq:b:b1:urls"),
    (keys.batch_results, "b1", "crawlq:b:b1:results"),
    (keys.batch_jobs, "b1", "crawlq:b:b1:jobs"),
    (keys.batch_submitters, "b1", "crawlq:b:b1:submitters"),
    (keys.batch_queue, "b1", "crawlq:b:b1:queue"),
    (keys.batch_options, "b1", "crawlq:b:b1:options"),
    (keys.batch_found, "b1", "crawlq:b:b1:found"),
    (keys.batch_parents, "b1", "crawlq:b:b1:parents"),
    (keys.batch_events, "b1", "crawlq:events:b1"),
    (keys.body, "ab12", "crawlq:body:ab12"),
    (keys.enqueue_reply, "b1:0a1b", "crawlq:enqueued:b1:0a1b"),
    (keys.host_state, "a.test:80", "crawlq:host:a.test:80"),
    (keys.host_leases, "a.test:80", "crawlq:host:a.test:80:leases"),
    (keys.host_waiters, "a.test:80", "crawlq:host:a.test:80:waiters"),
    (keys.gate_wake, "w1", "crawlq:gate:w1"),
    (keys.robots, "http://a.test", "crawlq:robots:http://a.test"),
    (keys.robots_lock, "http://a.test", "crawlq:robots:http://a.test:lock"),
    (keys.wake, "crawlq:queue", "crawlq:wake:crawlq:queue"),
    (keys.worker, "w1", "crawlq:worker:w1"),
    (keys.arq_job, "j1", "arq:job:j1"),
    (keys.arq_in_progress, "j1", "arq:in-progress:j1"),
    (keys.arq_result, "j1", "arq:result:j1"),
    (keys.arq_retry, "j1", "arq:retry:j1"),
]

CONSTANTS = {
    "PREFIX": "crawlq:",
    "BATCHES": "crawlq:batches",
    "ACTIVE": "crawlq:active",
    "STATS_ALL": "crawlq:stats:all",
    "RECONCILE_LOCK": "crawlq:reconcile:lock",
    "WORKER_PREFIX": "crawlq:worker:",
    "SCHED": "crawlq:sched",
    "SCHED_TURN": "crawlq:sched:turn",
    "PAUSED": "crawlq:paused",
    "CLAIMED": "crawlq:claimed",
    "CONTROL": "crawlq:control",
    "GATE_COOLDOWN": "crawlq:gate:cooldown",
}


@pytest.mark.parametrize(("build", "arg", "expected"), BUILT, ids=[b.__name__ for b, _, _ in BUILT])
def test_each_builder_spells_its_key(build: object, arg: str, expected: str) -> None:
    assert callable(build)
    assert build(arg) == expected


def test_every_public_builder_is_pinned() -> None:
    builders = {name for name in keys.__all__ if callable(getattr(keys, name))} - {"host_of_key"}
    assert builders == {build.__name__ for build, _, _ in BUILT}


@pytest.mark.parametrize(("name", "expected"), CONSTANTS.items())
def test_each_constant_key(name: str, expected: str) -> None:
    assert getattr(keys, name) == expected


def test_every_key_lives_under_crawlq_or_arq() -> None:
    for build, arg, _ in BUILT:
        assert build(arg).startswith(("crawlq:", "arq:"))


@pytest.mark.parametrize("host", ["a.test:80", "[::1]:8080", "x.test:8443"])
def test_a_scanned_host_key_names_its_host_and_kind(host: str) -> None:
    assert keys.host_of_key(keys.host_state(host).encode()) == (host, True)
    assert keys.host_of_key(keys.host_leases(host).encode()) == (host, False)
    assert keys.host_of_key(keys.host_waiters(host).encode()) == (host, False)
    for build in (keys.host_state, keys.host_leases, keys.host_waiters):
        assert fnmatch.fnmatchcase(build(host), keys.HOST_KEYS)
