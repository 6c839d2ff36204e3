"""The WeChat Pay sandbox's refund rules, on a real store in a temporary directory: the fee
returned pro rata, the refund window and count limit, and an older data directory."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygrid.channels.wechatpay.sandbox.faults import Faults
from paygrid.channels.wechatpay.sandbox.protocol import ApiError
from paygrid.channels.wechatpay.sandbox.refunds import (
    MAX_REFUNDS_PER_TRADE,
    REFUND_WINDOW_SECONDS,
    RefundDesk,
    fee_returned,
)
from paygrid.channels.wechatpay.sandbox.settings import SandboxSettings
from paygrid.channels.wechatpay.sandbox.store import DB_FILE, Order, Refund, Store

MCHID = "1900000109"


@given(
    total=st.integers(1, 10**9),
    rate_ppm=st.integers(0, 100_000),
    cuts=st.lists(st.integers(1, 10**6), min_size=1, max_size=60),
)
def test_fee_returned_never_exceeds_the_fee_and_a_full_refund_returns_all(
    total: int, rate_ppm: int, cuts: list[int]
) -> None:
    fee = (total * rate_ppm + 500_000) // 1_000_000
    refunded = returned = 0
    for cut in cuts:
        refund = min(cut, total - refunded)
        if refund == 0:
            break
        back = fee_returned(fee, total, refunded, returned, refund)
        assert back >= 0
        refunded, returned = refunded + refund, returned + back
        assert returned <= fee
    last = total - refunded
    if last:
        returned += fee_returned(fee, total, refunded, returned, last)
    assert returned == fee


def test_fee_returned_is_pro_rata_half_up() -> None:
    assert fee_returned(2, 1_000, 0, 0, 300) == 1  # 0.6 fen -> 1
    assert fee_returned(2, 1_000, 0, 0, 200) == 0  # 0.4 fen -> 0
    assert fee_returned(2, 1_000, 0, 0, 250) == 1  # 0.5 fen -> 1 (half up)
    assert fee_returned(200, 100_001, 0, 0, 40_000) == 80


def paid_order(store: Store, ref: str, total: int, paid_at: float) -> Order:
    order = Order(
        mchid=MCHID,
        out_trade_no=ref,
        appid="wx0",
        trade_type="NATIVE",
        description="d",
        notify_url="http://127.0.0.1:9/n",
        total=total,
        currency="CNY",
        attach="",
        time_expire=None,
        expire_at=None,
        request_digest="x",
        token=f"t{ref}",
        prepay_id=f"p{ref}",
        payer_openid="o",
        trade_state="SUCCESS",
        transaction_id=f"4200{ref}",
        success_at=paid_at,
        bank_type="OTHERS",
        created_at=paid_at,
        updated_at=paid_at,
    )
    store.insert_order(order)
    return order


def desk(store: Store) -> tuple[RefundDesk, list[Refund]]:
    notified: list[Refund] = []
    refunds = RefundDesk(store, Faults(), SandboxSettings, lambda r, _: notified.append(r))
    return refunds, notified


def body(ref: str, out_refund_no: str, refund: int, total: int) -> bytes:
    amount = {"refund": refund, "total": total, "currency": "CNY"}
    return json.dumps(
        {
            "out_trade_no": ref,
            "out_refund_no": out_refund_no,
            "amount": amount,
            "notify_url": "http://127.0.0.1:9/r",
        }
    ).encode()


def test_a_payment_older_than_a_year_is_not_refundable(tmp_path: Path) -> None:
    store = Store(tmp_path)
    refunds, _ = desk(store)
    paid_order(store, "OLD0001", 100, time.time() - REFUND_WINDOW_SECONDS - 60)
    with pytest.raises(ApiError) as info:
        refunds.create(MCHID, body("OLD0001", "RF1", 1, 100))
    assert (info.value.status, info.value.code) == (400, "INVALID_REQUEST")
    paid_order(store, "NEW0001", 100, time.time() - REFUND_WINDOW_SECONDS + 60)
    assert refunds.create(MCHID, body("NEW0001", "RF2", 1, 100))["status"] == "PROCESSING"


def test_at_most_fifty_refunds_per_payment_and_they_end_with_a_notification(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    refunds, notified = desk(store)
    paid_order(store, "MANY001", 1_000, time.time())
    for n in range(MAX_REFUNDS_PER_TRADE):
        refunds.create(MCHID, body("MANY001", f"RF{n}", 1, 1_000))
    with pytest.raises(ApiError) as info:
        refunds.create(MCHID, body("MANY001", "RF-ONE-MORE", 1, 1_000))
    assert (info.value.code, info.value.message) == (
        "INVALID_REQUEST",
        "该订单的退款次数已达上限（50 次）",
    )
    assert refunds.create(MCHID, body("MANY001", "RF7", 1, 1_000))["out_refund_no"] == "RF7"
    assert store.get_order(MCHID, "MANY001").trade_state == "REFUND"  # type: ignore[union-attr]
    assert refunds.complete_due(time.time() + 2) == MAX_REFUNDS_PER_TRADE
    assert len(notified) == MAX_REFUNDS_PER_TRADE
    assert {r.status for r in notified} == {"SUCCESS"}
    assert refunds.complete_due(time.time() + 2) == 0  # ended once


def test_an_older_data_directory_gains_the_new_columns(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute(
        "CREATE TABLE notifications (id INTEGER PRIMARY KEY AUTOINCREMENT, notify_id TEXT NOT NULL,"
        " mchid TEXT NOT NULL, out_trade_no TEXT NOT NULL, url TEXT NOT NULL, body BLOB NOT NULL,"
        " probe INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,"
        " next_at REAL NOT NULL, created_at REAL NOT NULL, last_status INTEGER, last_error TEXT)"
    )
    db.execute(
        "INSERT INTO notifications (notify_id, mchid, out_trade_no, url, body, probe, state,"
        " attempts, next_at, created_at) VALUES ('n1', ?, 'PG1', 'http://x/', x'7b7d', 0,"
        " 'DELIVERED', 1, 0, 0)",
        (MCHID,),
    )
    db.commit()
    db.close()
    store = Store(tmp_path)
    [old] = store.list_notifications("PG1", 10)
    assert (old.notify_id, old.out_refund_no) == ("n1", None)
    assert store.list_notifications(None, 10, out_refund_no="RF1") == []
