"""The batch control endpoints: POST /batches/{id}/cancel|pause|resume, DELETE /batches/{id}, priority."""

from __future__ import annotations

import httpx

from crawlq_local.target import ThreadedTargetSite
from tests.api.conftest import READ_TOKEN


def test_pause_resume_cancel_and_delete_a_running_batch(api: httpx.Client, site: ThreadedTargetSite) -> None:
    urls = [site.url(f"/page/{n}") for n in range(30)]  # no worker runs: the batch stays running
    body = api.post("/batches", json={"urls": urls, "batch": "ctl", "priority": 7}).json()
    assert body["queued"] == 30
    assert api.get("/batches/ctl").json()["stats"]["priority"] == 7

    assert api.post("/batches/ctl/pause").json()["changed"] is True
    stats = api.get("/batches/ctl").json()["stats"]
    assert stats["state"] == "paused" and stats["paused"] is True
    assert api.post("/batches/ctl/pause").json()["changed"] is False
    assert api.post("/batches/ctl/resume").json()["changed"] is True
    assert api.get("/batches/ctl").json()["stats"]["state"] == "running"

    refused = api.delete("/batches/ctl")
    assert refused.status_code == 409 and "--force" in refused.json()["detail"]
    reply = api.post("/batches/ctl/cancel").json()
    assert reply["changed"] is True and reply["cancelled"] == 30
    stats = api.get("/batches/ctl").json()["stats"]
    assert stats["state"] == "complete" and stats["error_counts"] == {"cancelled": 30} and stats["done"] == 30
    assert stats["cancelled_at"] is not None
    assert api.post("/batches/ctl/cancel").json()["changed"] is False  # complete: nothing to do, and it says so
    resubmit = api.post("/batches", json={"urls": [site.url("/page/99")], "batch": "ctl"})
    assert resubmit.status_code == 409 and "cancelled" in resubmit.json()["detail"]

    assert api.delete("/batches/ctl").json()["changed"] is True
    assert api.get("/batches/ctl").status_code == 404
    assert api.post("/batches/nope/cancel").status_code == 404


def test_delete_force_cancels_first_and_the_read_only_token_may_not_control(
    api: httpx.Client, site: ThreadedTargetSite
) -> None:
    api.post("/batches", json={"urls": [site.url("/page/1")], "batch": "forced"})
    read_only = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert api.post("/batches/forced/pause", headers=read_only).status_code == 401
    assert api.delete("/batches/forced", params={"force": "true"}).json()["changed"] is True
    assert api.get("/batches/forced").status_code == 404
    listed = api.get("/batches").json()
    assert "forced" not in [b["batch"] for b in listed["batches"]]
