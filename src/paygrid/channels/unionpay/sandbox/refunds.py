"""Refunds (退货, txnType 04) and consume-revokes (消费撤销, 31) on a paid consume, named by
``origQryId``.

Each is its own transaction (its own orderId + txnTime); the same again (same amount, same
consume) answers the same transaction, another body under them is 12 (重复交易). A refund
may be part of what is left, within the refund window; a revoke is the whole consume, on the
day it was paid, before any refund. Both are done when answered and notified to their
``backUrl``. The fee goes back pro rata, rounded half up (as paygrid's ledger books it), the
last one returning exactly what remains.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from paygrid.channels.unionpay.sandbox import protocol as p
from paygrid.channels.unionpay.sandbox.store import Back, Consume

if TYPE_CHECKING:
    from paygrid.channels.unionpay.sandbox.service import UnionPaySandbox


def back(sandbox: UnionPaySandbox, form: Mapping[str, str], now: float) -> dict[str, str]:
    txn_type = form["txnType"]
    if form.get("txnSubType") != "00" or form.get("bizType") != p.GATEWAY_BIZ:
        raise p.AcpError("32", "txnSubType/bizType")
    order_id = p.required(form, "orderId", p.ORDER_ID)
    txn_time = p.txn_time(form)
    amount = p.amount(form)
    orig = p.required(form, "origQryId")
    back_url = p.url_field(form, "backUrl", needed=True)
    digest = hashlib.sha256(json.dumps([txn_type, amount, orig]).encode()).hexdigest()
    store, mer_id = sandbox.store, sandbox.creds.mer_id
    with store.transaction():
        existing = store.get_back(mer_id, order_id, txn_time)
        if existing is not None:
            if existing.request_digest != digest:
                raise p.AcpError("12")
            return {**p.answer(form, "00"), "queryId": existing.query_id, "origQryId": orig}
        if store.get_consume(mer_id, order_id, txn_time) is not None:
            raise p.AcpError("12")
        consume = store.consume_by("query_id", orig)
        if consume is None or consume.mer_id != mer_id:
            raise p.AcpError("35", "origQryId")
        _check(sandbox, consume, txn_type, amount, now)
        refunded = consume.refunded + amount
        made = Back(
            mer_id=mer_id,
            order_id=order_id,
            txn_time=txn_time,
            txn_type=txn_type,
            orig_query_id=orig,
            amount=amount,
            back_url=back_url,
            request_digest=digest,
            query_id=p.new_query_id(now),
            status="SUCCESS",
            trace_no=p.new_trace_no(),
            fee_returned=_fee_share(consume, refunded) - _fee_share(consume, consume.refunded),
            done_at=now,
        )
        store.insert_back(made)
        store.update_consume(consume.with_changes(refunded=refunded, updated_at=now))
        sandbox.queue_notify(back_url, p.back_notification(made), now)
    sandbox.sender.wake()
    return {**p.answer(form, "00"), "queryId": made.query_id, "origQryId": orig}


def _check(
    sandbox: UnionPaySandbox, consume: Consume, txn_type: str, amount: int, now: float
) -> None:
    if consume.status != "PAID" or consume.paid_at is None:
        raise p.AcpError("35", "not paid")
    if amount > consume.amount - consume.refunded:
        raise p.AcpError("36", "txnAmt exceeds what is left")
    if txn_type == p.REVOKE:
        same_day = p.beijing(now, "%Y%m%d") == p.beijing(consume.paid_at, "%Y%m%d")
        if consume.refunded or amount != consume.amount:
            raise p.AcpError("36", "a revoke is the whole consume")
        if not same_day:
            raise p.AcpError("39", "a revoke is on the day of the consume")
    elif now > consume.paid_at + sandbox.settings.refund_window_seconds:
        raise p.AcpError("39", "past the refund window")


def _fee_share(consume: Consume, refunded: int) -> int:
    """The fee given back once ``refunded`` fen are, pro rata, half up: all of it at the end."""
    return (2 * consume.fee * refunded + consume.amount) // (2 * consume.amount)
