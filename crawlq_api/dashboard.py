"""The web dashboard: one page at `/` and its assets at `/ui/*`, served from package data.

No build step and nothing fetched from the internet: the page, its script and style are files in
`crawlq_api/static/`, with uPlot (MIT, npm `uplot`, licence in `static/uPlot.LICENSE`) vendored beside them.
The page and assets hold no data, so they are served without a token; the page asks for a token
(the read-only `CRAWLQ_API_READ_TOKEN` is enough) and sends it as a bearer header on every API call.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

__all__ = ["ASSET_PREFIX", "PAGE_PATH", "router"]

PAGE_PATH = "/"
ASSET_PREFIX = "/ui/"
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
}

router = APIRouter(tags=["dashboard"])


def _static(name: str) -> bytes:
    return (files("crawlq_api") / "static" / name).read_bytes()


@router.get(PAGE_PATH, response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The dashboard page."""
    return HTMLResponse(_static("index.html"), headers=HEADERS)


@router.get(ASSET_PREFIX + "{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    """One of the page's vendored assets."""
    if name not in ASSETS:
        raise HTTPException(404, "no such asset")
    return Response(_static(name), media_type=ASSETS[name], headers=HEADERS)
