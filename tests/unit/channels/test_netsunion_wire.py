"""The NetsUnion wire without a server: SM2 signatures (interoperable with OpenSSL), PEM keys,
the SM4 field envelope, exact ``CNY100.00`` amounts, hostile XML refused, the facts parsed
from answers, the clearing file's trailer, and the port's WAIT action."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from paygrid.channels.netsunion import bill, crypto, wire
from paygrid.channels.netsunion.parsing import agreement_from, refund_from, trade_from
from paygrid.channels.ports import (
    AgreementState,
    PayerAction,
    PayerActionKind,
    RefundState,
    TradeState,
)

MEMBER = crypto.generate_keypair()
PLATFORM = crypto.generate_keypair()
NOW = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)


def message(body: wire.Node, msg_tp: str = wire.QUERY_ANSWER) -> bytes:
    head = wire.header(msg_tp, "G4000311000018", "4000000001", wire.FROM_PLATFORM, NOW)
    return wire.build(head, body, PLATFORM, MEMBER.public)


# --- crypto -------------------------------------------------------------------------------------


def test_signatures_verify_and_tampering_fails() -> None:
    signature = crypto.sign(MEMBER, b"<root/>")
    assert base64.b64decode(signature)[0] == 0x30  # DER SEQUENCE, as the observed MEUCIF...
    assert crypto.verify(MEMBER.public, b"<root/>", signature)
    assert not crypto.verify(MEMBER.public, b"<root />", signature)
    assert not crypto.verify(PLATFORM.public, b"<root/>", signature)
    assert not crypto.verify(MEMBER.public, b"<root/>", "not base64!")


def test_a_non_canonical_der_signature_is_refused() -> None:
    der = base64.b64decode(crypto.sign(MEMBER, b"x"))
    # the same r and s with a long-form length: a second encoding of one signature
    padded = bytes([0x30, 0x81, der[1]]) + der[2:]
    assert not crypto.verify(MEMBER.public, b"x", base64.b64encode(padded).decode())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_signatures_are_sm2_with_sm3_as_openssl_makes_them(tmp_path: Path) -> None:
    key, pub, msg, sig = (tmp_path / n for n in ("k.pem", "p.pem", "msg", "sig"))
    key.write_text(crypto.private_pem(MEMBER))
    pub.write_text(crypto.public_pem(MEMBER.public))
    msg.write_bytes(b"<root>sm2</root>")
    sig.write_bytes(base64.b64decode(crypto.sign(MEMBER, b"<root>sm2</root>")))
    common = ["-rawin", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678"]
    ours = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-in", msg, "-pubin", "-inkey", pub, "-sigfile", sig,
         *common], capture_output=True, text=True,
    )  # fmt: skip
    if "Verified" not in ours.stdout and "unsupported" in ours.stderr.lower():
        pytest.skip("this OpenSSL has no SM2")
    assert "Signature Verified Successfully" in ours.stdout, ours.stderr
    theirs = tmp_path / "theirs"
    made = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-in", msg, "-inkey", key, "-out", theirs, *common],
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    signature = base64.b64encode(theirs.read_bytes()).decode()
    assert crypto.verify(MEMBER.public, b"<root>sm2</root>", signature)


def test_pem_keys_round_trip_and_are_checked() -> None:
    assert crypto.load_private(crypto.private_pem(MEMBER)) == MEMBER
    assert crypto.load_public(crypto.public_pem(MEMBER.public)) == MEMBER.public
    mixed = crypto.private_pem(crypto.KeyPair(MEMBER.private, PLATFORM.public))
    with pytest.raises(crypto.CryptoError):
        crypto.load_private(mixed)
    with pytest.raises(crypto.CryptoError):
        crypto.load_public(crypto.private_pem(MEMBER))
    off_curve = b"\x04" + b"\x01" * 64
    with pytest.raises(crypto.CryptoError):
        crypto.load_public(crypto.public_pem(off_curve))


def test_sensitive_fields_open_only_with_the_recipients_key() -> None:
    data = message({"SgnInf": {"SgnAcctId": wire.Secret("6222021234567890123")}})
    assert b"6222021234567890123" not in data
    parsed = wire.parse(data)
    assert wire.secret(parsed, "SgnInf/SgnAcctId", MEMBER) == "6222021234567890123"
    assert len(base64.b64decode(parsed.text("SgnInf/SgnAcctId") or "")) == 32  # SM4 blocks
    with pytest.raises(crypto.CryptoError):
        wire.secret(parsed, "SgnInf/SgnAcctId", PLATFORM)


# --- amounts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fen"),
    [("CNY100.00", 10000), ("CNY0.01", 1), ("CNY0.00", 0), ("CNY12345678.90", 1234567890)],
)
def test_amounts_parse_exactly(text: str, fen: int) -> None:
    assert wire.parse_amount(text) == fen
    assert wire.amount_text(fen) == text


@pytest.mark.parametrize(
    "text",
    ["CNY1.5", "CNY1.001", "CNY-1.00", "100.00", "CNY1e2", "CNY１.00", "USD1.00", "CNY01.00",
     "CNY 1.00", "cny1.00", "", None, 100],
)  # fmt: skip
def test_what_is_not_an_amount_is_none(text: object) -> None:
    assert wire.parse_amount(text) is None


# --- hostile and broken messages ----------------------------------------------------------------

SIGNED = b"\n{S:MEUCIQ==}"


@pytest.mark.parametrize(
    "document",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<root><MsgHeader/><MsgBody>&b;</MsgBody></root>",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<root><MsgHeader/><MsgBody>&x;</MsgBody></root>",
        b"<root><MsgHeader/><MsgBody>" + b"<a>" * 10 + b"</a>" * 10 + b"</MsgBody></root>",
        b'<root><MsgHeader/><MsgBody><a b="1"/></MsgBody></root>',
        b'<root xmlns="urn:x"><MsgHeader/><MsgBody/></root>',
        b"<root><MsgBody/><MsgHeader/></root>",
        b"<root><MsgHeader><A>1</A><A>2</A></MsgHeader><MsgBody/></root>",
        b"<root><MsgHeader/><MsgBody>" + b"<a>x</a>" * 500 + b"</MsgBody></root>",
        b"<root><MsgHeader/><MsgBody>",
    ],
)
def test_hostile_or_broken_xml_is_refused(document: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse(document + SIGNED)


def test_framing_size_and_headers_are_checked() -> None:
    good = message({"BizInf": {"BizStsCd": "00"}})
    assert wire.verified(wire.parse(good), PLATFORM.public)
    with pytest.raises(wire.WireError):
        wire.parse(good.rpartition(b"\n{S:")[0])  # no trailer
    with pytest.raises(wire.WireError):
        wire.parse(good + b" " * wire.MAX_MESSAGE_BYTES)
    with pytest.raises(wire.WireError):
        wire.parse(good, {"MsgTp": wire.DEBIT_ANSWER})  # the HTTP header disagrees
    tampered = good.replace(b"<BizStsCd>00<", b"<BizStsCd>01<")
    assert not wire.verified(wire.parse(tampered), PLATFORM.public)


# --- facts --------------------------------------------------------------------------------------


def test_query_answers_become_facts() -> None:
    block = {
        "OriMsgTp": wire.DEBIT, "TrxId": "PG1", "TrxAmt": "CNY10.50", "TrxStatus": "00",
        "SysTrxId": "NU1", "TrxFinishDtTm": "2026-06-15T10:00:00",
    }  # fmt: skip
    parsed = wire.parse(message({"BizInf": {"BizStsCd": "00"}, "OriTrxInf": block}))
    trade = trade_from(parsed, "OriTrxInf", "Z1")
    assert (trade.state, trade.amount and trade.amount.minor) == (TradeState.SUCCESS, 1050)
    assert trade.paid_at == datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
    assert refund_from(parsed, "OriTrxInf", "Z1").state is None  # a debit is no refund
    bad = wire.parse(message({"OriTrxInf": {**block, "TrxAmt": "10.50", "TrxStatus": "99"}}))
    assert trade_from(bad, "OriTrxInf", "Z1").amount is None
    assert trade_from(bad, "OriTrxInf", "Z1").state is None
    refund = {**block, "OriMsgTp": wire.REFUND, "OriTrxId": "PG1", "TrxId": "RF1",
              "TrxStatus": "02"}  # fmt: skip
    told = refund_from(wire.parse(message({"OriTrxInf": refund})), "OriTrxInf", "Z1")
    assert (told.state, told.payment_ref) == (RefundState.PROCESSING, "PG1")


def test_agreement_answers_become_states() -> None:
    def answer(status: str, code: str = "", sgn_no: str | None = None) -> wire.Message:
        body = {
            "BizInf": {"BizStsCd": status, "BizRtnCd": code or None},
            "TrxInf": {"TrxId": "AG1"},
            "SgnInf": {"SgnNo": sgn_no, "SgnAcctIssrId": "C1010211000012"},
        }
        return wire.parse(message(body, wire.AGREEMENT_ANSWER))

    assert agreement_from(answer("00"), "AG1", False).state is AgreementState.PENDING_CODE
    signed = agreement_from(answer("00", sgn_no="SGN1"), "AG1", True)
    assert (signed.state, signed.agreement_no, signed.bank) == (
        AgreementState.SIGNED, "SGN1", "ICBC",
    )  # fmt: skip
    assert agreement_from(answer("01", "NU4021"), "AG1", True).state is (
        AgreementState.PENDING_CODE
    )
    assert agreement_from(answer("01", "NU4023"), "AG1", True).state is AgreementState.FAILED
    with pytest.raises(ValueError):
        agreement_from(answer("00", sgn_no="SGN1"), "AG2", True)  # about another agreement
    with pytest.raises(ValueError):
        agreement_from(answer("00"), "AG1", True)  # confirmed without a number


# --- the clearing file and the port -------------------------------------------------------------


def test_clearing_files_must_add_up_to_their_trailer() -> None:
    at = datetime(2026, 6, 15, 10, 0, tzinfo=wire.BEIJING)
    rows = [
        bill.ClearingRow("PG1", "", "NU1", "0101", "C1010211000012", 10000, 3, at),
        bill.ClearingRow("RF1", "PG1", "NR1", "0301", "C1010211000012", 4000, 1, at),
    ]
    content = bill.write_file("Z1", "2026061502", date(2026, 6, 15), rows)
    lines = bill.parse_file("a.csv", content)
    assert [(x.kind, x.amount.minor, x.fee.minor, x.refund_ref) for x in lines] == [
        ("PAYMENT", 10000, 3, None), ("REFUND", 4000, -1, "RF1"),
    ]  # fmt: skip
    assert lines[1].payment_ref == "PG1"
    with pytest.raises(bill.BillFormatError):
        bill.parse_file("a.csv", content.replace(b"CNY100.00", b"CNY100.01", 1))
    with pytest.raises(bill.BillFormatError):
        bill.parse_file("a.csv", content.rpartition(b"#TRAILER")[0])


def test_the_wait_action_needs_no_target_and_round_trips() -> None:
    action = PayerAction(PayerActionKind.WAIT)
    assert PayerAction.from_json(action.to_json()) == action
    assert action.to_json() == {"kind": "wait"}
