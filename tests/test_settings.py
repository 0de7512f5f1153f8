"""crawlq.settings: every field is a CRAWLQ_* variable, list fields parse, `.env` is read, env() round-trips, and
an invalid value is one sentence naming the variable (ConfigError)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from crawlq.errors import ConfigError
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
    "allow_eviction": ("1", True),
    "allow_private": ("1", True),
    "metrics_port": ("9108", 9108),
    "metrics_host": ("127.0.0.1", "127.0.0.1"),
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
    with pytest.raises(ConfigError):
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
    with pytest.raises(ConfigError):
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
    with pytest.raises(ConfigError):
        Settings()


@pytest.mark.parametrize(
    ("variable", "raw", "sentence"),
    [
        ("CRAWLQ_PER_HOST_CONCURRENCY", "abc", "CRAWLQ_PER_HOST_CONCURRENCY=abc: must be a whole number"),
        ("CRAWLQ_CONCURRENCY", "0", "CRAWLQ_CONCURRENCY=0: must be at least 1"),
        ("CRAWLQ_CHUNK_SIZE", "5000", "CRAWLQ_CHUNK_SIZE=5000: must be at most 1000"),
        ("CRAWLQ_LEASE_S", "1", "CRAWLQ_LEASE_S=1: must be greater than 1"),
        ("CRAWLQ_FETCH_TIMEOUT_S", "nan", "CRAWLQ_FETCH_TIMEOUT_S=nan: must be a finite number"),
        ("CRAWLQ_BACKOFF_BASE_S", "fast", "CRAWLQ_BACKOFF_BASE_S=fast: must be a number"),
        ("CRAWLQ_ROBOTS_ENABLED", "maybe", "CRAWLQ_ROBOTS_ENABLED=maybe: must be a boolean"),
        ("CRAWLQ_QUEUE_NAME", "", "CRAWLQ_QUEUE_NAME=: must not be empty"),
        ("CRAWLQ_HOST_RULES", "not json", "CRAWLQ_HOST_RULES=not json: not valid JSON"),
        ("CRAWLQ_HOST_RULES", '{"pattern": "a"}', "CRAWLQ_HOST_RULES={'pattern': 'a'}: must be a JSON list"),
        (
            "CRAWLQ_HOST_RULES",
            '[{"pattern": "a", "concurrency": 0}]',
            "CRAWLQ_HOST_RULES: rule 1: concurrency=0: must be at least 1",
        ),
        ("CRAWLQ_HOST_RULES", '[{"pattern": "a"}, {"speed": 3}]', "CRAWLQ_HOST_RULES: rule 2: pattern: is required"),
        (
            "CRAWLQ_ALLOWED_NETWORKS",
            "127.0.0.2/32,10.0.0.0/33",
            "CRAWLQ_ALLOWED_NETWORKS=127.0.0.2/32,10.0.0.0/33: '10.0.0.0/33' is not a network",
        ),
        ("CRAWLQ_REDIS_URL", "redis//x", "CRAWLQ_REDIS_URL=redis//x: not a Redis URL: it must start with redis://"),
        (
            "CRAWLQ_REDIS_URL",
            "redis://h:99999/0",
            "CRAWLQ_REDIS_URL=redis://h:99999/0: not a Redis URL: port out of range",
        ),
        ("CRAWLQ_REDIS_URL", "redis://h/zero", "CRAWLQ_REDIS_URL=redis://h/zero: the database 'zero' is not a number"),
    ],
)
def test_an_invalid_variable_is_one_sentence_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, sentence: str
) -> None:
    monkeypatch.setenv(variable, raw)
    with pytest.raises(ConfigError) as caught:
        Settings()
    message = str(caught.value)
    assert message.startswith(sentence), message
    assert "\n" not in message and "pydantic" not in message and "Input should" not in message, message


def test_keyword_arguments_are_named_as_keywords() -> None:
    """The Python API: `Settings(concurrency=0)` names the keyword, not a variable that is not set."""
    with pytest.raises(ConfigError, match=r"^concurrency=0: must be at least 1$"):
        Settings(concurrency=0)
    with pytest.raises(ConfigError, match=r"^redis_url=redis//x: not a Redis URL"):
        Settings(redis_url="redis//x")


def test_replace_validates_unlike_model_copy() -> None:
    settings = Settings()
    assert settings.replace(concurrency=5).concurrency == 5
    with pytest.raises(ConfigError, match=r"^concurrency=0: must be at least 1$"):
        settings.replace(concurrency=0)


def test_several_bad_variables_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLQ_CONCURRENCY", "0")
    monkeypatch.setenv("CRAWLQ_MAX_ATTEMPTS", "x")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert (
        str(caught.value) == "CRAWLQ_CONCURRENCY=0: must be at least 1; CRAWLQ_MAX_ATTEMPTS=x: must be a whole number"
    )


def test_a_password_and_control_characters_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLQ_REDIS_URL", "redis://user:s3cret@host:6379/nope")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert "s3cret" not in str(caught.value) and "redis://user:***@host:6379/nope" in str(caught.value)
    monkeypatch.setenv("CRAWLQ_REDIS_URL", "redis://h/\x1b]0;evil\x07")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert "\x1b" not in str(caught.value) and "\\x1b]0;evil\\x07" in str(caught.value), str(caught.value)
