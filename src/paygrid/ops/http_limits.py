"""Request body limits for every HTTP entry point, enforced while the body comes in.

:class:`BodyLimit` is a pure ASGI middleware: a declared ``Content-Length`` over the limit is
refused before a byte of the body is read, and a body without one (chunked) is counted as it
streams in, the request aborted at the limit. Either way the answer is 413 with a JSON body and
``Connection: close``, so the server never holds more than about one limit's worth of a body,
whatever the client sends.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 64 * 1024

Refusal = Callable[[Scope, int], bytes]  # the 413 body for a request, given the limit


class BodyTooLarge(Exception):
    """Raised from ``receive`` once the body passes the limit; :class:`BodyLimit` answers 413."""


def error_body_refusal(scope: Scope, limit: int) -> bytes:
    """The error body of docs/merchant-api.md: ``{code, message, request_id}``, with the
    request id the app gave the request when it has one."""
    state = scope.get("state") or {}
    request_id = state.get("request_id") or "req_" + secrets.token_hex(10)
    body = {
        "code": "BODY_TOO_LARGE",
        "message": f"request body exceeds {limit} bytes",
        "request_id": request_id,
    }
    return json.dumps(body).encode()


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


class BodyLimit:
    """Bound request bodies to ``max_bytes`` while reading them (413 beyond)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        refusal: Refusal = error_body_refusal,
    ) -> None:
        assert max_bytes > 0
        self.app = app
        self.max_bytes = max_bytes
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app answered its own way after the limit (e.g. a 400): ours wins
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # answered below, or too late to answer
            await self.app(scope, counted_receive, guarded_send)
        if exceeded and not started:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = self.refusal(scope, self.max_bytes)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # do not read (or wait for) the rest of the body
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
