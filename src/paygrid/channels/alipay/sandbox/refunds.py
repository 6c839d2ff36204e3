"""Refunds (退款): ``alipay.trade.refund`` and ``alipay.trade.fastpay.refund.query``.

Partial and repeated refunds up to what was paid, each named by ``out_request_no`` (退款请求号;
without one it is the ``out_trade_no`` and the refund must be the whole amount). The same
``out_request_no`` with the same amount answers the refund again with ``fund_change`` N; with
another amount it is refused. The trade is TRADE_CLOSED once fully refunded. The service fee
goes back pro rata, rounded down, and the last refund returns exactly what remains of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paygrid.channels.alipay.bill import yuan_text
from paygrid.channels.alipay.sandbox import protocol as p
from paygrid.channels.alipay.sandbox.store import Refund, Trade

if TYPE_CHECKING:
    from paygrid.channels.alipay.sandbox.service import AlipaySandbox

_NO_MONEY = {"refund_fee": "0.00", "send_back_fee": "0.00"}


def refund(
    sandbox: AlipaySandbox, app_id: str, biz: Mapping[str, Any], now: float
) -> dict[str, Any]:
    amount = p.amount_field(biz, "refund_amount")
    out_request_no = p.text_field(biz, "out_request_no", 64, p.OUT_REQUEST_NO)
    reason = p.text_field(biz, "refund_reason", 256) or ""
    store = sandbox.store
    with store.transaction():
        trade = sandbox.trade_of(app_id, biz, now)
        request_no = out_request_no or trade.out_trade_no
        existing = store.get_refund(app_id, trade.out_trade_no, request_no)
        if existing is not None:
            if existing.amount != amount:
                raise _refused(trade, "ACQ.DISCORDANT_REPEAT_REQUEST", "不一致的请求")
            return _node(trade, existing, fund_change="N")
        _check_refundable(trade, amount, whole_only=out_request_no is None)
        refunded = trade.refunded + amount
        made = Refund(
            app_id=app_id,
            out_trade_no=trade.out_trade_no,
            out_request_no=request_no,
            trade_no=trade.trade_no,
            amount=amount,
            reason=reason,
            fee_returned=_fee_share(trade, refunded) - _fee_share(trade, trade.refunded),
            refunded_at=now,
        )
        closing = refunded == trade.total
        trade = trade.with_changes(
            refunded=refunded,
            status="TRADE_CLOSED" if closing else trade.status,
            closed_at=now if closing else trade.closed_at,
            updated_at=now,
        )
        store.insert_refund(made)
        store.update_trade(trade)
        sandbox.queue_notify(trade, now, made)
    sandbox.sender.wake()
    return _node(trade, made, fund_change="Y")


def _check_refundable(trade: Trade, amount: int, *, whole_only: bool) -> None:
    if trade.status == "TRADE_CLOSED":
        raise _refused(trade, "ACQ.TRADE_HAS_CLOSED", "交易已经关闭")
    if trade.status == "TRADE_FINISHED":
        raise _refused(trade, "ACQ.TRADE_HAS_FINISHED", "交易已完结")
    if trade.status != "TRADE_SUCCESS":
        raise _refused(trade, "ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
    if whole_only and amount != trade.total:
        raise _refused(trade, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "撤销或退款金额与订单金额不一致")
    if amount > trade.total - trade.refunded:
        raise _refused(trade, "ACQ.REASON_TRADE_REFUND_FEE_ERR", "退款金额超限")


def _refused(trade: Trade, sub_code: str, sub_msg: str) -> p.GatewayError:
    return p.business(sub_code, sub_msg, out_trade_no=trade.out_trade_no, **_NO_MONEY)


def _fee_share(trade: Trade, refunded: int) -> int:
    """The service fee given back once ``refunded`` fen are refunded, pro rata and rounded half
    up (as paygrid's ledger books it; flooring left a fen in pending clearing on refund
    days): all of it at the end."""
    return (2 * trade.fee * refunded + trade.total) // (2 * trade.total)


def _node(trade: Trade, made: Refund, *, fund_change: str) -> dict[str, Any]:
    return {
        "code": "10000",
        "msg": "Success",
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "buyer_logon_id": trade.buyer_logon_id,
        "buyer_user_id": trade.buyer_id,
        "fund_change": fund_change,
        "refund_fee": yuan_text(trade.refunded),  # all refunded so far on this trade
        "send_back_fee": yuan_text(made.amount),
        "gmt_refund_pay": p.beijing(made.refunded_at),
    }


def refund_query(
    sandbox: AlipaySandbox, app_id: str, biz: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """A refund by ``out_request_no``; without ``refund_status`` when there is none, as Alipay
    answers. ``gmt_refund_pay`` only when ``query_options`` asks for it."""
    out_request_no = p.required(biz, "out_request_no", 64)
    options = biz.get("query_options")
    with sandbox.store.transaction():
        trade = sandbox.trade_of(app_id, biz, now)
        made = sandbox.store.get_refund(app_id, trade.out_trade_no, out_request_no)
    node: dict[str, Any] = {
        "code": "10000",
        "msg": "Success",
        "trade_no": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "out_request_no": out_request_no,
    }
    if made is None:
        return node
    node.update(
        total_amount=yuan_text(trade.total),
        refund_amount=yuan_text(made.amount),
        refund_status="REFUND_SUCCESS",
    )
    if made.reason:
        node["refund_reason"] = made.reason
    if isinstance(options, list) and "gmt_refund_pay" in options:
        node["gmt_refund_pay"] = p.beijing(made.refunded_at)
    return node
