"""Idempotency-Key on its own (the API tests drive it through HTTP): reserve, replay, refuse a
reuse with another body, refuse while in flight, free a failed request's key, let a request
take over a key abandoned by a crash, keep merchants apart."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import Request, Response
from sqlalchemy import select, update

from paygrid.api import idempotency
from paygrid.api.errors import ApiError
from paygrid.api.idempotency import Replay, abandon, begin, complete, request_hash
from paygrid.kernel.clock import utcnow
from paygrid.storage.database import Database
from paygrid.storage.schema import idempotency_keys

BODY = b'{"out_trade_no":"o-1"}'
FIRST = request_hash("POST", "/v1/payments", BODY)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'idem.db'}")
    database.migrate()
    yield database
    database.dispose()


def refused(db: Database, mchid: str, key: str, fingerprint: str) -> tuple[int, str, str | None]:
    with pytest.raises(ApiError) as info:
        begin(db, mchid, key, fingerprint)
    return info.value.status, info.value.code, info.value.field


def stored(db: Database) -> list[tuple[str, str, str, int | None, str | None]]:
    with db.read() as conn:
        rows = conn.execute(
            select(
                idempotency_keys.c.mchid,
                idempotency_keys.c.idem_key,
                idempotency_keys.c.request_hash,
                idempotency_keys.c.status_code,
                idempotency_keys.c.response_body,
            ).order_by(idempotency_keys.c.mchid, idempotency_keys.c.idem_key)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_request_hash_covers_method_path_and_body() -> None:
    assert hashlib.sha256(b"POST\n/v1/payments\n" + BODY).hexdigest() == FIRST
    others = {
        request_hash("GET", "/v1/payments", BODY),
        request_hash("POST", "/v1/payments/x/close", BODY),
        request_hash("POST", "/v1/payments", BODY + b" "),
        request_hash("POST", "/v1/payment", b"s\n" + BODY),  # the separator counts
    }
    assert FIRST not in others and len(others) == 4


def test_first_reserves_then_the_response_is_replayed(db: Database) -> None:
    assert begin(db, "m1", "k1", FIRST) is None
    assert stored(db) == [("m1", "k1", FIRST, None, None)]
    assert refused(db, "m1", "k1", FIRST) == (409, "IDEMPOTENCY_REQUEST_IN_PROGRESS", None)
    complete(db, "m1", "k1", 201, '{"payment_id":"pay_1"}')
    assert stored(db) == [("m1", "k1", FIRST, 201, '{"payment_id":"pay_1"}')]
    assert begin(db, "m1", "k1", FIRST) == Replay(201, '{"payment_id":"pay_1"}')
    assert begin(db, "m1", "k1", FIRST) == Replay(201, '{"payment_id":"pay_1"}')  # and again


def test_reuse_with_another_body_is_refused_in_flight_or_done(db: Database) -> None:
    other = request_hash("POST", "/v1/payments", b"{}")
    assert begin(db, "m1", "k1", FIRST) is None
    assert refused(db, "m1", "k1", other) == (409, "IDEMPOTENCY_KEY_REUSED", None)
    complete(db, "m1", "k1", 201, "{}")
    assert refused(db, "m1", "k1", other) == (409, "IDEMPOTENCY_KEY_REUSED", None)
    assert stored(db) == [("m1", "k1", FIRST, 201, "{}")]


def test_keys_belong_to_one_merchant(db: Database) -> None:
    assert begin(db, "m1", "k1", FIRST) is None
    complete(db, "m1", "k1", 201, "mine")
    other = request_hash("POST", "/v1/payments", b"{}")
    assert begin(db, "m2", "k1", other) is None  # the same key, another merchant: its own
    complete(db, "m2", "k1", 200, "theirs")
    assert begin(db, "m1", "k1", FIRST) == Replay(201, "mine")
    assert begin(db, "m2", "k1", other) == Replay(200, "theirs")
    assert begin(db, "m1", "k2", FIRST) is None  # another key of the same merchant: a new one
    complete(db, "m1", "k3", 500, "nothing")  # completing an unknown key changes nothing
    assert [row[:2] for row in stored(db)] == [("m1", "k1"), ("m1", "k2"), ("m2", "k1")]


def test_a_refused_request_frees_its_key_but_not_a_completed_one(db: Database) -> None:
    assert begin(db, "m1", "k1", FIRST) is None
    assert begin(db, "m2", "k1", FIRST) is None
    abandon(db, "m1", "k1")
    assert stored(db) == [("m2", "k1", FIRST, None, None)]  # only m1's key is gone
    other = request_hash("POST", "/v1/payments", b"{}")
    assert begin(db, "m1", "k1", other) is None  # may be used again, even with another body
    complete(db, "m1", "k1", 201, "done")
    abandon(db, "m1", "k1")  # a completed key stays
    assert begin(db, "m1", "k1", other) == Replay(201, "done")


def test_a_key_abandoned_by_a_crash_is_taken_over_after_the_lease(db: Database) -> None:
    assert begin(db, "m1", "k1", FIRST) is None
    lease = timedelta(seconds=idempotency.IN_FLIGHT_TAKEOVER_S)

    def age(by: timedelta) -> None:
        with db.transaction() as conn:
            conn.execute(update(idempotency_keys).values(created_at=utcnow() - by))

    age(lease - timedelta(seconds=2))
    assert refused(db, "m1", "k1", FIRST) == (409, "IDEMPOTENCY_REQUEST_IN_PROGRESS", None)
    age(lease + timedelta(seconds=1))
    assert begin(db, "m1", "k1", FIRST) is None  # the crashed request's key: this one's now
    other = request_hash("POST", "/v1/payments", b"{}")
    assert refused(db, "m1", "k1", other) == (409, "IDEMPOTENCY_KEY_REUSED", None)


@pytest.mark.parametrize("key", ["", "k" * (idempotency.MAX_KEY_LEN + 1)])
def test_key_length_is_bounded(db: Database, key: str) -> None:
    assert refused(db, "m1", key, FIRST) == (400, "INVALID_IDEMPOTENCY_KEY", "Idempotency-Key")
    assert stored(db) == []


def test_longest_key_is_accepted(db: Database) -> None:
    key = "k" * idempotency.MAX_KEY_LEN
    assert begin(db, "m1", key, FIRST) is None
    assert [row[1] for row in stored(db)] == [key]


# --- respond_once: the one way every POST with an Idempotency-Key answers ---------------------
def post(path: str, key: str | None) -> Request:
    headers = [] if key is None else [(b"idempotency-key", key.encode())]
    return Request({"type": "http", "method": "POST", "path": path, "headers": headers})


class Handler:
    """A POST's work: counts its runs, answers 201 with the run number, or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.runs = 0
        self.fail = fail

    async def __call__(self) -> idempotency.Outcome:
        self.runs += 1
        if self.fail:
            raise ApiError(502, "CHANNEL_ERROR", "refused")
        return 201, {"run": self.runs, "名": "支付"}


