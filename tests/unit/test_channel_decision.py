"""The payment domain's decision on the channel's word (callback or 补单 answer): applied only
when every field the change depends on is present and equal to what we hold."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygrid.channels.ports import (
    ChannelAccount,
    PayerAction,
    PayerActionKind,
    Trade,
    TradeState,
)
from paygrid.kernel.money import Money
from paygrid.ops.check import CHECKS
from paygrid.payments.domain import (
    ANOMALIES,
    ChannelOutcome,
    Payment,
    PaymentStatus,
)
from paygrid.payments.events import PaymentClosed, PaymentSucceeded
from paygrid.payments.orders import ChannelOrder, OrderStatus

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
ACCOUNT = ChannelAccount("1900000109", "wxd678efh567hg6787")
Out = ChannelOutcome
S = PaymentStatus
Ord = OrderStatus


def payment(status: PaymentStatus = S.PAYING, amount: int = 900) -> Payment:
    return Payment(
        payment_id="pay_1",
        mchid="m1",
        out_trade_no="o1",
        amount=amount,
        currency="CNY",
        description="d",
        notify_url="https://merchant.example/n",
        return_url=None,
        method="native",
        status=status,
        expire_at=NOW + timedelta(hours=2),
        attach=None,
        items=(),
        discounts=(),
        request_hash="h",
        refunded_amount=0,
        paid_at=None,
        closed_at=None,
        cashier_token="t",
        created_at=NOW,
        updated_at=NOW,
        version=3,
        orders=(order(status),),
    )


def order(status: PaymentStatus) -> ChannelOrder:
    """pay_1's order at the channel, in the state that goes with the payment's."""
    held = {S.CREATED: Ord.REQUESTED, S.PAYING: Ord.OPEN, S.SUCCESS: Ord.PAID, S.CLOSED: Ord.CLOSED}
    return ChannelOrder(
        order_id="cho_1",
        payment_id="pay_1",
        channel="wechatpay",
        method="native",
        channel_ref="pay_1",
        status=held.get(status, Ord.FAILED),
        payer_action=PayerAction(PayerActionKind.QR_CODE, content="weixin://wxpay/bizpayurl?pr=x"),
        channel_trade_no=None,
        created_at=NOW,
        updated_at=NOW,
    )


def paid(**changes: object) -> Trade:
    """A genuine SUCCESS report for pay_1 of 9.00 CNY, with ``changes``."""
    trade = Trade(
        payment_ref="pay_1",
        state=TradeState.SUCCESS,
        channel_trade_no="4200000001",
        amount=Money(900, "CNY"),
        paid_at=NOW - timedelta(seconds=5),
        raw_state="SUCCESS",
        merchant_id=ACCOUNT.merchant_id,
        app_id=ACCOUNT.app_id,
    )
    return replace(trade, **changes)  # type: ignore[arg-type]


def test_a_complete_equal_report_is_applied_with_its_confirmed_amount() -> None:
    decision = payment().apply_channel_trade(paid(), ACCOUNT, "wechatpay", NOW)
    assert decision.outcome is Out.APPLY_SUCCESS and decision.changed
    after = decision.payment
    assert after.status is S.SUCCESS
    assert after.confirmed_amount == Money(900, "CNY")
    assert (after.paid_at, after.channel_trade_no) == (NOW - timedelta(seconds=5), "4200000001")
    assert decision.events == (PaymentSucceeded,)
    assert after.order is not None and after.order.status is Ord.PAID


MATRIX = [
    ("over-paid", paid(amount=Money(901, "CNY")), Out.AMOUNT_MISMATCH),
    ("under-paid", paid(amount=Money(1, "CNY")), Out.AMOUNT_MISMATCH),
    ("other currency", paid(amount=Money(900, "USD")), Out.AMOUNT_MISMATCH),
    ("no amount", paid(amount=None), Out.MISSING_FIELD),
    ("no trade state", paid(state=None, raw_state=""), Out.MISSING_FIELD),
    ("unknown trade state", paid(state=None, raw_state="WHAT"), Out.MISSING_FIELD),
    ("no mchid", paid(merchant_id=None), Out.MISSING_FIELD),
    ("no appid", paid(app_id=None), Out.MISSING_FIELD),
    ("no out_trade_no", paid(payment_ref=None), Out.MISSING_FIELD),
    ("another merchant", paid(merchant_id="1900000110"), Out.MERCHANT_MISMATCH),
    ("another app", paid(app_id="wx0000000000000000"), Out.MERCHANT_MISMATCH),
    ("another order", paid(payment_ref="pay_2"), Out.MERCHANT_MISMATCH),
    ("sealed for a refund", paid(defect="associated_data 'refund'"), Out.PROTOCOL_MISMATCH),
]


@pytest.mark.parametrize("name, trade, outcome", MATRIX, ids=[m[0] for m in MATRIX])
def test_mismatches_are_refused_and_change_nothing(
    name: str, trade: Trade, outcome: ChannelOutcome
) -> None:
    for status in (S.CREATED, S.PAYING):
        before = payment(status)
        decision = before.apply_channel_trade(trade, ACCOUNT, "wechatpay", NOW)
        assert decision.outcome is outcome, name
        assert decision.outcome in ANOMALIES
        assert decision.payment is before and not decision.changed
        assert decision.events == ()
        assert decision.problem  # says what was wrong, for the log and `paygrid check`


def test_a_wrong_report_on_a_paid_payment_is_still_reported() -> None:
    done = replace(payment(S.SUCCESS), confirmed_amount=Money(900, "CNY"))
    assert done.apply_channel_trade(paid(), ACCOUNT, "wechatpay", NOW).outcome is Out.NO_CHANGE
    over = done.apply_channel_trade(paid(amount=Money(1, "CNY")), ACCOUNT, "wechatpay", NOW)
    assert over.outcome is Out.AMOUNT_MISMATCH and over.payment is done


def test_closing_reports_need_identity_but_no_amount() -> None:
    closed = paid(state=TradeState.CLOSED, raw_state="CLOSED", amount=None)
    decision = payment().apply_channel_trade(closed, ACCOUNT, "wechatpay", NOW)
    assert decision.outcome is Out.APPLY_CLOSED
    assert decision.payment.closed_at == NOW and decision.payment.confirmed_amount is None
    assert decision.events == (PaymentClosed,)
    foreign = replace(closed, merchant_id="1900000110")
    refused = payment().apply_channel_trade(foreign, ACCOUNT, "wechatpay", NOW)
    assert refused.outcome is Out.MERCHANT_MISMATCH
    failed = paid(state=TradeState.FAILED, raw_state="PAYERROR", amount=None)
    assert payment().apply_channel_trade(failed, ACCOUNT, "wechatpay", NOW).outcome is (
        Out.APPLY_FAILED
    )


def test_reports_that_change_nothing_need_only_their_state() -> None:
    for state in (TradeState.PENDING, TradeState.NOT_FOUND):
        bare = Trade("pay_1", state)
        assert payment().apply_channel_trade(bare, ACCOUNT, "wechatpay", NOW).outcome is (
            Out.NO_CHANGE
        )


def test_final_states_stay() -> None:
    late_success = payment(S.CLOSED).apply_channel_trade(paid(), ACCOUNT, "wechatpay", NOW)
    assert late_success.outcome is Out.ILLEGAL_TRANSITION and late_success.problem
    closed = paid(state=TradeState.CLOSED, raw_state="CLOSED")
    assert payment(S.FAILED).apply_channel_trade(closed, ACCOUNT, "wechatpay", NOW).outcome is (
        Out.STALE
    )


def test_a_report_from_a_channel_without_our_order_is_refused() -> None:
    decision = payment().apply_channel_trade(paid(), ACCOUNT, "alipay", NOW)
    assert decision.outcome is Out.MERCHANT_MISMATCH and not decision.changed


def test_a_channel_without_app_ids_does_not_require_one() -> None:
    account = ChannelAccount(ACCOUNT.merchant_id)
    held = payment()
    held = replace(held, orders=(replace(held.orders[0], channel="unionpay"),))
    decision = held.apply_channel_trade(paid(app_id=None), account, "unionpay", NOW)
    assert decision.outcome is Out.APPLY_SUCCESS


def test_paygrid_check_reports_every_anomaly() -> None:
    [sql] = [sql for code, sql, _ in CHECKS if code == "CALLBACK_ANOMALY"]
    assert all(f"'{outcome.value}'" in sql for outcome in ANOMALIES)


@given(
    total=st.one_of(st.none(), st.integers(min_value=-1, max_value=2000)),
    currency=st.sampled_from(["CNY", "USD", "HKD"]),
    merchant_id=st.sampled_from([None, ACCOUNT.merchant_id, "1900000110"]),
    app_id=st.sampled_from([None, ACCOUNT.app_id, "wx0000000000000000"]),
    ref=st.sampled_from([None, "pay_1", "pay_2"]),
    status=st.sampled_from([S.CREATED, S.PAYING]),
)
def test_success_is_applied_exactly_when_everything_matches(
    total: int | None,
    currency: str,
    merchant_id: str | None,
    app_id: str | None,
    ref: str | None,
    status: PaymentStatus,
) -> None:
    amount = Money(total, currency) if total is not None else None
    trade = paid(amount=amount, merchant_id=merchant_id, app_id=app_id, payment_ref=ref)
    decision = payment(status).apply_channel_trade(trade, ACCOUNT, "wechatpay", NOW)
    matches = (amount, merchant_id, app_id, ref) == (
        Money(900, "CNY"),
        ACCOUNT.merchant_id,
        ACCOUNT.app_id,
        "pay_1",
    )
    assert (decision.outcome is Out.APPLY_SUCCESS) == matches
    assert (decision.payment.status is S.SUCCESS) == matches
    if matches:
        assert decision.payment.confirmed_amount == Money(900, "CNY")
    else:
        assert decision.outcome in ANOMALIES and decision.payment.status is status


def test_a_closed_order_whose_payment_stayed_open_closes_the_payment() -> None:
    """A crash between closing the order at the channel and closing the payment: the
    channel's CLOSED (a 补单 answer) confirms the order and closes the payment; no anomaly."""
    held = payment(S.PAYING)
    held = replace(held, orders=(replace(held.orders[0], status=Ord.CLOSED),))
    closed = paid(state=TradeState.CLOSED, raw_state="CLOSED", amount=None)
    decision = held.apply_channel_trade(closed, ACCOUNT, "wechatpay", NOW)
    assert decision.outcome is Out.APPLY_CLOSED and decision.payment.status is S.CLOSED
    assert decision.events == (PaymentClosed,)
    still_paid = paid()  # a CLOSED order cannot become PAID: that is an anomaly
    assert held.apply_channel_trade(still_paid, ACCOUNT, "wechatpay", NOW).outcome is (
        Out.ILLEGAL_TRANSITION
    )
