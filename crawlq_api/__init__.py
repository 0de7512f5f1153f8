"""crawlq's HTTP API (`crawlq serve`): FastAPI over the producer's Client, with deadlines, partial answers and metrics.

It imports `producer` and `crawlq`, never `workers` (tests/test_layering.py). Build the app with
`crawlq_api.app.create_app(Settings(), ApiSettings())`.
"""

from __future__ import annotations

__all__: list[str] = []
