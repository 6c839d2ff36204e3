"""Refunds in the sandbox (退款): accepted as PROCESSING, ended asynchronously.

A refund is accepted (or refused with WeChat's documented error), stays PROCESSING for the
``refund_delay_ms`` setting, then ends SUCCESS, or ABNORMAL / CLOSED at the fault rates; its
notification then goes to the refund's ``notify_url`` like a payment callback (same retries and
callback faults). A repeated ``out_refund_no`` answers the same refund; the trade's state becomes
REFUND (转入退款) with its first refund. A CLOSED refund gives its amount back to what remains
refundable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from paygrid.channels.wechatpay.sandbox.faults import Faults
from paygrid.channels.wechatpay.sandbox.protocol import PAID, ApiError, json_object
from paygrid.channels.wechatpay.sandbox.refund_wire import (
    RefundFields,
    new_refund_id,
    refund_json,
    refund_mismatch,
    same_request,
    validate_refund,
)
from paygrid.channels.wechatpay.sandbox.settings import SandboxSettings
from paygrid.channels.wechatpay.sandbox.store import Order, Refund, Store
from paygrid.kernel.money import rate_fee

MAX_REFUNDS_PER_TRADE = 50  # 每个支付订单的部分退款次数不能超过50次
REFUND_WINDOW_SECONDS = 365 * 86_400  # 交易时间超过一年的订单无法提交退款
COMPLETE_BATCH = 100  # refunds ended per pass
POLL_SECONDS = 0.05

Notifier = Callable[[Refund, Order], None]  # queues the refund notification of an ended refund

log = logging.getLogger(__name__)


def fee_returned(
    fee: int, total: int, refunded_before: int, returned_before: int, refund: int
) -> int:
    """The part of the payment's fee (手续费) a refund returns: the fee of all refunds so far, pro
    rata and rounded half up, less what earlier refunds returned. The refund that completes the
    payment returns exactly the rest, so the refunds never return more than the fee."""
    cumulative = refunded_before + refund
    rest = fee - returned_before
    if cumulative >= total:
        return rest
    due = (2 * fee * cumulative + total) // (2 * total)
    return max(0, min(rest, due - returned_before))


class RefundDesk:
    """Creates, answers and ends refunds; routes in app.py call it through the sandbox."""

    def __init__(
        self,
        store: Store,
        faults: Faults,
        settings: Callable[[], SandboxSettings],
        notify: Notifier,
    ) -> None:
        self._store = store
        self._faults = faults
        self._settings = settings
        self._notify = notify

    def create(self, auth_mchid: str, body: bytes) -> dict[str, object]:
        """``POST /v3/refund/domestic/refunds`` (申请退款)."""
        fields = validate_refund(json_object(body))
        now = time.time()
        with self._store.transaction():
            order = self._trade(auth_mchid, fields)
            existing = self._store.get_refund(auth_mchid, fields.out_refund_no)
            if existing is not None:
                if not same_request(existing, order, fields):
                    raise refund_mismatch()
                return refund_json(existing, order)
            refunds = self._store.refunds_of_trade(auth_mchid, order.out_trade_no)
            self._check_refundable(order, refunds, fields, now)
            refund = self._new_refund(order, refunds, fields, now)
            self._store.insert_refund(refund)
            if order.trade_state != "REFUND":
                self._store.update_order(order.with_changes(trade_state="REFUND", updated_at=now))
        return refund_json(refund, order)

    def query(self, auth_mchid: str, out_refund_no: str) -> dict[str, object]:
        """``GET /v3/refund/domestic/refunds/{out_refund_no}`` (查询单笔退款)."""
        self.complete_due(time.time())  # a due refund has ended, whether or not the worker ran
        with self._store.transaction():
            refund = self._store.get_refund(auth_mchid, out_refund_no)
            order = (
                None if refund is None else self._store.get_order(auth_mchid, refund.out_trade_no)
            )
            if refund is None or order is None:
                raise ApiError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            return refund_json(refund, order)

    def listed(self, limit: int) -> list[dict[str, object]]:
        """``GET /sandbox/refunds``: every refund, newest first, as every channel's sandbox
        lists them (``amount`` in fen; ``status`` PROCESSING, SUCCESS, ABNORMAL or CLOSED)."""
        return [
            {
                "out_refund_no": r.out_refund_no,
                "out_trade_no": r.out_trade_no,
                "amount": r.refund,
                "status": r.status,
                "refund_id": r.refund_id,
            }
            for r in self._store.list_refunds(limit)
        ]

    def _trade(self, mchid: str, fields: RefundFields) -> Order:
        if fields.transaction_id is not None:
            order = self._store.order_by_transaction_id(mchid, fields.transaction_id)
            if order is not None and fields.out_trade_no not in (None, order.out_trade_no):
                raise ApiError(400, "PARAM_ERROR", "transaction_id 与 out_trade_no 不是同一笔订单")
        else:
            order = self._store.get_order(mchid, fields.out_trade_no or "")
        if order is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "订单不存在")
        return order

    @staticmethod
    def _check_refundable(
        order: Order, refunds: list[Refund], fields: RefundFields, now: float
    ) -> None:
        if order.trade_state not in PAID or order.success_at is None:
            raise ApiError(404, "RESOURCE_NOT_EXISTS", "订单尚未支付，未支付的订单不能发起退款")
        if fields.total != order.total:
            raise ApiError(
                400,
                "PARAM_ERROR",
                "amount.total 与原订单金额不一致",
                {"field": "/amount/total", "location": "body"},
            )
        if now - order.success_at > REFUND_WINDOW_SECONDS:
            raise ApiError(
                400, "INVALID_REQUEST", "订单已超过可退款的最大期限（支付后一年内可退款）"
            )
        if len(refunds) >= MAX_REFUNDS_PER_TRADE:
            raise ApiError(
                400, "INVALID_REQUEST", f"该订单的退款次数已达上限（{MAX_REFUNDS_PER_TRADE} 次）"
            )
        remaining = order.total - sum(r.refund for r in refunds if r.status != "CLOSED")
        if remaining <= 0:
            raise ApiError(400, "INVALID_REQUEST", "订单已全额退款")
        if fields.refund > remaining:
            raise ApiError(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")

    def _new_refund(
        self, order: Order, refunds: list[Refund], fields: RefundFields, now: float
    ) -> Refund:
        live = [r for r in refunds if r.status != "CLOSED"]
        settings = self._settings()
        fee = fee_returned(
            rate_fee(order.total, settings.fee_rate_ppm),
            order.total,
            sum(r.refund for r in live),
            sum(r.fee_refund for r in live),
            fields.refund,
        )
        assert order.transaction_id is not None  # a paid order has one
        return Refund(
            mchid=order.mchid,
            out_refund_no=fields.out_refund_no,
            refund_id=new_refund_id(now),
            out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id,
            reason=fields.reason,
            notify_url=fields.notify_url,
            funds_account=fields.funds_account,
            goods_detail=fields.goods_detail,
            refund=fields.refund,
            total=fields.total,
            currency=fields.currency,
            fee_refund=fee,
            status="PROCESSING",
            created_at=now,
            due_at=now + settings.refund_delay_ms / 1000,
            success_at=None,
            updated_at=now,
        )

    def complete_due(self, now: float) -> int:
        """End the refunds whose time has come and queue their notifications; how many ended."""
        config = self._faults.config
        with self._store.transaction():
            due = self._store.due_refunds(now, COMPLETE_BATCH)
            for refund in due:
                if self._faults.roll(config.refund_abnormal_rate):
                    ended = refund.with_changes(status="ABNORMAL", updated_at=now)
                elif self._faults.roll(config.refund_closed_rate):
                    ended = refund.with_changes(status="CLOSED", updated_at=now)
                else:
                    ended = refund.with_changes(status="SUCCESS", success_at=now, updated_at=now)
                self._store.update_refund(ended)
                order = self._store.get_order(refund.mchid, refund.out_trade_no)
                if order is not None and ended.notify_url:
                    self._notify(ended, order)
        return len(due)


class RefundWorker:
    """A thread that ends due refunds (退款处理), then wakes the callback sender."""

    def __init__(self, complete: Callable[[float], int], wake_sender: Callable[[], None]) -> None:
        self._complete = complete
        self._wake_sender = wake_sender
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wechatpay-refunds", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ended = self._complete(time.time())
            except Exception:  # keep the worker alive; the refund is ended on the next pass
                log.exception("refund worker pass failed")
                ended = 0
            if ended:
                self._wake_sender()
                continue
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
