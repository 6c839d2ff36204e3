"""Idempotency-Key (DESIGN.md): same key + same body -> the original response; same key +
another body -> 409 IDEMPOTENCY_KEY_REUSED. Only completed successes are kept: a refused
request leaves nothing behind and may be sent again. Every POST that takes the header answers
through :func:`respond_once`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import Request, Response
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from paygrid.api.errors import ApiError
from paygrid.api.schemas import has_control_characters
from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database
from paygrid.storage.schema import idempotency_keys

MAX_KEY_LEN = 255
IN_FLIGHT_TAKEOVER_S = 15  # a first request that crashed mid-way frees its key after this
# (longer than any request may take: channel calls time out after 5 s)


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: str


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + body).hexdigest()


def begin(db: Database, mchid: str, key: str, fingerprint: str) -> Replay | None:
    """Reserve the key, or return the stored response of the first request."""
    if not key or len(key) > MAX_KEY_LEN or has_control_characters(key):
        raise ApiError(
            400,
            "INVALID_IDEMPOTENCY_KEY",
            f"Idempotency-Key must be 1..{MAX_KEY_LEN} characters, no control characters",
            "Idempotency-Key",
        )
    now = utcnow()
    with db.transaction() as conn:
        row = conn.execute(
            select(idempotency_keys).where(
                idempotency_keys.c.mchid == mchid, idempotency_keys.c.idem_key == key
            )
        ).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(idempotency_keys).values(
                            mchid=mchid, idem_key=key, request_hash=fingerprint, created_at=now
                        )
                    )
            except IntegrityError:
                raise ApiError(
                    409,
                    "IDEMPOTENCY_REQUEST_IN_PROGRESS",
                    "a request with this Idempotency-Key is in progress",
                ) from None
            return None
    if row.request_hash != fingerprint:
        raise ApiError(
            409, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with a different request"
        )
    if row.status_code is not None:
        return Replay(row.status_code, row.response_body or "")
    if now - row.created_at < timedelta(seconds=IN_FLIGHT_TAKEOVER_S):
        raise ApiError(
            409,
            "IDEMPOTENCY_REQUEST_IN_PROGRESS",
            "a request with this Idempotency-Key is in progress",
        )
    return None  # abandoned by a crashed request: this one takes over


def complete(db: Database, mchid: str, key: str, status: int, body: str) -> None:
    with db.transaction() as conn:
        conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.mchid == mchid, idempotency_keys.c.idem_key == key)
            .values(status_code=status, response_body=body)
        )


def abandon(db: Database, mchid: str, key: str) -> None:
    with db.transaction() as conn:
        conn.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.mchid == mchid,
                idempotency_keys.c.idem_key == key,
                idempotency_keys.c.status_code.is_(None),
            )
        )


Outcome = tuple[int, Mapping[str, Any]]
"""What a POST did: its HTTP status and the resource it answers with."""


async def respond_once(
    db: Database, request: Request, mchid: str, body: bytes, run: Callable[[], Awaitable[Outcome]]
) -> Response:
    """Answer a POST whose checks passed: without an Idempotency-Key, ``run`` it; with one, the
    stored response of the first request with this key and body (header Idempotent-Replayed),
    else ``run`` it and store the answer, or free the key when it fails."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, resource = await run()
        return _json_response(status, json.dumps(resource, ensure_ascii=False))
    fingerprint = request_hash("POST", request.url.path, body)
    replay = await run_in_threadpool(begin, db, mchid, key, fingerprint)
    if replay is not None:
        return _json_response(replay.status, replay.body, {"Idempotent-Replayed": "true"})
    try:
        status, resource = await run()
    except BaseException:
        await run_in_threadpool(abandon, db, mchid, key)
        raise
    text = json.dumps(resource, ensure_ascii=False)
    await run_in_threadpool(complete, db, mchid, key, status, text)
    return _json_response(status, text)


def _json_response(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(text, status_code=status, media_type="application/json", headers=headers)
