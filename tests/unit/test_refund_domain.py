"""The refund domain on its own: the transition table, the admission of refunds against what
remains of the payment (over any sequence of requests and endings, nothing is refunded twice or
beyond the amount), the decision on the channel's word, and the ledger's refund voucher with
the merchant fee returned pro rata (no fen lost or created over any sequence of refunds)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paygrid.channels.ports import (
    ChannelAccount,
    ChannelCapabilities,
    PayerAction,
    PayerActionKind,
    RefundState,
    RefundTrade,
)
from paygrid.kernel.money import Money
from paygrid.ledger.domain import Direction, refund_fee_returned, refund_voucher
from paygrid.payments.domain import Item, Payment, PaymentStatus
from paygrid.payments.events import RefundFailed, RefundSucceeded
from paygrid.payments.orders import ChannelOrder, OrderStatus
from paygrid.payments.refunds import (
    MAX_REFUNDS_PER_PAYMENT,
    REFUND_TRANSITIONS,
    Admission,
    IllegalRefundTransition,
    Refund,
    RefundDraft,
    RefundItem,
    RefundOutcome,
    RefundStatus,
    refused_by_channel,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACCOUNT = ChannelAccount("mch-1", "app-1")
CAPS = ChannelCapabilities(
    methods=frozenset({"native"}),
    currencies=frozenset({"CNY"}),
    partial_refunds=True,
    refund_window=timedelta(days=365),
    bill_types=frozenset({"ALL"}),
)


def paid(amount: int = 10_000, items: tuple[Item, ...] = ()) -> Payment:
    order = ChannelOrder(
        "cho_1", "pay_1", "wechatpay", "native", "pay_1", OrderStatus.PAID,
        PayerAction(PayerActionKind.QR_CODE, content="weixin://x"), "wx1", NOW, NOW,
    )  # fmt: skip
    return Payment(
        "pay_1", "m1", "o1", amount, "CNY", "d", "http://n", None, "native",
        PaymentStatus.SUCCESS, NOW + timedelta(hours=1), None, items, (), "h", 0, NOW, None,
        "t", NOW, NOW, 1, Money(amount, "CNY"), (order,),
    )  # fmt: skip


def draft(n: int, amount: int, items: tuple[RefundItem, ...] = ()) -> RefundDraft:
    return RefundDraft(f"rfd_{n}", "m1", f"no-{n}", amount, None, None, items, f"h{n}")


def trade(refund: Refund, said: RefundState | None, **changes: object) -> RefundTrade:
    fact = RefundTrade(
        refund.channel_ref,
        said,
        payment_ref="pay_1",
        channel_refund_no="wxr1",
        amount=Money(refund.amount, "CNY"),
        raw_state=said.value if said else "",
        merchant_id="mch-1",
    )
    return replace(fact, **changes)  # type: ignore[arg-type]


# --- the transition table -------------------------------------------------------------------
@given(st.sampled_from(list(RefundStatus)), st.sampled_from(list(RefundStatus)))
def test_the_transition_table_is_the_only_authority(
    current: RefundStatus, target: RefundStatus
) -> None:
    refund = replace(paid().request_refund(draft(1, 5), CAPS, NOW).refund, status=current)  # type: ignore[arg-type]
    if target in REFUND_TRANSITIONS[current]:
        assert refund.moved(target, NOW, "t").status == target
    else:
        with pytest.raises(IllegalRefundTransition):
            refund.moved(target, NOW, "t")


def test_processing_ends_in_success_or_failed_and_those_are_final() -> None:
    assert {
        RefundStatus.PROCESSING: {RefundStatus.SUCCESS, RefundStatus.FAILED},
        RefundStatus.SUCCESS: frozenset(),
        RefundStatus.FAILED: frozenset(),
    } == REFUND_TRANSITIONS


# --- admission and the reservation ----------------------------------------------------------
operations = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.integers(1, 4_000)),
        st.tuples(st.sampled_from(["succeed", "fail"]), st.integers(0, 60)),
    ),
    max_size=80,
)


@given(st.integers(1, 10_000), operations)
def test_no_sequence_of_requests_and_endings_refunds_beyond_the_amount(
    amount: int, ops: list[tuple[str, int]]
) -> None:
    payment = paid(amount)
    for n, (op, value) in enumerate(ops):
        processing = [r for r in payment.refunds if r.status == RefundStatus.PROCESSING]
        if op == "request":
            decision = payment.request_refund(draft(n, value), CAPS, NOW)
            room = value <= payment.refundable_amount
            full = len(payment.refunds) >= MAX_REFUNDS_PER_PAYMENT
            expected = (
                Admission.TOO_MANY_REFUNDS
                if full
                else (Admission.ACCEPTED if room else Admission.REFUND_EXCEEDS_REMAINING)
            )
            assert decision.outcome == expected
            if expected != Admission.ACCEPTED:
                assert decision.payment is payment
            payment = decision.payment
        elif processing:
            refund = processing[value % len(processing)]
            state = RefundState.SUCCESS if op == "succeed" else RefundState.FAILED
            decision = payment.apply_refund_trade(
                refund.refund_id, trade(refund, state), ACCOUNT, NOW
            )
            assert decision.outcome == (
                RefundOutcome.APPLY_SUCCESS if op == "succeed" else RefundOutcome.APPLY_FAILED
            )
            payment = decision.payment
        by = {s: sum(r.amount for r in payment.refunds if r.status == s) for s in RefundStatus}
        assert payment.refunded_amount == by[RefundStatus.SUCCESS]
        assert payment.refunding_amount == by[RefundStatus.PROCESSING]
        assert 0 <= payment.refunded_amount + payment.refunding_amount <= amount
        assert (
            payment.refundable_amount == amount - payment.refunded_amount - payment.refunding_amount
        )


def test_refusals_are_codes_and_change_nothing() -> None:
    payment = paid(1_000, items=(Item("A", "a", 2, 500),))
    unpaid = replace(payment, status=PaymentStatus.PAYING, paid_at=None)
    late = NOW + timedelta(days=366)
    whole_only = replace(CAPS, partial_refunds=False)
    cases = [
        (unpaid, draft(1, 10), CAPS, NOW, Admission.PAYMENT_NOT_REFUNDABLE),
        (payment, draft(1, 10), CAPS, late, Admission.REFUND_WINDOW_CLOSED),
        (payment, draft(1, 10), whole_only, NOW, Admission.PARTIAL_REFUND_NOT_SUPPORTED),
        (payment, draft(1, 1_001), CAPS, NOW, Admission.REFUND_EXCEEDS_REMAINING),
        (payment, draft(1, 10, (RefundItem("B", 1),)), CAPS, NOW, Admission.INVALID_ITEMS),
        (payment, draft(1, 10, (RefundItem("A", 3),)), CAPS, NOW, Admission.INVALID_ITEMS),
        (payment, draft(1, 10, (RefundItem("A", 1),) * 2), CAPS, NOW, Admission.INVALID_ITEMS),
    ]
    for before, asked, caps, now, code in cases:
        decision = before.request_refund(asked, caps, now)
        assert (decision.outcome, decision.payment, decision.refund) == (code, before, None)
        assert decision.problem
    whole = payment.request_refund(draft(2, 1_000), whole_only, NOW)
    assert whole.outcome == Admission.ACCEPTED and whole.payment.refundable_amount == 0
    assert whole.refund is not None and whole.refund.order_id == "cho_1"


# --- the channel's word ---------------------------------------------------------------------
def reserved(amount: int = 400) -> tuple[Payment, Refund]:
    decision = paid().request_refund(draft(1, amount), CAPS, NOW)
    assert decision.refund is not None
    return decision.payment, decision.refund


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [
        ({"amount": Money(401, "CNY")}, RefundOutcome.AMOUNT_MISMATCH),
        ({"amount": None}, RefundOutcome.MISSING_FIELD),
        ({"said": None, "raw_state": "WEIRD"}, RefundOutcome.MISSING_FIELD),
        ({"refund_ref": None}, RefundOutcome.MISSING_FIELD),
        ({"refund_ref": "rfd_other"}, RefundOutcome.MERCHANT_MISMATCH),
        ({"payment_ref": "pay_other"}, RefundOutcome.MERCHANT_MISMATCH),
        ({"merchant_id": "mch-other"}, RefundOutcome.MERCHANT_MISMATCH),
        ({"defect": "sealed for something else"}, RefundOutcome.PROTOCOL_MISMATCH),
    ],
)
def test_a_report_that_does_not_fit_is_refused(
    changes: dict[str, object], outcome: RefundOutcome
) -> None:
    payment, refund = reserved()
    said = changes.pop("said", RefundState.SUCCESS)
    decision = payment.apply_refund_trade(
        refund.refund_id,
        trade(refund, said, **changes),
        ACCOUNT,
        NOW,  # type: ignore[arg-type]
    )
    assert (decision.outcome, decision.payment, decision.events) == (outcome, payment, ())
    assert decision.problem


def test_absent_merchant_and_payment_are_not_required_of_an_answer() -> None:
    payment, refund = reserved()
    answer = trade(refund, RefundState.SUCCESS, merchant_id=None, payment_ref=None)
    decision = payment.apply_refund_trade(refund.refund_id, answer, ACCOUNT, NOW)
    assert decision.outcome == RefundOutcome.APPLY_SUCCESS
    assert decision.events == (RefundSucceeded,)
    assert decision.payment.refunded_amount == 400 and decision.payment.refunding_amount == 0


def test_processing_notes_the_channel_number_and_crossing_reports_are_stale() -> None:
    payment, refund = reserved()
    noted = payment.apply_refund_trade(
        refund.refund_id, trade(refund, RefundState.PROCESSING, raw_state="ABNORMAL"), ACCOUNT, NOW
    )
    assert noted.outcome == RefundOutcome.NOTED and noted.events == ()
    held = noted.payment.refund(refund.refund_id)
    assert held is not None and (held.channel_refund_no, held.channel_state) == ("wxr1", "ABNORMAL")
    assert held.status == RefundStatus.PROCESSING and noted.payment.refunding_amount == 400
    again = noted.payment.apply_refund_trade(
        refund.refund_id, trade(refund, RefundState.PROCESSING, raw_state="ABNORMAL"), ACCOUNT, NOW
    )
    assert again.outcome == RefundOutcome.NO_CHANGE and again.payment is noted.payment
    done = noted.payment.apply_refund_trade(
        refund.refund_id, trade(refund, RefundState.SUCCESS), ACCOUNT, NOW
    )
    late = done.payment.apply_refund_trade(
        refund.refund_id, trade(refund, RefundState.PROCESSING), ACCOUNT, NOW
    )
    assert late.outcome == RefundOutcome.STALE and late.payment is done.payment
    contrary = done.payment.apply_refund_trade(
        refund.refund_id, trade(refund, RefundState.FAILED), ACCOUNT, NOW
    )
    assert contrary.outcome == RefundOutcome.ILLEGAL_TRANSITION
    gone = done.payment.apply_refund_trade(
        refund.refund_id, trade(refund, RefundState.NOT_FOUND, amount=None), ACCOUNT, NOW
    )
    assert gone.outcome == RefundOutcome.ILLEGAL_TRANSITION


def test_not_found_at_the_channel_and_a_final_refusal() -> None:
    payment, refund = reserved()
    missing = trade(refund, RefundState.NOT_FOUND, amount=None, payment_ref=None)
    assert (
        payment.apply_refund_trade(refund.refund_id, missing, ACCOUNT, NOW).outcome
        == RefundOutcome.NOT_AT_CHANNEL
    )
    refused = refused_by_channel(payment, refund, "INVALID_REQUEST", NOW)
    assert refused.outcome == RefundOutcome.APPLY_FAILED and refused.events == (RefundFailed,)
    ended = refused.payment.refund(refund.refund_id)
    assert ended is not None and (ended.status, ended.channel_state) == (
        RefundStatus.FAILED,
        "INVALID_REQUEST",
    )
    assert refused.payment.refundable_amount == refused.payment.amount
    assert refused_by_channel(refused.payment, ended, "X", NOW).outcome == RefundOutcome.STALE
    after = refused.payment.apply_refund_trade(refund.refund_id, missing, ACCOUNT, NOW)
    assert after.outcome == RefundOutcome.NO_CHANGE


# --- the ledger's refund voucher ------------------------------------------------------------
def test_design_example_refund() -> None:
    """DESIGN.md: refund 30.00 of 100.00 whose merchant fee was 0.60: 0.18 comes back."""
    fee = refund_fee_returned(60, 10_000, 0, 0, 3_000)
    assert fee == 18
    v = refund_voucher("rfd_1", "pay_1", "m1", "wechatpay", 3_000, "CNY", fee)
    book = {(e.account.code, e.direction): e.amount for e in v.entries}
    assert book == {
        ("merchant_pending_settlement:m1:CNY", Direction.DEBIT): 2_982,
        ("fee_income:CNY", Direction.DEBIT): 18,
        ("pending_clearing:wechatpay:CNY", Direction.CREDIT): 3_000,
    }
    assert v.parent_ref == "pay_1"


def test_the_channel_gives_back_its_fee_too() -> None:
    """The channel's fee of 0.20 on 100.00 comes back pro rata (0.06 for 30.00): pending
    clearing then nets to what the channel settles, channel cost to the fee it kept."""
    back = refund_fee_returned(20, 10_000, 0, 0, 3_000)
    assert back == 6
    v = refund_voucher("rfd_1", "pay_1", "m1", "wechatpay", 3_000, "CNY", 18, back)
    book = {(e.account.code, e.direction): e.amount for e in v.entries}
    assert book[("pending_clearing:wechatpay:CNY", Direction.CREDIT)] == 3_000
    assert book[("pending_clearing:wechatpay:CNY", Direction.DEBIT)] == 6
    assert book[("channel_cost:wechatpay:CNY", Direction.CREDIT)] == 6


@given(
    st.integers(1, 10**9),
    st.integers(0, 1_000_000),
    st.lists(st.integers(1, 10**9), min_size=1, max_size=60),
)
def test_the_fee_returned_never_loses_or_creates_a_fen(
    total: int, rate_ppm: int, parts: list[int]
) -> None:
    fee = (total * rate_ppm + 500_000) // 1_000_000
    refunded = returned = 0
    for part in parts:
        amount = min(part, total - refunded)
        if amount == 0:
            break
        back = refund_fee_returned(fee, total, refunded, returned, amount)
        assert 0 <= back <= amount
        voucher = refund_voucher("r", "p", "m", "c", amount, "CNY", back)  # balances, or raises
        assert all(e.amount > 0 for e in voucher.entries)
        refunded, returned = refunded + amount, returned + back
        assert returned <= fee
    if refunded == total:
        assert returned == fee  # the refund that completes the payment returns the rest
    last = total - refunded
    if last:
        assert returned + refund_fee_returned(fee, total, refunded, returned, last) == fee
