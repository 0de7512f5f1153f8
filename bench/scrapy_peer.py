"""Scrapy as a peer, in its own interpreter: `python -m bench.scrapy_peer --urls FILE --items N`.

Settings follow peer-baselines: CONCURRENT_REQUESTS=100 and 100 per domain, LOG_LEVEL=ERROR, robots.txt
and AutoThrottle off, telnet console off; `--items` sets CONCURRENT_ITEMS (Scrapy's default is 100).
The callback only counts 200s. The timed span is the whole `CrawlerProcess.start()`. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scrapy_peer")
    parser.add_argument("--urls", type=Path, required=True)
    parser.add_argument("--items", type=int, default=100, help="CONCURRENT_ITEMS")
    args = parser.parse_args(argv)
    urls = args.urls.read_text().split()

    import scrapy
    from scrapy.crawler import CrawlerProcess

    counts = {"ok": 0, "responses": 0}

    class BenchSpider(scrapy.Spider):  # type: ignore[misc]
        name = "bench"
        start_urls = urls

        def parse(self, response: Any) -> None:
            counts["responses"] += 1
            counts["ok"] += response.status == 200

    process = CrawlerProcess(
        settings={
            "CONCURRENT_REQUESTS": 100,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 100,
            "CONCURRENT_ITEMS": args.items,
            "LOG_LEVEL": "ERROR",
            "ROBOTSTXT_OBEY": False,
            "AUTOTHROTTLE_ENABLED": False,
            "TELNETCONSOLE_ENABLED": False,
        }
    )
    process.crawl(BenchSpider)
    wall, cpu = time.perf_counter(), _cpu_s()
    process.start()
    wall, cpu = time.perf_counter() - wall, _cpu_s() - cpu
    result = {"wall_s": wall, "cpu_s": cpu, "pages": len(urls), "ok": counts["ok"], "scrapy": scrapy.__version__}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
