"""NetsUnion answers and notifications as the port's facts (pure: no I/O).

A field the platform left out, or sent ill-formed, is None in the fact, never defaulted: the
core refuses to act on it. Amounts are ``CNY100.00`` parsed exactly; times Beijing local.
The answer fields named here (TrxStatus, SysTrxId, OriTrxInf, RfdAmt, SgnAcctIdMsk ...) are
MODELLED (docs/netsunion.md).
"""

from __future__ import annotations

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.banks import bank_code
from paygrid.channels.ports import (
    AgreementResult,
    AgreementState,
    RefundState,
    RefundTrade,
    Trade,
    TradeState,
)
from paygrid.kernel.money import Money

CURRENCY = "CNY"
TRADE_STATES = {
    wire.BIZ_SUCCESS: TradeState.SUCCESS,
    wire.BIZ_FAILED: TradeState.FAILED,  # the bank refused the debit: final
    wire.BIZ_PROCESSING: TradeState.PENDING,  # at the bank, or a gateway order not paid yet
    wire.TRX_CLOSED: TradeState.CLOSED,  # a gateway order closed or expired unpaid
}
REFUND_STATES = {
    wire.BIZ_SUCCESS: RefundState.SUCCESS,
    wire.BIZ_FAILED: RefundState.FAILED,
    wire.BIZ_PROCESSING: RefundState.PROCESSING,
}
NOT_FOUND = "NU4004"  # MODELLED business code: no such transaction
WRONG_CODE = "NU4021"  # MODELLED: the SMS code was wrong; the payer may try again
MAX_RAW_CHARS = 32


def money(text: str | None) -> Money | None:
    fen = wire.parse_amount(text)
    return Money(fen, CURRENCY) if fen is not None else None


def business(message: wire.Message) -> tuple[str, str, str]:
    """(BizStsCd, BizRtnCd, BizRtnDesc) of an answer."""
    return (
        message.text("BizInf/BizStsCd") or "",
        message.text("BizInf/BizRtnCd") or "",
        (message.text("BizInf/BizRtnDesc") or "")[:200],
    )


def is_not_found(message: wire.Message) -> bool:
    status, code, _ = business(message)
    return status == wire.BIZ_FAILED and code == NOT_FOUND


def trade_from(message: wire.Message, block: str, merchant_id: str | None) -> Trade:
    """The debit or gateway payment in ``block`` (``TrxInf`` of an answer, ``OriTrxInf`` of a
    query or a notification) as a fact. A refund's block is no payment: its state is None."""
    kind = message.text(f"{block}/OriMsgTp")
    raw = message.text(f"{block}/TrxStatus") or ""
    state = TRADE_STATES.get(raw) if kind in (None, wire.DEBIT, wire.GATEWAY) else None
    return Trade(
        payment_ref=message.text(f"{block}/TrxId"),
        state=state,
        channel_trade_no=message.text(f"{block}/SysTrxId"),
        amount=money(message.text(f"{block}/TrxAmt")),
        paid_at=wire.parse_time(message.text(f"{block}/TrxFinishDtTm"))
        if state is TradeState.SUCCESS
        else None,
        raw_state=raw[:MAX_RAW_CHARS],
        merchant_id=merchant_id,
    )


def refund_from(message: wire.Message, block: str, merchant_id: str | None) -> RefundTrade:
    """The refund in ``block`` as a fact (a debit's block is no refund: state None)."""
    kind = message.text(f"{block}/OriMsgTp")
    raw = message.text(f"{block}/TrxStatus") or ""
    state = REFUND_STATES.get(raw) if kind in (None, wire.REFUND) else None
    return RefundTrade(
        refund_ref=message.text(f"{block}/TrxId"),
        state=state,
        payment_ref=message.text(f"{block}/OriTrxId"),
        channel_refund_no=message.text(f"{block}/SysTrxId"),
        amount=money(message.text(f"{block}/TrxAmt")),
        succeeded_at=wire.parse_time(message.text(f"{block}/TrxFinishDtTm"))
        if state is RefundState.SUCCESS
        else None,
        raw_state=raw[:MAX_RAW_CHARS],
        merchant_id=merchant_id,
    )


def agreement_from(message: wire.Message, agreement_ref: str, confirming: bool) -> AgreementResult:
    """An epcc.102 answer: asked (0201) -> PENDING_CODE when the SMS went out; confirmed
    (0202) -> SIGNED with SgnNo; a wrong code with tries left stays PENDING_CODE."""
    status, code, description = business(message)
    echoed = message.text("TrxInf/TrxId")
    bank = message.text("SgnInf/SgnAcctIssrId")
    if echoed != agreement_ref:
        raise ValueError("the answer is about another agreement")
    agreement_no = message.text("SgnInf/SgnNo")
    if status == wire.BIZ_SUCCESS and agreement_no and wire.is_id(agreement_no):
        state = AgreementState.SIGNED  # confirmed now, or asked again once signed
    elif status == wire.BIZ_SUCCESS and not confirming:
        state = AgreementState.PENDING_CODE
    elif status == wire.BIZ_FAILED:
        state = AgreementState.PENDING_CODE if code == WRONG_CODE else AgreementState.FAILED
    else:
        raise ValueError(f"an agreement answer with BizStsCd {status[:4]!r}")
    return AgreementResult(
        agreement_ref,
        state,
        agreement_no=agreement_no if state is AgreementState.SIGNED else None,
        masked_account=message.text("SgnInf/SgnAcctIdMsk"),
        bank=bank_code(bank) if bank else None,
        message=description,
        code=code,
    )
