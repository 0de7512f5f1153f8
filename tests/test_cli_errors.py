"""User errors at the command line are one sentence on stderr and exit 2, never a traceback: invalid settings
(every `crawlq` command and `python -m workers`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import CRAWLQ

pytestmark = pytest.mark.timeout(60)

#: every entry point that reads the settings, with the arguments it needs to get that far
COMMANDS: list[list[str]] = [
    [*CRAWLQ, "submit", "-"],
    [*CRAWLQ, "worker"],
    [*CRAWLQ, "crawl", "-"],
    [*CRAWLQ, "demo"],
    [*CRAWLQ, "stats", "some-batch"],
    [*CRAWLQ, "status"],
    [*CRAWLQ, "wait", "some-batch"],
    [*CRAWLQ, "results", "some-batch"],
    [sys.executable, "-m", "workers"],
]

BAD_SETTINGS = [
    ("CRAWLQ_PER_HOST_CONCURRENCY", "abc", "CRAWLQ_PER_HOST_CONCURRENCY=abc: must be a whole number"),
    ("CRAWLQ_HOST_RULES", "not json", "CRAWLQ_HOST_RULES=not json: not valid JSON"),
    ("CRAWLQ_ALLOWED_NETWORKS", "10.0.0.0/33", "CRAWLQ_ALLOWED_NETWORKS=10.0.0.0/33: '10.0.0.0/33' is not a network"),
    ("CRAWLQ_CONCURRENCY", "0", "CRAWLQ_CONCURRENCY=0: must be at least 1"),
    ("CRAWLQ_REDIS_URL", "redis//x", "CRAWLQ_REDIS_URL=redis//x: not a Redis URL"),
    ("CRAWLQ_FETCH_TIMEOUT_S", "-1", "CRAWLQ_FETCH_TIMEOUT_S=-1: must be greater than 0"),
]


def _environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLQ_")}
    env["CRAWLQ_REDIS_URL"] = "redis://127.0.0.1:1/0"  # never the Redis on 6379; nothing may connect anyway
    env.update(variables)
    return env


@pytest.mark.parametrize(("variable", "raw", "sentence"), BAD_SETTINGS, ids=[case[0] for case in BAD_SETTINGS])
def test_an_invalid_setting_is_one_sentence_and_exit_2_for_every_command(
    variable: str, raw: str, sentence: str
) -> None:
    env = _environment(**{variable: raw})
    running = [
        subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
        )
        for command in COMMANDS
    ]
    for command, process in zip(COMMANDS, running, strict=True):
        _, stderr = process.communicate("http://a.test/\n", timeout=30)
        lines = stderr.strip().splitlines()
        where = " ".join(command[1:])
        assert process.returncode == 2, (where, process.returncode, stderr)
        assert len(lines) == 1 and "Traceback" not in stderr, (where, stderr)
        assert sentence in lines[0], (where, lines[0])


def test_a_bad_redis_url_option_is_one_sentence_and_exit_2() -> None:
    result = subprocess.run(
        [*CRAWLQ, "--redis-url", "redis//x", "status"], env=_environment(), capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "redis_url=redis//x: not a Redis URL" in result.stderr


def test_worker_concurrency_zero_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workers", "--concurrency", "0"], env=_environment(), capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "concurrency=0: must be at least 1" in result.stderr
