"""Bad connection settings fail at start with one clear sentence (issue 4, "The promise"): a wrong Redis
password, no password, and TLS (`rediss://`) against a server that does not speak TLS."""

from __future__ import annotations

import subprocess
import time

import pytest

from crawlq_local.server import EmbeddedServer
from tests.fault.conftest import PasswordServer, fault_env
from tests.helpers import CRAWLQ

COMMANDS = (["worker"], ["submit", "-"])


def run_timed(
    args: list[str], env: dict[str, str], timeout: float = 30
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [*CRAWLQ, *args], env=env, input="http://a.test/\n", capture_output=True, text=True, timeout=timeout, cwd="/"
    )
    return result, time.monotonic() - started


def assert_one_sentence(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(needle in lines[0] for needle in needles), lines[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("password", ["wrong-password", None], ids=["wrong", "missing"])
def test_wrong_redis_password_fails_at_start(password: str | None) -> None:
    """`crawlq worker` and `crawlq submit` against a server that wants another password (or any password).

    Invariants: each exits 1 within 10 s with exactly one stderr line, no traceback, naming the address and
    saying the credentials were refused (or are required), and never echoing the password.
    """
    with PasswordServer("right-password") as server:
        env = fault_env(server.url(password))
        for args in COMMANDS:
            result, elapsed = run_timed(args, env)
            print(f"\n[auth] {args[0]}: exit {result.returncode} after {elapsed:.1f} s: {result.stderr.strip()}")
            assert_one_sentence(result, f"127.0.0.1:{server.port}")
            assert elapsed < 10, elapsed
            assert "credentials" in result.stderr or "password" in result.stderr.lower(), result.stderr
            assert "right-password" not in result.stderr
            if password:
                assert password not in result.stderr


@pytest.mark.timeout(60)
def test_tls_against_plain_server_fails_at_start(server: EmbeddedServer) -> None:
    """`rediss://` (TLS) against a server that speaks plain RESP.

    Invariants: `crawlq worker` and `crawlq submit` each exit 1 within 10 s with exactly one stderr line, no
    traceback, naming the address and saying that TLS is what failed (the server is reachable, so a plain
    "cannot reach" / "timeout" would send the user looking in the wrong place).
    """
    env = fault_env(server.url.replace("redis://", "rediss://"))
    runs = [(args[0], *run_timed(args, env)) for args in COMMANDS]
    for command, result, elapsed in runs:
        print(f"\n[tls] {command}: exit {result.returncode} after {elapsed:.1f} s: {result.stderr.strip()}")
    for _, result, elapsed in runs:
        assert_one_sentence(result, f"127.0.0.1:{server.port}")
        assert elapsed < 10, elapsed
    for _, result, _ in runs:
        assert "TLS" in result.stderr, result.stderr
