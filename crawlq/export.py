"""The exported form of results: the column order of CSV and the CSV cell rule, shared by the CLI and the API."""

from __future__ import annotations

from typing import Any

from crawlq.models import CONTENT_FIELDS

__all__ = ["RESULT_FIELDS", "csv_row"]

#: every exported field of a result, in column order
RESULT_FIELDS = [
    *["url", "ok", "status", "latency_ms", "attempts", "bytes", "error", "message", "final_url", "fetched_at"],
    "unchanged",
    *CONTENT_FIELDS,
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  #: a spreadsheet reads a cell starting so as a formula


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with every text cell a spreadsheet shows as text: titles and snippets are the web's words, and
    one that starts like a formula (`=HYPERLINK(...)`) gets a leading apostrophe (OWASP's CSV injection advice)."""
    return {name: _cell(value) for name, value in record.items()}


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
