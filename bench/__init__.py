"""crawlq's benchmark suite: `python -m bench --smoke` (CI, seconds) or `python -m bench --full` (by hand).

It starts its own target site (`python -m crawlq_local.target` in a separate process), its own Redis-protocol
server (`crawlq_local.server.EmbeddedServer`) and crawlq workers (`crawlq_local.cluster.LocalCluster`), compares
crawlq with bare aiohttp, requests, Scrapy and plain arq on the same target in the same run, and stops
everything it started. Results go to `--out` (default `bench/out/`): `results.json` and `chart.png`.
"""
