"""User errors at the command line: an invalid setting is one sentence on stderr and exit 2, never a traceback
(every `crawlq` command and `python -m workers`); bad input lines get one escaped stderr line each, with their
true line number, and the valid lines are still queued (or nothing is, with --strict: exit 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from crawlq import keys
from crawlq_local.server import EmbeddedServer
from tests.helpers import CRAWLQ, cli_env

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


BAD_INPUT = (
    b"\xef\xbb\xbfhttp://a.test/1\r\n",  # 1: BOM skipped, CRLF
    b"http://a.test/2\rhttp://a.test/3\n",  # 2: a raw CR does not split the line
    b"http://a.test/4\x0c\n",  # 3
    b"http://a.test/5\xc2\x85\n",  # 4: U+0085
    b"http://a.test/6\xe2\x80\xa8\n",  # 5: U+2028
    b"http://a.test/\xff\xfe7\n",  # 6: not UTF-8
    b"http://a.test/8\x1b]0;evil\x07\n",  # 7: an OSC sequence (sets the terminal title)
    b"http://xn--/\n",  # 8
    b"http://a..b/\n",  # 9
    b"http://127.0.0.1./\n",  # 10
    b"\n",  # 11
    b"# comment\n",  # 12
    b"http://a.test/1\n",  # 13: duplicate
    b"http://example.test./9\n",  # 14: a host name's trailing dot is dropped
    b"http://a.test/10",  # 15: no final newline
)


def test_submit_reports_bad_lines_with_true_numbers_escaped_and_queues_the_rest(
    redis_server: EmbeddedServer, tmp_path: Path
) -> None:
    path = tmp_path / "urls.txt"
    path.write_bytes(b"".join(BAD_INPUT))
    env = cli_env(redis_server.url)
    result = subprocess.run([*CRAWLQ, "submit", str(path), "--batch", "bad-input", "--json"], env=env,
                            capture_output=True, cwd="/")  # fmt: skip
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    assert "\x1b" not in stderr and "\x07" not in stderr and "\x0c" not in stderr and "\r" not in stderr
    assert "\x85" not in stderr and "\u2028" not in stderr
    assert stderr.splitlines() == [
        "line 2: control character carriage return (U+000D) in the line: http://a.test/2\\rhttp://a.test/3",
        "line 3: control character form feed (U+000C) in the line: http://a.test/4\\x0c",
        "line 4: control character next line (U+0085) in the line: http://a.test/5\\x85",
        "line 5: control character line separator (U+2028) in the line: http://a.test/6\\u2028",
        "line 6: not valid UTF-8 (byte 0xff at column 15): http://a.test/\\xff\\xfe7",
        "line 7: control character escape (U+001B) in the line: http://a.test/8\\x1b]0;evil\\x07",
        "line 8: invalid punycode label 'xn--' in the host: http://xn--/",
        "line 9: empty label in the host 'a..b': http://a..b/",
        "line 10: trailing dot after the IP address 127.0.0.1: http://127.0.0.1./",
    ]
    report = json.loads(result.stdout)
    assert (report["queued"], report["duplicates"], report["invalid"]) == (3, 1, 9)
    stored = redis.Redis.from_url(redis_server.url).hvals(keys.batch_urls("bad-input"))
    assert sorted(stored) == [b"http://a.test/1", b"http://a.test/10", b"http://example.test/9"]


@pytest.mark.parametrize("strict_source", ["file", "stdin"])
def test_strict_refuses_and_queues_nothing(redis_server: EmbeddedServer, tmp_path: Path, strict_source: str) -> None:
    path = tmp_path / "urls.txt"
    path.write_bytes(b"".join(BAD_INPUT))
    batch = f"strict-{strict_source}"
    source, data = (str(path), None) if strict_source == "file" else ("-", path.read_bytes())
    result = subprocess.run([*CRAWLQ, "submit", source, "--batch", batch, "--strict"], env=cli_env(redis_server.url),
                            input=data, capture_output=True, cwd="/")  # fmt: skip
    assert result.returncode == 3, result.stderr
    lines = result.stderr.decode().splitlines()
    assert (
        len(lines) == 10
        and lines[0].startswith("line 2: ")
        and lines[-1].endswith("9 invalid lines; nothing was queued")
    )
    assert redis.Redis.from_url(redis_server.url).exists(keys.batch_urls(batch)) == 0
