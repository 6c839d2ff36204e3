"""The bank sandbox (银行, 127.0.0.1:8105): the institution's reserve account (备付金账户).

Channels settle into it: a channel sandbox credits the account with a merchant's net of a
business date (``POST /sandbox/credit``, sandbox-only: in real life this is the channel's bank
transfer). The institution reads the account's statement for a date in MT940, as from a
bank's host-to-host service: ``GET /v1/accounts/{account}/statements/{date}`` with
``Authorization: Bearer <api_key>``. A date's statement is out once the day has ended in
Beijing, or once ``POST /sandbox/close-day`` ended it early; before that the answer is 404
``STATEMENT_NOT_READY`` (fetch again later).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from fastapi import FastAPI, Request, Response

from paygrid.channels.bank.credentials import load_or_create_credentials
from paygrid.channels.bank.sandbox.store import Credit, Store
from paygrid.channels.bank.statement import (
    MAX_DETAILS,
    MAX_REFERENCE,
    Entry,
    Statement,
    details,
    write_mt940,
)
from paygrid.kernel.money import MAX_MINOR_UNITS

DEFAULT_PORT = 8105
BEIJING = ZoneInfo("Asia/Shanghai")
FIRST_DAY = date(2000, 1, 1)  # statement numbers count days from here
MAX_BODY_BYTES = 16_384
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json(status: int, payload: object) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type="application/json")


def _day(text: object) -> date:
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise Refused(400, "INVALID_DATE", "date must be YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Refused(400, "INVALID_DATE", f"no such date: {text}") from None


class BankSandbox:
    def __init__(self, data_dir: Path) -> None:
        self.creds = load_or_create_credentials(data_dir)
        self.store = Store(data_dir)

    def credit(self, body: dict[str, Any]) -> tuple[int, dict[str, object]]:
        """Book a transfer into the reserve account, once per ``reference``."""
        if body.get("account") != self.creds["account"]:
            raise Refused(404, "NO_SUCH_ACCOUNT", "no such account at this bank")
        reference, amount, payer, about = _checked_transfer(body, self.creds["currency"])
        currency = self.creds["currency"]
        value_date = _day(body.get("value_date")).isoformat()
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        booked, new = self.store.credit(
            self.creds["account"],
            reference,
            amount,
            currency,
            value_date,
            payer,
            about,
            digest,
            time.time(),
        )
        if not new and not hmac.compare_digest(booked.digest, digest):
            raise Refused(
                409, "REFERENCE_REUSED", "this reference was booked with another transfer"
            )
        return (201 if new else 200), {
            "bank_reference": booked.bank_reference,
            "value_date": value_date,
        }

    def statement(self, account: str, day_text: str, authorization: str | None) -> str:
        expected = f"Bearer {self.creds['api_key']}"
        if authorization is None or not hmac.compare_digest(authorization, expected):
            raise Refused(401, "UNAUTHORIZED", "Authorization: Bearer <api_key> is required")
        if account != self.creds["account"]:
            raise Refused(404, "NO_SUCH_ACCOUNT", "no such account at this bank")
        day = _day(day_text)
        if day < FIRST_DAY:
            raise Refused(400, "INVALID_DATE", f"no statements before {FIRST_DAY}")
        today = datetime.now(BEIJING).date()
        if not (day < today or self.store.closed(day.isoformat())):
            raise Refused(
                404, "STATEMENT_NOT_READY", f"the statement of {day} is out after the day ends"
            )
        opening = self.store.balance_before(account, day.isoformat())
        credits = self.store.credits_on(account, day.isoformat())
        entries = tuple(_entry(c) for c in credits)
        closing = opening + sum(e.amount for e in entries)
        number = (day - FIRST_DAY).days + 1
        return write_mt940(
            Statement(account, day, number, self.creds["currency"], opening, closing, entries)
        )


def _checked_transfer(body: dict[str, Any], currency: str) -> tuple[str, int, str, str]:
    """(reference, amount, payer, details) of a transfer, or a 400 naming the field."""
    reference, amount = body.get("reference"), body.get("amount")
    payer, about = body.get("payer_name"), body.get("details", "")
    if not isinstance(reference, str) or not 0 < len(reference) <= MAX_REFERENCE:
        raise Refused(400, "INVALID_REFERENCE", f"reference: 1 to {MAX_REFERENCE} characters")
    if not (reference.isascii() and reference.isalnum()):
        raise Refused(400, "INVALID_REFERENCE", "reference: ASCII letters and digits")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_MINOR_UNITS:
        raise Refused(400, "INVALID_AMOUNT", "amount: a positive integer of fen")
    if body.get("currency") != currency:
        raise Refused(400, "INVALID_CURRENCY", f"the account is in {currency}")
    if not isinstance(payer, str) or not payer or not isinstance(about, str):
        raise Refused(400, "INVALID_PAYER", "payer_name and details are text")
    if len(details(reference, payer, about)) > MAX_DETAILS or "\n" in about + payer:
        raise Refused(400, "INVALID_DETAILS", f"details too long for :86: ({MAX_DETAILS})")
    return reference, amount, payer, about


def _entry(credit: Credit) -> Entry:
    about = details(credit.reference, credit.payer_name, credit.details)
    return Entry(
        date.fromisoformat(credit.value_date),
        credit.amount,
        credit.reference,
        credit.bank_reference,
        about,
    )


def create_app(data_dir: Path) -> FastAPI:
    bank = BankSandbox(data_dir)
    app = FastAPI(title="paygrid bank sandbox", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return _json(exc.status, {"code": exc.code, "message": exc.message})

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise Refused(413, "TOO_LARGE", f"at most {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            raise Refused(400, "INVALID_JSON", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "INVALID_JSON", "the body is a JSON object")
        return body

    @app.get("/sandbox/health")
    async def health() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/sandbox/credentials")
    async def credentials() -> Response:
        return _json(200, bank.creds)

    @app.post("/sandbox/credit")
    async def credit(request: Request) -> Response:
        status, payload = bank.credit(await body_of(request))
        return _json(status, payload)

    @app.post("/sandbox/close-day")
    async def close_day(request: Request) -> Response:
        day = _day((await body_of(request)).get("date"))
        bank.store.close_day(day.isoformat(), time.time())
        return _json(200, {"date": day.isoformat(), "closed": True})

    @app.get("/v1/accounts/{account}/statements/{day}")
    async def statement(account: str, day: str, request: Request) -> Response:
        text = bank.statement(account, day, request.headers.get("authorization"))
        return Response(text.encode(), media_type="text/plain; charset=utf-8")

    return app


def run(data_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve the bank; print one ready line once it accepts connections (port 0: any free)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    base_url = f"http://{host}:{sock.getsockname()[1]}"
    config = uvicorn.Config(create_app(data_dir), log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            print(f"bank sandbox listening on {base_url}", flush=True)
        await task

    asyncio.run(serve())
