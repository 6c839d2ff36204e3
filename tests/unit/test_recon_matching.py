"""The classify-join (DuckDB) on small tables: every outcome of the payment and refund flows."""

from __future__ import annotations

from datetime import date, datetime

import duckdb

from paygrid.recon.bill_format import NORMAL_COLUMNS
from paygrid.recon.matching import OUR_PAYMENTS, OUR_REFUNDS, classify

DAY = date(2026, 11, 30)
OTHER = date(2026, 11, 29)
AT = datetime(2026, 11, 30, 4, 0)


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE bill ({', '.join(f'{n} {t}' for n, t in NORMAL_COLUMNS)})")
    con.execute(OUR_PAYMENTS)
    con.execute(OUR_REFUNDS)
    return con


def _bill(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    ref: str,
    amount: int,
    fee: int,
    refund_ref: str | None = None,
    status: str = "SUCCESS",
) -> None:
    con.execute(
        "INSERT INTO bill VALUES (?, ?, ?, ?, ?, ?, ?, 'CNY', ?, 'm')",
        [kind, AT, "wx" + ref, ref, refund_ref, amount, fee, status],
    )


def _ours(
    con: duckdb.DuckDBPyConnection,
    ref: str,
    amount: int,
    status: str = "SUCCESS",
    on: date = DAY,
    repaired: bool = False,
) -> None:
    con.execute(
        "INSERT INTO our_payments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [ref, "pay_" + ref, "out_" + ref, amount, status, on, AT, repaired],
    )


def test_every_payment_outcome() -> None:
    con = _con()
    _ours(con, "matched", 10_000)
    _bill(con, "PAYMENT", "matched", 10_000, 20)
    _ours(con, "amount", 10_000)
    _bill(con, "PAYMENT", "amount", 10_001, 20)
    _ours(con, "fee", 10_000)
    _bill(con, "PAYMENT", "fee", 10_000, 21)  # 0.20% of 100.00 is 0.20, not 0.21
    _ours(con, "ours_only", 500)
    _bill(con, "PAYMENT", "theirs_only", 700, 1)
    _ours(con, "paying", 900, status="PAYING")
    _bill(con, "PAYMENT", "paying", 900, 2)
    _ours(con, "yesterday", 300, on=OTHER)
    _bill(con, "PAYMENT", "yesterday", 300, 1)
    _ours(con, "closed_not_in_bill", 100, status="CLOSED")  # not a difference: no money moved
    _ours(con, "repaired", 800, repaired=True)  # an earlier run repaired it: reported again
    _bill(con, "PAYMENT", "repaired", 800, 2)
    classify(con, DAY.isoformat(), 2000)
    got = dict(con.execute("SELECT ref, outcome FROM pay_flow").fetchall())
    assert got == {
        "matched": "MATCHED",
        "amount": "AMOUNT_MISMATCH",
        "fee": "FEE_MISMATCH",
        "ours_only": "PAYGRID_ONLY",
        "theirs_only": "CHANNEL_ONLY",
        "paying": "STATUS_REPAIRED",
        "repaired": "STATUS_REPAIRED",
        "yesterday": "CROSS_DAY",
    }


def test_every_refund_outcome() -> None:
    con = _con()
    rows = [
        ("r_ok", 100, "SUCCESS"),
        ("r_amount", 100, "SUCCESS"),
        ("r_processing", 100, "PROCESSING"),
        ("r_ours", 100, "SUCCESS"),
        ("r_failed", 100, "FAILED"),  # refused by the channel: not in its bill, no difference
        ("r_repaired", 100, "SUCCESS"),  # repaired by an earlier run: reported again
    ]
    for ref, amount, status in rows:
        con.execute(
            "INSERT INTO our_refunds VALUES (?, ?, ?, 'pay_1', 'out_1', ?, ?, 'p1', ?)",
            [ref, "rf_" + ref, "orf_" + ref, amount, status, ref == "r_repaired"],
        )
    _bill(con, "REFUND", "p1", 100, -1, refund_ref="r_ok")
    _bill(con, "REFUND", "p1", 99, -1, refund_ref="r_amount")
    _bill(con, "REFUND", "p1", 100, -1, refund_ref="r_processing")
    _bill(con, "REFUND", "p1", 100, -1, refund_ref="r_theirs")
    _bill(con, "REFUND", "p1", 100, -1, refund_ref="r_repaired")
    classify(con, DAY.isoformat(), 2000)
    got = dict(con.execute("SELECT ref, outcome FROM refund_flow").fetchall())
    assert got == {
        "r_ok": "MATCHED",
        "r_amount": "AMOUNT_MISMATCH",
        "r_processing": "STATUS_REPAIRED",
        "r_repaired": "STATUS_REPAIRED",
        "r_ours": "PAYGRID_ONLY",
        "r_theirs": "CHANNEL_ONLY",
    }