def answer(db: Database, request: Request, handler: Handler, body: bytes = BODY) -> Response:
    return asyncio.run(idempotency.respond_once(db, request, "m1", body, handler))


def test_respond_once_runs_once_per_key_and_replays_the_first_answer(db: Database) -> None:
    handler = Handler()
    first = answer(db, post("/v1/payments", "k"), handler)
    again = answer(db, post("/v1/payments", "k"), handler)
    assert handler.runs == 1
    assert (first.status_code, first.body) == (201, '{"run": 1, "名": "支付"}'.encode())
    assert "idempotent-replayed" not in first.headers
    assert (again.status_code, again.body) == (first.status_code, first.body)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert stored(db) == [("m1", "k", FIRST, 201, bytes(first.body).decode())]


def test_respond_once_without_a_key_runs_every_time_and_stores_nothing(db: Database) -> None:
    handler = Handler()
    answers = [answer(db, post("/v1/payments", None), handler) for _ in range(2)]
    assert [a.body for a in answers] == [
        b'{"run": 1, "\xe5\x90\x8d": "\xe6\x94\xaf\xe4\xbb\x98"}',
        b'{"run": 2, "\xe5\x90\x8d": "\xe6\x94\xaf\xe4\xbb\x98"}',
    ]
    assert all("idempotent-replayed" not in a.headers for a in answers)
    assert stored(db) == []


def test_respond_once_frees_the_key_of_a_failed_request(db: Database) -> None:
    with pytest.raises(ApiError):
        answer(db, post("/v1/payments", "k"), Handler(fail=True))
    assert stored(db) == []
    assert answer(db, post("/v1/payments", "k"), Handler()).status_code == 201


def test_respond_once_keys_the_request_by_its_path_and_body(db: Database) -> None:
    answer(db, post("/v1/payments", "k"), Handler())
    for request, body in (
        (post("/v1/payments/x/close", "k"), BODY),
        (post("/v1/payments", "k"), b"{}"),
    ):
        with pytest.raises(ApiError) as info:
            answer(db, request, Handler(), body)
        assert info.value.code == "IDEMPOTENCY_KEY_REUSED"
