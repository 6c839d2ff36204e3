"""What the reconciliation tests share: paid payments of a business date, and vouchers written
straight into the books (as only a bug or a person could)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from tests.integration.test_payment_flow import order, pay, wait_status
from tests.support import MerchantReceiver, RunningPlatform

BEIJING = ZoneInfo("Asia/Shanghai")
Order = Callable[[MerchantReceiver], dict[str, Any]]
Pay = Callable[[RunningPlatform, str], None]


def business_day(rfc3339: str) -> date:
    """The business date (Beijing) of an instant as the API gives it."""
    return datetime.fromisoformat(rfc3339).astimezone(BEIJING).date()


def paid(
    running: RunningPlatform,
    merchant: MerchantReceiver,
    n: int = 1,
    body: Order = order,
    payer: Pay = pay,
) -> list[dict[str, Any]]:
    """``n`` payments created, paid at the channel's sandbox and SUCCESS in paygrid."""
    client = running.client()
    done = []
    for _ in range(n):
        payment = client.create_payment(body(merchant)).json()
        payer(running, payment["code_url"])
        done.append(wait_status(client, payment["payment_id"], "SUCCESS"))
    return done


def write_voucher(
    conn: Connection,
    voucher_id: str,
    kind: str,
    ref: str,
    day: date,
    entries: list[tuple[str, str, int]],
) -> None:
    """A voucher with its entries (account, D|C, amount), straight into the books."""
    conn.execute(
        text(
            "INSERT INTO ledger_vouchers (voucher_id, kind, business_ref, business_date, memo,"
            " created_at) VALUES (:v, :k, :r, :d, 'written by a test', :now)"
        ),
        {"v": voucher_id, "k": kind, "r": ref, "d": str(day), "now": datetime.now(BEIJING)},
    )
    for account, side, amount in entries:
        conn.execute(
            text(
                "INSERT INTO ledger_entries (voucher_id, account_code, direction, amount,"
                " currency) VALUES (:v, :a, :s, :n, 'CNY')"
            ),
            {"v": voucher_id, "a": account, "s": side, "n": amount},
        )
