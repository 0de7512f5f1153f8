"""Bearer tokens (compared in constant time, never logged) and the request body cap."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crawlq_api.dashboard import ASSET_PREFIX, PAGE_PATH
from crawlq_api.settings import ApiSettings

__all__ = ["BodyLimit", "TokenCheck"]

READ_METHODS = frozenset({"GET", "HEAD"})


def _matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


class TokenCheck:
    """A FastAPI dependency: the full token may do everything, the read token only GET and HEAD.
    The dashboard's page and assets (no data in them) need no token."""

    def __init__(self, settings: ApiSettings) -> None:
        self.token = settings.token.get_secret_value() if settings.token else None
        self.read_token = settings.read_token.get_secret_value() if settings.read_token else None
        self.public_paths = frozenset(settings.public_paths)

    async def __call__(self, request: Request) -> None:
        path = request.url.path
        if path in self.public_paths or path == PAGE_PATH or path.startswith(ASSET_PREFIX):
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        full = self.token is not None and _matches(given, self.token)
        read = self.read_token is not None and _matches(given, self.read_token)
        if full or (read and request.method in READ_METHODS):
            return
        raise HTTPException(
            401, "the bearer token is not valid for this request", headers={"WWW-Authenticate": "Bearer"}
        )


class BodyLimit:
    """ASGI middleware: a request body above `max_bytes` gets 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"the request body is larger than CRAWLQ_API_MAX_BODY_BYTES (%d bytes)"}' % self.max_bytes
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
