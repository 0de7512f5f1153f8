"""Per-batch fetch options: headers, cookies, user agent and proxy reach every request of the batch, from
the CLI, the Python API and the HTTP API's model; secrets are never shown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from crawlq.options import BatchOptions, redact_url
from crawlq.settings import Settings
from crawlq.store import OptionsConflict, Store
from crawlq_api.models import SubmitRequest
from crawlq_local.server import EmbeddedServer
from tests.helpers import cli_env, run_cli, workers
from tests.site import KnownSite, serve
from workers.batches import BatchContext
from workers.fetcher import Fetcher

pytestmark = pytest.mark.timeout(60)

SECRETS = ("s3cr3t-token", "cookie-value-42", "proxy-pass-7")
OPTIONS = BatchOptions(
    headers={"Authorization": "Bearer s3cr3t-token", "X-Trace": "visible"},
    cookies={"session": "cookie-value-42"},
    user_agent="crawlq-test/1 (on purpose)",
    proxy="http://user:proxy-pass-7@127.0.0.1:3128",
)


@pytest.fixture
def site() -> Iterator[KnownSite]:
    with serve(KnownSite()) as running:
        yield running


def test_secrets_are_redacted_everywhere_they_are_shown() -> None:
    for shown in (repr(OPTIONS), str(OPTIONS), str(OPTIONS.display()), f"{OPTIONS}"):
        assert not any(secret in shown for secret in SECRETS), shown
        assert "visible" in shown and "crawlq-test/1" in shown
    assert redact_url("http://u:p@h:1/") == "http://***@h:1/"
    assert BatchOptions.from_json(OPTIONS.to_json()) == OPTIONS  # Redis keeps them whole
    assert BatchOptions.from_json(None).empty and not OPTIONS.empty


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"headers": {"Host": "elsewhere"}},
        {"cookies": {"a": "b; c=d"}},
        {"proxy": "socks5://127.0.0.1:1080"},
        {"proxy": "http://"},
        {"user_agent": "x\ny"},
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BatchOptions.model_validate(kwargs)


async def test_options_are_written_once_per_batch(settings: Settings, redis: object) -> None:
    store = Store(redis, settings)  # type: ignore[arg-type]
    await store.save_options("b1", OPTIONS)
    await store.save_options("b1", OPTIONS)  # the same again: fine
    assert await store.load_options("b1") == OPTIONS
    with pytest.raises(OptionsConflict):
        await store.save_options("b1", BatchOptions(user_agent="other"))
    assert (await store.load_options("nothing")).empty


async def test_the_fetcher_sends_the_batch_headers_and_drops_secrets_on_a_cross_host_redirect(
    settings: Settings, site: KnownSite
) -> None:
    options = BatchOptions(headers={"Authorization": "Bearer s3cr3t-token", "X-Trace": "t"},
                           cookies={"session": "cookie-value-42"}, user_agent="ua-on-purpose")  # fmt: skip
    fetcher = Fetcher(settings)
    await fetcher.start()
    try:
        request = BatchContext.of(options).request
        assert (await fetcher.fetch(f"{site.url}/echo", request=request)).status == 200
        other = site.url.replace("127.0.0.1", "localhost")  # another host name, the same loopback server
        hop = await fetcher.fetch(f"{site.url}/hop?to={other}/echo", request=request)
        assert hop.status == 200 and hop.final_url == f"{other}/echo"
        plain = await fetcher.fetch(f"{site.url}/echo")
    finally:
        await fetcher.close()
    first, redirecting, redirected, bare = (seen.headers for seen in site.seen)
    for sent in (first, redirecting):
        assert sent["Authorization"] == "Bearer s3cr3t-token" and sent["Cookie"] == "session=cookie-value-42"
        assert sent["User-Agent"] == "ua-on-purpose" and sent["X-Trace"] == "t"
    assert "Authorization" not in redirected and "Cookie" not in redirected and redirected["X-Trace"] == "t"
    assert plain.status == 200 and bare["User-Agent"].startswith("crawlq/") and "Cookie" not in bare


async def _proxy(seen: list[bytes]) -> asyncio.Server:
    """A loopback 'proxy' that records each request head and answers it itself."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        body = b"<title>via proxy</title>"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_the_proxy_is_used_and_is_itself_checked_by_the_address_policy(settings: Settings) -> None:
    seen: list[bytes] = []
    server = await _proxy(seen)
    port = server.sockets[0].getsockname()[1]
    proxied = BatchContext.of(BatchOptions(proxy=f"http://user:pw@127.0.0.1:{port}")).request
    guarded = Settings(redis_url=settings.redis_url, allowed_networks=[])  # loopback is not allowed here
    try:
        for current in (settings, guarded):
            fetcher = Fetcher(current)
            await fetcher.start()
            try:
                attempts = [await fetcher.fetch("http://proxied.test/page", request=proxied)]
            finally:
                await fetcher.close()
            if current is settings:
                assert attempts[0].status == 200 and attempts[0].content is not None
                assert attempts[0].content.title == "via proxy"
                assert seen[0].startswith(b"GET http://proxied.test/page HTTP/1.1")
                assert b"Proxy-Authorization: Basic dXNlcjpwdw==" in seen[0]
            else:
                assert attempts[0].error == "blocked_address" and attempts[0].message is not None
                assert attempts[0].message.startswith("proxy: ") and len(seen) == 1  # never reached
    finally:
        server.close()
        await server.wait_closed()


def test_the_http_api_model_takes_options_and_never_echoes_them() -> None:
    request = SubmitRequest.model_validate({"urls": ["http://a.test/"], "options": OPTIONS.model_dump()})
    assert request.options == OPTIONS


def test_cli_options_reach_the_worker_and_secrets_stay_out_of_every_display(
    site: KnownSite, redis_server: EmbeddedServer, tmp_path: Path
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    env = cli_env(redis_server.url, robots_enabled=0)
    flags = ["--header", "Authorization: Bearer s3cr3t-token", "--cookie", "session=cookie-value-42",
             "--user-agent", "ua-on-purpose", "--header", "X-Trace: t"]  # fmt: skip
    with workers(env, 1, tmp_path):
        submitted = run_cli(["submit", "-", "--batch", "opts", *flags], env, stdin=f"{site.url}/echo\n")
        assert submitted.returncode == 0, submitted.stderr
        assert run_cli(["wait", "opts", "--timeout", "40"], env, timeout=50).returncode == 0
        shown = [run_cli(args, env) for args in (["status"], ["status", "--json"], ["stats", "opts", "--json"])]
        shown.append(run_cli(["results", "opts"], env))
    sent = site.seen[0].headers
    assert sent["Authorization"] == "Bearer s3cr3t-token" and sent["Cookie"] == "session=cookie-value-42"
    assert sent["User-Agent"] == "ua-on-purpose"
    logs = "".join(path.read_text() for path in tmp_path.glob("worker-*.log"))
    for text in [submitted.stdout, submitted.stderr, logs, *(r.stdout + r.stderr for r in shown)]:
        assert not any(secret in text for secret in SECRETS)
    bad = run_cli(["submit", "-", "--cookie", "no-equals-sign"], env, stdin=f"{site.url}/echo\n")
    assert bad.returncode == 2 and "a cookie is 'name=value'" in bad.stderr and "Traceback" not in bad.stderr
