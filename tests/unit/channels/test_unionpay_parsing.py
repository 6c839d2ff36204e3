"""UnionPay answers as facts: respCode semantics (pending codes never a failure), our
references as orderId + txnTime, notifications dispatched by txnType."""

from __future__ import annotations

from datetime import datetime

import pytest

from paygrid.channels.ports import ChannelAccount, RefundState, TradeState
from paygrid.channels.unionpay import parsing
from paygrid.channels.unionpay.client import UnionPayApiError
from paygrid.kernel.ids import new_id, timestamp_ms_of
from paygrid.kernel.money import Money

ACCOUNT = ChannelAccount(merchant_id="777290058110048")


def test_refs_map_to_order_ids_and_back() -> None:
    ref = new_id("pay", cell=3)
    order_id = parsing.order_id_of(ref)
    assert "_" not in order_id and 8 <= len(order_id) <= 32 and order_id.isalnum()
    assert parsing.ref_of(order_id) == ref
    assert parsing.ref_of("SBXEXTRA0000000000000001") is None
    for bad in ("pay-01", "has space_0123456789ABCDEFGHJKMNPQRS", "x" * 40):
        with pytest.raises(ValueError):
            parsing.order_id_of(bad)


def test_txn_time_is_the_ids_own_time_in_beijing() -> None:
    ref = new_id("rfd", now_ms=1_796_083_200_123)  # 2026-12-01 00:00:00.123 UTC
    assert parsing.txn_time_of(ref) == "20261201080000"
    assert parsing.txn_time_of(ref) == parsing.txn_time_of(ref)  # a retry names the same txn
    assert timestamp_ms_of(ref) == 1_796_083_200_123


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("00", TradeState.SUCCESS),
        ("03", TradeState.PENDING),
        ("04", TradeState.PENDING),
        ("05", TradeState.PENDING),
        ("01", TradeState.FAILED),
        ("60", TradeState.FAILED),
        (None, None),
        ("0", None),
        ("000", None),
    ],
)
def test_result_codes(code: str | None, state: TradeState | None) -> None:
    assert parsing.result_state(code) is state


def consume(**extra: str) -> dict[str, str]:
    ref = new_id("pay")
    return {
        "txnType": "00",
        "respCode": "00",
        "merId": ACCOUNT.merchant_id,
        "orderId": parsing.order_id_of(ref),
        "txnAmt": "1234",
        "currencyCode": "156",
        "queryId": "261201102030123456789",
        **extra,
    }


def test_query_answers() -> None:
    ref = new_id("pay")
    missing = parsing.trade_from_query({"respCode": "34"}, ref, ACCOUNT)
    assert (missing.state, missing.raw_state) == (TradeState.PENDING, "34")  # never failed
    paid = parsing.trade_from_query(consume(origRespCode="00"), ref, ACCOUNT)
    assert (paid.state, paid.amount, paid.merchant_id) == (
        TradeState.SUCCESS, Money(1234, "CNY"), ACCOUNT.merchant_id)  # fmt: skip
    assert parsing.trade_from_query(consume(origRespCode="05"), ref, ACCOUNT).state is (
        TradeState.PENDING
    )
    assert parsing.trade_from_query(consume(origRespCode="01"), ref, ACCOUNT).state is (
        TradeState.FAILED
    )
    assert parsing.trade_from_query(consume(origRespCode="00", txnAmt="12.34"), ref,
                                    ACCOUNT).amount is None  # fmt: skip
    assert parsing.trade_from_query(consume(origRespCode="00", currencyCode="840"), ref,
                                    ACCOUNT).amount is None  # fmt: skip
    odd = parsing.trade_from_query(consume(origRespCode="00", txnType="04"), ref, ACCOUNT)
    assert odd.defect is not None  # a refund's answer about a consume: never applied


def test_refund_answers() -> None:
    ref = new_id("rfd")
    assert parsing.refund_from_query({"respCode": "34"}, ref, ACCOUNT).state is (
        RefundState.NOT_FOUND
    )
    done = parsing.refund_from_query(consume(origRespCode="00", orderId=parsing.order_id_of(ref),
                                             txnAmt="300"), ref, ACCOUNT)  # fmt: skip
    assert (done.refund_ref, done.state, done.amount) == (ref, RefundState.SUCCESS,
                                                          Money(300, "CNY"))  # fmt: skip
    assert parsing.refund_from(consume(txnType="04"), "04").state is RefundState.PROCESSING
    assert parsing.refund_from(consume(txnType="01"), "00").defect is not None


def test_notify_ids() -> None:
    assert parsing.notify_id_of({"txnType": "01", "queryId": "123"}) == "01:123"
    assert parsing.notify_id_of({"txnType": "01"}) is None


@pytest.mark.parametrize(
    ("code", "verified", "retryable"),
    [("03", True, True), ("05", True, True), ("06", True, True), ("12", True, False),
     ("36", True, False), ("36", False, True), ("00", False, True)],
)  # fmt: skip
def test_api_errors_retry_pending_and_unsigned(code: str, verified: bool, retryable: bool) -> None:
    error = UnionPayApiError({"respCode": code, "respMsg": "x"}, verified=verified)
    assert error.retryable is retryable
    assert error.pending is (code in ("03", "04", "05"))


def test_pay_timeout_is_rounded_down() -> None:
    at = datetime.fromisoformat("2026-12-01T10:00:59.999+00:00")
    assert parsing.beijing_text(at) == "20261201180059"
    with pytest.raises(ValueError):
        parsing.beijing_text(datetime(2026, 12, 1))
