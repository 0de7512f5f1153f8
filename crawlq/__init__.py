"""crawlq: a distributed, polite, exactly-once URL crawler on Redis and arq (shared core)."""

__version__ = "0.1.0"
