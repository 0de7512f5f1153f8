"""crawlq.settings: every field is a CRAWLQ_* variable, list fields parse, `.env` is read, env() round-trips."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from crawlq.settings import HostRule, Settings

pytestmark = pytest.mark.timeout(10)

#: a valid non-default value for each field, as the environment spells it, and as Settings holds it
SAMPLES: dict[str, tuple[str, object]] = {
    "redis_url": ("redis://10.1.2.3:6380/2", "redis://10.1.2.3:6380/2"),
    "queue_name": ("other:queue", "other:queue"),
    "redis_connect_timeout_s": ("2.5", 2.5),
    "redis_retry_window_s": ("12", 12.0),
    "chunk_size": ("17", 17),
    "job_expires_s": ("3600", 3600),
    "max_job_tries": ("5", 5),
    "lease_s": ("9.5", 9.5),
    "chunk_max_s": ("30", 30.0),
    "shutdown_grace_s": ("4", 4.0),
    "queue_read_limit": ("64", 64),
    "poll_delay_s": ("0.02", 0.02),
    "idle_poll_s": ("0.5", 0.5),
    "reconcile_interval_s": ("2", 2.0),
    "heartbeat_interval_s": ("3", 3.0),
    "result_ttl_s": ("86400", 86400),
    "concurrency": ("33", 33),
    "user_agent": ("examplebot/1.0 (+https://example.test)", "examplebot/1.0 (+https://example.test)"),
    "fetch_timeout_s": ("7.5", 7.5),
    "connect_timeout_s": ("1.5", 1.5),
    "max_body_bytes": ("1048576", 1048576),
    "max_redirects": ("2", 2),
    "extract_content": ("0", False),
    "snippet_chars": ("250", 250),
    "store_bodies": ("dir:/var/lib/crawlq", "dir:/var/lib/crawlq"),
    "store_body_ttl_s": ("60", 60),
    "store_body_max_bytes": ("1000", 1000),
    "max_attempts": ("6", 6),
    "backoff_base_s": ("0.25", 0.25),
    "backoff_max_s": ("9", 9.0),
    "retry_after_max_s": ("30", 30.0),
    "per_host_concurrency": ("4", 4),
    "per_host_delay_s": ("0.75", 0.75),
    "host_rules": (
        '[{"pattern": "*.example.com", "concurrency": 4, "delay_s": 1}, {"pattern": "127.0.0.2"}]',
        [HostRule(pattern="*.example.com", concurrency=4, delay_s=1.0), HostRule(pattern="127.0.0.2")],
    ),
    "cooldown_base_s": ("0.5", 0.5),
    "cooldown_max_s": ("20", 20.0),
    "robots_enabled": ("0", False),
    "robots_ttl_s": ("600", 600),
    "robots_max_crawl_delay_s": ("5", 5.0),
    "allow_private": ("1", True),
    "allowed_networks": ("127.0.0.2/32, 10.0.0.0/8,,", ["127.0.0.2/32", "10.0.0.0/8"]),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CRAWLQ_* variables and no .env file but the ones a test writes."""
    for name in list(os.environ):
        if name.startswith("CRAWLQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_samples_cover_every_field() -> None:
    missing, stale = set(Settings.model_fields) - set(SAMPLES), set(SAMPLES) - set(Settings.model_fields)
    assert not missing and not stale, f"give every new field a sample here: missing {missing}, stale {stale}"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_field_is_read_from_its_environment_variable(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    raw, expected = SAMPLES[name]
    assert getattr(Settings(), name) != expected, "the sample must differ from the default"
    monkeypatch.setenv(f"CRAWLQ_{name.upper()}", raw)
    assert getattr(Settings(), name) == expected


def test_all_variables_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (raw, _) in SAMPLES.items():
        monkeypatch.setenv(f"CRAWLQ_{name.upper()}", raw)
    settings = Settings()
    assert {name: getattr(settings, name) for name in SAMPLES} == {name: value for name, (_, value) in SAMPLES.items()}


def test_env_round_trips_through_a_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings.env() is how the launcher hands settings to worker processes."""
    values: dict[str, Any] = {name: value for name, (_, value) in SAMPLES.items()}
    original = Settings(**values)
    exported = original.env()
    assert set(exported) == {f"CRAWLQ_{name.upper()}" for name in Settings.model_fields}
    for key, value in exported.items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_host_rules_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLQ_HOST_RULES", "")
    assert Settings().host_rules == []
    monkeypatch.setenv("CRAWLQ_HOST_RULES", '[{"pattern": "*.slow.test", "delay_s": 2.5}]')
    (rule,) = Settings().host_rules
    assert (rule.pattern, rule.concurrency, rule.delay_s) == ("*.slow.test", None, 2.5)


@pytest.mark.parametrize(
    "raw",
    [
        "[{",  # not JSON
        '[{"pattern": "a", "concurrency": 0}]',  # below 1
        '[{"pattern": "a", "delay_s": -1}]',
        '[{"pattern": "a", "speed": 3}]',  # unknown key
        '[{"concurrency": 3}]',  # no pattern
    ],
)
def test_bad_host_rules_are_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CRAWLQ_HOST_RULES", raw)
    with pytest.raises((ValidationError, ValueError)):
        Settings()


def test_allowed_networks_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLQ_ALLOWED_NETWORKS", " 127.0.0.0/8 ,fd00::/8 ")
    assert Settings().allowed_networks == ["127.0.0.0/8", "fd00::/8"]
    monkeypatch.setenv("CRAWLQ_ALLOWED_NETWORKS", "")
    assert Settings().allowed_networks == []


@pytest.mark.parametrize(
    ("name", "raw"),
    [("per_host_concurrency", "0"), ("fetch_timeout_s", "0"), ("max_attempts", "0"), ("chunk_size", "5000")],
)
def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, raw: str) -> None:
    monkeypatch.setenv(f"CRAWLQ_{name.upper()}", raw)
    with pytest.raises(ValidationError):
        Settings()


def test_dotenv_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch, clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        "# crawlq\nCRAWLQ_PER_HOST_CONCURRENCY=7\nCRAWLQ_ALLOWED_NETWORKS=127.0.0.2/32,127.0.0.3/32\n"
        "CRAWLQ_ROBOTS_ENABLED=false\nCRAWLQ_MAX_REDIRECTS=3\nUNRELATED=1\n"
    )
    settings = Settings()
    assert settings.per_host_concurrency == 7
    assert settings.allowed_networks == ["127.0.0.2/32", "127.0.0.3/32"]
    assert settings.robots_enabled is False
    monkeypatch.setenv("CRAWLQ_MAX_REDIRECTS", "1")
    assert Settings().max_redirects == 1
    assert Settings(max_redirects=0).max_redirects == 0  # keyword overrides beat both


def test_safe_defaults() -> None:
    settings = Settings()
    assert settings.allow_private is False and settings.allowed_networks == []
    assert settings.robots_enabled is True
    assert settings.per_host_concurrency == 2 and settings.per_host_delay_s == 0.0
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.user_agent.startswith("crawlq/")


@pytest.mark.parametrize("raw", ["not-a-network", "10.0.0.0/33", "127.0.0.1/8/2"])
def test_bad_allowed_networks_are_refused_at_load(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    """A typo must be a settings error when the process starts, not a traceback from the fetcher's policy."""
    monkeypatch.setenv("CRAWLQ_ALLOWED_NETWORKS", f"127.0.0.2/32,{raw}")
    with pytest.raises(ValidationError):
        Settings()
