"""NetsUnion gateway payments (网关支付, MODELLED) without a server: the epcc.211 body, the
platform-signed page fields (tampering, extra or odd fields refused), the order checks, the
answer's facts (a gateway payment is a payment; 03 is CLOSED), close outcomes, capabilities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paygrid.channels.netsunion import crypto, page, wire
from paygrid.channels.netsunion.capabilities import CAPABILITIES
from paygrid.channels.netsunion.parsing import refund_from, trade_from
from paygrid.channels.ports import (
    ChannelError,
    CloseOutcome,
    OrderRequest,
    Payer,
    PayerAction,
    PayerActionKind,
    PayerField,
    TradeState,
)
from paygrid.kernel.money import Money

MEMBER = crypto.generate_keypair()
PLATFORM = crypto.generate_keypair()
NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
MEMBER_ID = "Z2000000000001"
ICBC = "C1010211000012"


def request(**changes: Any) -> OrderRequest:
    values: dict[str, Any] = {
        "payment_ref": "PG0001",
        "amount": Money(12345, "CNY"),
        "description": "网关" * 40,
        "notify_url": "http://127.0.0.1:9/notify",
        "method": "page",
        "expire_at": NOW + timedelta(minutes=30),
        "return_url": "https://shop.example/back",
        "payer_bank": "ICBC",
    }
    return OrderRequest(**{**values, **changes})


def fields(**changes: str) -> dict[str, str]:
    unsigned = {
        "IssrId": "G4000311000018",
        "InstgId": MEMBER_ID,
        "PyerAcctIssrId": ICBC,
        "TrxId": "PG0001",
        "TrxAmt": "CNY123.45",
        "TrxExpDtTm": "2026-06-15T10:30:00",
        "Tkn": "tok_-ABC123",
        "SignSN": "4000000001",
    }
    return page.sign_fields(PLATFORM, {**unsigned, **changes})


def answer(body: wire.Node, msg_tp: str = wire.GATEWAY_ANSWER) -> wire.Message:
    head = wire.header(msg_tp, "G4000311000018", "4000000001", wire.FROM_PLATFORM, NOW)
    return wire.parse(wire.build(head, body, PLATFORM, MEMBER.public))


def test_the_order_body_says_bank_amount_expiry_and_return() -> None:
    body = page.order_body(request(), ICBC, MEMBER_ID, "RESERVE01", NOW)
    head = wire.header(wire.GATEWAY, MEMBER_ID, "1", wire.FROM_MEMBER, NOW)
    sent = wire.parse(wire.build(head, body, MEMBER, PLATFORM.public))
    assert sent.msg_tp == "epcc.211.001.01" and wire.verified(sent, MEMBER.public)
    assert sent.text("PyerInf/PyerAcctIssrId") == ICBC
    assert sent.text("TrxInf/TrxAmt") == "CNY123.45"
    assert sent.text("TrxInf/TrxCtgy") == wire.DEBIT_CATEGORY
    assert sent.text("TrxInf/TrxExpDtTm") == "2026-06-15T10:30:00"  # Beijing local
    assert sent.text("TrxInf/RtrnUrl") == "https://shop.example/back"
    assert len(sent.text("OrdrInf/OrdrDesc") or "") == page.MAX_DESCRIPTION_CHARS
    bare = page.order_body(request(expire_at=None, return_url=None), ICBC, MEMBER_ID, "R", NOW)
    sent = wire.parse(wire.build(head, bare, MEMBER, PLATFORM.public))
    assert sent.text("TrxInf/TrxExpDtTm") is None and sent.text("TrxInf/RtrnUrl") is None


def test_page_fields_verify_and_tampering_fails() -> None:
    signed = fields()
    assert page.verify_fields(PLATFORM.public, signed)
    assert not page.verify_fields(MEMBER.public, signed)  # not the platform's key
    assert not page.verify_fields(PLATFORM.public, {**signed, "TrxAmt": "CNY0.01"})
    assert not page.verify_fields(PLATFORM.public, {**signed, "Extra": "1"})
    assert not page.verify_fields(PLATFORM.public, {k: v for k, v in signed.items() if k != "Tkn"})
    assert not page.verify_fields(PLATFORM.public, {**signed, page.SIGNATURE_FIELD: ""})
    assert page.signed_text(signed).startswith(b"IssrId=G4000311000018&InstgId=")


@pytest.mark.parametrize("value", ["a&TrxAmt=CNY0.01", "a=b", "", "x" * 65, "空"])
def test_a_field_that_is_not_a_plain_token_is_refused(value: str) -> None:
    assert not page.well_formed({**fields(), "Tkn": value})


def test_the_adapter_reads_the_page_of_its_own_order_only() -> None:
    signed = fields()
    info = {k: signed[k] for k in ("Tkn", "TrxExpDtTm", "SignSN", page.SIGNATURE_FIELD)}
    got = answer({"TrxInf": {"TrxId": "PG0001"}, "PageInf": {"PageUrl": "http://b/", **info}})
    read = page.page_fields(got, request(), ICBC, MEMBER_ID)
    assert read == signed and page.verify_fields(PLATFORM.public, read)
    other = page.page_fields(got, request(amount=Money(1, "CNY")), ICBC, MEMBER_ID)
    assert not page.verify_fields(PLATFORM.public, other)  # signed for another amount
    action = PayerAction(PayerActionKind.FORM, url="http://b/", fields=read)
    assert PayerAction.from_json(action.to_json()) == action


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"expire_at": NOW - timedelta(seconds=1)}, "expired"),
        ({"return_url": "javascript:alert(1)"}, "http(s)"),
        ({"return_url": "https://x/" + "a" * 600}, "http(s)"),
        ({"amount": Money(0, "CNY")}, "positive"),
    ],
)
def test_an_order_the_platform_cannot_take_is_refused(changes: dict[str, Any], why: str) -> None:
    with pytest.raises(ChannelError) as refused:
        page.checked_request(request(**changes), NOW)
    assert refused.value.code == "INVALID_PARAMETER" and why in refused.value.message
    assert not refused.value.retryable


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (wire.BIZ_PROCESSING, TradeState.PENDING),
        (wire.BIZ_SUCCESS, TradeState.SUCCESS),
        (wire.BIZ_FAILED, TradeState.FAILED),
        (wire.TRX_CLOSED, TradeState.CLOSED),
    ],
)
def test_a_gateway_payment_is_a_payment_fact(status: str, state: TradeState) -> None:
    block = {
        "OriMsgTp": wire.GATEWAY,
        "TrxId": "PG0001",
        "TrxAmt": "CNY123.45",
        "TrxStatus": status,
        "SysTrxId": "NU1",
        "TrxFinishDtTm": "2026-06-15T10:01:02",
    }
    got = answer({"OriTrxInf": block}, wire.QUERY_ANSWER)
    trade = trade_from(got, "OriTrxInf", MEMBER_ID)
    assert trade.state is state and trade.amount == Money(12345, "CNY")
    assert (trade.paid_at is not None) is (state is TradeState.SUCCESS)
    assert refund_from(got, "OriTrxInf", MEMBER_ID).state is None  # no refund


def test_close_outcomes() -> None:
    assert page.close_outcome(wire.TRX_CLOSED) is CloseOutcome.CLOSED
    assert page.close_outcome(wire.BIZ_FAILED) is CloseOutcome.CLOSED
    assert page.close_outcome(wire.BIZ_SUCCESS) is CloseOutcome.ALREADY_PAID
    assert page.close_outcome(wire.BIZ_PROCESSING) is None
    assert page.close_outcome(None) is None


def test_capabilities_declare_page_with_the_payers_bank() -> None:
    assert {"agreement", "page"} <= CAPABILITIES.methods
    assert CAPABILITIES.payer_fields["page"] == frozenset({PayerField.BANK})
    assert CAPABILITIES.missing_payer_fields("page", Payer()) == ["bank"]
    assert CAPABILITIES.missing_payer_fields("page", Payer(bank="ICBC")) == []
    assert CAPABILITIES.cashier_methods == ("agreement", "page")  # the cashier offers both
    assert wire.ANSWERS[wire.GATEWAY] == "epcc.212.001.01"
    assert wire.ANSWERS[wire.GATEWAY_CLOSE] == "epcc.214.001.01"
