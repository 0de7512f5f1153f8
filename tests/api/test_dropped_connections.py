"""The API while Redis drops its connections (a proxy, a failover, `CLIENT KILL`): reads still answer."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import redis as redis_sync

from crawlq_local.server import EmbeddedServer


def test_reads_answer_while_redis_drops_every_connection(api: httpx.Client, redis_server: EmbeddedServer) -> None:
    """Every client connection is killed every 10 ms for 3 s while `GET /totals` and `GET /batches` are
    read in a loop: every read answers 200 (a dropped connection is retried, not a 503)."""
    assert api.get("/totals").status_code == 200
    stop = threading.Event()
    killed: list[int] = []

    def storm() -> None:
        killer = redis_sync.Redis.from_url(redis_server.url, single_connection_client=True)
        while not stop.is_set():
            killed.append(int(killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")))
            time.sleep(0.01)
        killer.close()

    thread = threading.Thread(target=storm)
    thread.start()
    codes: Counter[int] = Counter()
    bodies: list[str] = []
    try:
        ends = time.monotonic() + 3
        while time.monotonic() < ends:
            for path in ("/totals", "/batches"):
                response = api.get(path)
                codes[response.status_code] += 1
                if response.status_code != 200:
                    bodies.append(response.text)
    finally:
        stop.set()
        thread.join()
    print(f"\n[api drops] {sum(killed)} connections dropped; answers {dict(codes)}")
    assert sum(killed) > 10
    assert set(codes) == {200}, bodies[:3]
