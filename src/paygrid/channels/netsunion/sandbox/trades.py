"""Debits (协议支付, epcc.201), refunds (epcc.301) and queries (epcc.411) at the platform, and
the banks deciding them (gateway orders too: their creation and close are in ``pages.py``).

A debit is answered "processing" (02): the payer's bank decides it ``debit_delay_ms`` later
(declining at the ``decline_rate`` fault for its bank), or, with ``debits_wait``, only when
``POST /sandbox/pay`` gives the outcome. A refund is credited ``refund_delay_ms`` later. Each
decision is notified (epcc.711). Idempotent on the member's TrxId: the same TrxId with the
same content answers the trade as it stands; with other content it is refused (NU4009).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from paygrid.channels.netsunion import wire
from paygrid.channels.netsunion.sandbox import agreements
from paygrid.channels.netsunion.sandbox import protocol as p
from paygrid.channels.netsunion.sandbox.clearing import batch_of
from paygrid.channels.netsunion.sandbox.store import Trade
from paygrid.kernel.money import rate_fee

if TYPE_CHECKING:
    from paygrid.channels.netsunion.sandbox.service import NetsUnionSandbox


def handle(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    if message.msg_tp == wire.DEBIT:
        return debit(sandbox, message, now)
    if message.msg_tp == wire.REFUND:
        return refund(sandbox, message, now)
    return query(sandbox, message)


# The state table of trades (TrxStatus): what moves one out of 02 (processing); 00, 01 and 03
# are final. A refund is only credited.
MOVES: Mapping[tuple[str, str], str] = {
    (p.DEBIT_KIND, "SUCCESS"): wire.BIZ_SUCCESS,  # the bank debited the payer
    (p.DEBIT_KIND, "FAIL"): wire.BIZ_FAILED,  # the bank declined
    (p.PAGE_KIND, "SUCCESS"): wire.BIZ_SUCCESS,  # paid at the bank's page
    (p.PAGE_KIND, "FAIL"): wire.BIZ_FAILED,  # failed at the page, or the bank declined
    (p.PAGE_KIND, "CLOSE"): wire.TRX_CLOSED,  # closed by the member (epcc.213) or expired
    (p.REFUND_KIND, "SUCCESS"): wire.BIZ_SUCCESS,  # credited
}
OUTCOMES = ("SUCCESS", "FAIL")  # what /sandbox/pay and the bank page may say


def _fee_share(fee: int, refunded: int, total: int) -> int:
    return (2 * fee * refunded + total) // (2 * total)


def request_digest(*values: object) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


def answer(sandbox: NetsUnionSandbox, trade: Trade) -> wire.Node:
    status = wire.BIZ_FAILED if trade.status == wire.BIZ_FAILED else wire.BIZ_SUCCESS
    if trade.status == wire.BIZ_PROCESSING:
        status = wire.BIZ_PROCESSING
    biz: dict[str, str] = {"BizStsCd": status}
    if trade.failure:
        biz.update(BizRtnCd=trade.failure, BizRtnDesc="付款行拒绝：余额不足")
    return {"BizInf": biz, "TrxInf": p.trade_block(sandbox, trade)}


def _repeat(sandbox: NetsUnionSandbox, found: Trade, kind: str, digest: str) -> wire.Node:
    if found.kind != kind or found.request_digest != digest:
        echo = {"TrxInf": {"TrxId": found.trx_id}}
        raise p.BusinessRefusal(p.CONFLICT, "TrxId 重复且信息不一致", echo)
    return answer(sandbox, found)


def debit(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    ref = p.trx_id(message, "TrxInf/TrxId")
    bank_id = p.required(message, "PyerInf/PyerAcctIssrId", 14)
    sgn_no = p.trx_id(message, "PyerInf/SgnNo")
    amount = p.amount(message, "TrxInf/TrxAmt")
    if message.text("TrxInf/TrxCtgy") != wire.DEBIT_CATEGORY:
        raise p.bad("TrxCtgy 须为 0101")
    notify_url = p.url(message, "TrxInf/NtfyUrl")
    description = (message.text("OrdrInf/OrdrDesc") or "")[: p.MAX_DESCRIPTION_CHARS]
    digest = request_digest(sgn_no, bank_id, amount)
    echo = {"TrxInf": {"TrxId": ref}}
    with sandbox.store.transaction():
        found = sandbox.store.get_trade(sandbox.member_id, ref)
        if found is not None:
            return _repeat(sandbox, found, p.DEBIT_KIND, digest)
        agreement = sandbox.store.agreement_by_sgn_no(sandbox.member_id, sgn_no)
        if agreement is None or agreement.state != agreements.SIGNED:
            raise p.BusinessRefusal(p.NO_AGREEMENT, "协议不存在或未生效", echo)
        if agreement.bank_id != bank_id:
            raise p.BusinessRefusal(p.AGREEMENT_BANK, "付款行与协议不符", echo)
        settings = sandbox.settings
        due = None if settings.debits_wait else now + settings.debit_delay_ms / 1000
        trade = Trade(
            sandbox.member_id, ref, p.DEBIT_KIND, "", sgn_no, bank_id, amount, 0, 0,
            wire.BIZ_PROCESSING, "", p.new_number("NU", now), notify_url, description, digest,
            now, due, None, "",
        )  # fmt: skip
        sandbox.store.insert_trade(trade)
    return answer(sandbox, trade)


def refund(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    ref = p.trx_id(message, "TrxInf/TrxId")
    ori = p.trx_id(message, "OriTrxInf/OriTrxId")
    amount = p.amount(message, "TrxInf/TrxAmt")
    if message.text("TrxInf/TrxCtgy") != wire.REFUND_CATEGORY:
        raise p.bad("TrxCtgy 须为 0301")
    notify_url = p.url(message, "TrxInf/NtfyUrl")
    digest = request_digest(ori, amount)
    echo = {"TrxInf": {"TrxId": ref}}
    with sandbox.store.transaction():
        found = sandbox.store.get_trade(sandbox.member_id, ref)
        if found is not None:
            return _repeat(sandbox, found, p.REFUND_KIND, digest)
        paid = sandbox.store.get_trade(sandbox.member_id, ori)
        if paid is None or paid.kind not in p.PAYMENT_KINDS:
            raise p.BusinessRefusal(p.NOT_FOUND, "原交易不存在", echo)
        if paid.status != wire.BIZ_SUCCESS or paid.finished_at is None:
            raise p.BusinessRefusal(p.NOT_REFUNDABLE, "原交易未成功", echo)
        if now > paid.finished_at + sandbox.settings.refund_window_seconds:
            raise p.BusinessRefusal(p.REFUND_TOO_LATE, "已超过退款期限", echo)
        if amount > paid.amount - paid.refunded:
            raise p.BusinessRefusal(p.REFUND_TOO_MUCH, "退款金额超过可退金额", echo)
        after = paid.refunded + amount
        # Pro rata, rounded half up on the running total (as paygrid's ledger books it): a
        # floor left a fen in pending clearing on refund days; all of the fee at the end.
        fee_back = _fee_share(paid.fee, after, paid.amount) - _fee_share(
            paid.fee, paid.refunded, paid.amount
        )
        sandbox.store.update_trade(paid.with_changes(refunded=after))
        trade = Trade(
            sandbox.member_id, ref, p.REFUND_KIND, ori, paid.sgn_no, paid.bank_id, amount, 0,
            fee_back, wire.BIZ_PROCESSING, "", p.new_number("NR", now), notify_url,
            (message.text("TrxInf/Rsn") or "")[: p.MAX_DESCRIPTION_CHARS], digest, now,
            now + sandbox.settings.refund_delay_ms / 1000, None, "",
        )  # fmt: skip
        sandbox.store.insert_trade(trade)
    return answer(sandbox, trade)


def query(sandbox: NetsUnionSandbox, message: wire.Message) -> wire.Node:
    ref = p.trx_id(message, "OriTrxInf/OriTrxId")
    found = sandbox.store.get_trade(sandbox.member_id, ref)
    if found is None:
        raise p.BusinessRefusal(p.NOT_FOUND, "原交易不存在", {"OriTrxInf": {"TrxId": ref}})
    return {"BizInf": {"BizStsCd": wire.BIZ_SUCCESS}, "OriTrxInf": p.trade_block(sandbox, found)}


def decide(sandbox: NetsUnionSandbox, trade: Trade, outcome: str | None, now: float) -> Trade:
    """The move of a processing trade (``outcome`` SUCCESS | FAIL | CLOSE; None: what its due
    time brings), by :data:`MOVES`; a payment's result is notified. Inside a transaction."""
    if trade.status != wire.BIZ_PROCESSING:
        return trade
    event = outcome or _due_event(sandbox, trade)
    status = MOVES.get((trade.kind, event))
    if status is None:
        raise ValueError(f"a {trade.kind} trade cannot {event}")
    if status == wire.BIZ_FAILED:
        moved = trade.with_changes(status=status, failure=p.DECLINED, finished_at=now, due_at=None)
    elif status == wire.TRX_CLOSED:
        moved = trade.with_changes(status=status, finished_at=now, due_at=None)
    else:
        fee = rate_fee(trade.amount, sandbox.settings.fee_rate_ppm)
        _, batch = batch_of(now, sandbox.settings.batches_per_day)
        moved = trade.with_changes(
            status=status, finished_at=now, due_at=None, batch_id=batch,
            fee=fee if trade.kind in p.PAYMENT_KINDS else trade.fee,
        )  # fmt: skip
    sandbox.store.update_trade(moved)
    if status != wire.TRX_CLOSED:  # a close is the member's own doing: not notified
        sandbox.queue_notify(moved, now)
    return moved


def _due_event(sandbox: NetsUnionSandbox, trade: Trade) -> str:
    """What a trade's due time brings: a gateway order expires unpaid; the bank decides a
    debit (declining at the decline fault); a refund is credited."""
    if trade.kind == p.PAGE_KIND:
        return "CLOSE"
    config = sandbox.faults.config
    if trade.kind == p.DEBIT_KIND and sandbox.faults.roll(config.decline_rate, trade.bank_id):
        return "FAIL"
    return "SUCCESS"
