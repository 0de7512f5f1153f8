"""Sitemaps: `crawlq submit --sitemap URL` and `--sitemap-from-robots ORIGIN` submit exactly the URLs of a
sitemap index with a gzip sitemap (tests/linksite.py), under the SSRF guard; hostile XML is refused."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from crawlq_local.server import EmbeddedServer
from producer.sitemaps import parse_sitemap
from tests.helpers import cli_env, run_cli, workers
from tests.linksite import LinkSites, serve_sites

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sites() -> Iterator[LinkSites]:
    with serve_sites() as running:
        yield running


def _listed(sites: LinkSites) -> set[str]:
    return {sites.main.url + path for path in ("/a", "/b", "/a/1", "/base/c", "/a/1/x")}


def test_a_sitemap_index_submits_exactly_its_urls(
    sites: LinkSites, redis_server: EmbeddedServer, tmp_path: Path
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    env = cli_env(redis_server.url)
    with workers(env, 1, tmp_path):
        for batch, flags in (
            ("index", ["--sitemap", f"{sites.main.url}/sitemap_index.xml"]),
            ("robots", ["--sitemap-from-robots", sites.main.url]),
        ):
            submitted = run_cli(["submit", "--batch", batch, "--json", *flags], env)
            assert submitted.returncode == 0, submitted.stderr
            assert orjson.loads(submitted.stdout)["queued"] == 5
            assert run_cli(["wait", batch, "--timeout", "40"], env, timeout=50).returncode == 0
            records = [orjson.loads(line) for line in run_cli(["results", batch], env).stdout.splitlines()]
            assert {str(record["url"]) for record in records} == _listed(sites) and len(records) == 5


def test_a_sitemap_on_a_blocked_address_is_one_sentence(sites: LinkSites, redis_server: EmbeddedServer) -> None:
    env = cli_env(redis_server.url, allowed_networks="")  # loopback is not public: the SSRF guard refuses it
    refused = run_cli(["submit", "--sitemap", f"{sites.main.url}/sitemap_index.xml"], env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "127.0.0.1 is not a public address" in refused.stderr, refused.stderr
    missing = run_cli(["submit", "--sitemap", f"{sites.main.url}/nothing.xml"], cli_env(redis_server.url))
    assert missing.returncode == 2 and "answered HTTP 404" in missing.stderr and "Traceback" not in missing.stderr
    neither = run_cli(["submit"], cli_env(redis_server.url))
    assert neither.returncode == 2 and "give a FILE" in neither.stderr


def test_hostile_or_foreign_xml_is_refused() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<urlset><url><loc>&b;</loc></url></urlset>"
    )
    for body, reason in (
        (laughs, "not a readable XML sitemap"),
        (b"<html></html>", "not <urlset>"),
        (b"\x1f\x8bxx", "not valid gzip"),
    ):
        with pytest.raises(ValueError) as caught:
            parse_sitemap(body)
        assert reason in str(caught.value)
    kind, urls = parse_sitemap(gzip.compress(b"<urlset><url><loc> http://h/a </loc></url><url><loc/></url></urlset>"))
    assert (kind, urls) == ("urlset", ["http://h/a"])
