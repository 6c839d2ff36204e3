"""The request id a piece of work descends from, carried through events to other processes so
their log lines can be joined (a merchant's request -> the ledger's posting -> the notice)."""

from __future__ import annotations

import contextvars

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
