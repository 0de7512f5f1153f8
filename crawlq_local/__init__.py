"""crawlq on one machine, for demos, tests and benchmarks: a demo target site (`target`), an embedded
Redis-protocol server (`server`) and a local cluster of worker processes (`cluster`). Like httpx's
MockTransport, it ships beside the crawler, not inside it: `crawlq`, `producer` and `workers` never import it.
It may import `crawlq` and `producer`; it starts workers as processes (`python -m crawlq_cli worker`) and never
imports `workers`."""
