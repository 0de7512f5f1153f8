"""The "why is it slow" note: when per-host limits, not the workers, bound a batch, `crawlq status` and
GET /batches/{id} say so. A real worker (concurrency 10) crawls a one-host batch of slow URLs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from crawlq_local.target import ThreadedTargetSite
from tests.helpers import run_cli, wait_until, workers

NOTE = "per-host limits bound this batch"


def _busy(api: httpx.Client, batch: str, site: ThreadedTargetSite) -> Callable[[], bool]:
    def check() -> bool:
        stats = api.get(f"/batches/{batch}").json()["stats"]
        return bool(stats["done"] >= 1 and site.stats.in_flight >= 1)

    return check


@pytest.mark.parametrize(("per_host", "bound"), [(1, True), (10, False)])
def test_the_note_names_per_host_limits_only_when_they_bind(
    per_host: int,
    bound: bool,
    api_factory: Callable[..., httpx.Client],
    env: dict[str, str],
    site: ThreadedTargetSite,
    tmp_path: Path,
) -> None:
    api = api_factory()
    worker_env = {**env, "CRAWLQ_PER_HOST_CONCURRENCY": str(per_host)}
    urls = [site.url(f"/delay?ms=800&n={i}") for i in range(120)]
    with workers(worker_env, 1, tmp_path, "--concurrency", "10"):
        batch = api.post("/batches", json={"urls": urls}).json()["batch"]
        assert wait_until(_busy(api, batch, site), 60, interval=0.1)
        seen: list[dict[str, Any]] = []
        for _ in range(4):  # several looks while the batch runs: the answer must hold at each
            seen.append(api.get(f"/batches/{batch}").json())
            time.sleep(0.3)
        shown = run_cli(["status"], {**env, "COLUMNS": "250"}, timeout=30).stdout  # the CLI's own per-host is 50
        snapshot = orjson.loads(run_cli(["status", "--json"], env, timeout=30).stdout)
        assert not api.get(f"/batches/{batch}").json()["stats"]["complete"]
        api.post(f"/batches/{batch}/cancel")
    for detail in seen:
        if bound:
            assert detail["bound_by"] == "per_host", detail
            assert detail["note"].startswith(NOTE) and "(1)" in detail["note"], detail["note"]
            assert "CRAWLQ_PER_HOST_CONCURRENCY" in detail["note"] and "crawlq hosts set" in detail["note"]
        else:
            assert detail["bound_by"] is None and detail["note"] is None, detail
    assert (NOTE in " ".join(shown.split())) is bound, shown
    assert (batch in snapshot["notes"]) is bound, snapshot["notes"]
    schema = api.get("/openapi.json").json()["components"]["schemas"]["BatchDetail"]["properties"]
    assert "bound_by" in schema and "note" in schema
