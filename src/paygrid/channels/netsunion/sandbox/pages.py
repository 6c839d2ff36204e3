"""Gateway orders (网关支付, MODELLED) at the platform and the payer's side of them.

- epcc.211 registers an order (idempotent on TrxId: the same content answers the same order and
  page token; other content is NU4009) for one payer bank, with a page token and an expiry
  (``TrxExpDtTm``, else ``page_ttl_seconds``); the answer carries the bank page's URL and the
  platform-signed page fields (``paygrid.channels.netsunion.page``).
- The payer pays or fails at the bank's page (``bankpage.py``) or, without a browser, by
  ``POST /sandbox/pay``; a payment is declined at the ``decline_rate`` fault of its bank. The
  result is notified (epcc.711) as a debit's is.
- epcc.213 closes an unpaid order; an order also closes when it expires unpaid (the sweep). A
  closed order's page refuses it. States: ``trades.MOVES``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from paygrid.channels.netsunion import page, wire
from paygrid.channels.netsunion.banks import bank_code
from paygrid.channels.netsunion.sandbox import protocol as p
from paygrid.channels.netsunion.sandbox import trades
from paygrid.channels.netsunion.sandbox.store import Trade

if TYPE_CHECKING:
    from paygrid.channels.netsunion.sandbox.service import NetsUnionSandbox

PAGE_PATH = "/bank/{bank_id}/gateway"  # the bank's pay page (the form's target)
MAX_PAGE_TTL_S = 7 * 86_400  # TrxExpDtTm at most a week ahead (MODELLED)
TOKEN_BYTES = 24


def handle(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    if message.msg_tp == wire.GATEWAY:
        return create(sandbox, message, now)
    return close(sandbox, message, now)


def create(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    ref = p.trx_id(message, "TrxInf/TrxId")
    bank_id = p.required(message, "PyerInf/PyerAcctIssrId", 14)
    amount = p.amount(message, "TrxInf/TrxAmt")
    if message.text("TrxInf/TrxCtgy") != wire.DEBIT_CATEGORY:
        raise p.bad("TrxCtgy 须为 0101")
    notify_url = p.url(message, "TrxInf/NtfyUrl")
    return_url = p.url(message, "TrxInf/RtrnUrl")
    asked = p.when(message, "TrxInf/TrxExpDtTm")
    if asked is not None and not now < asked <= now + MAX_PAGE_TTL_S:
        raise p.bad("TrxExpDtTm 须晚于当前时间且不超过 7 天")
    expires = asked if asked is not None else now + sandbox.settings.page_ttl_seconds
    description = (message.text("OrdrInf/OrdrDesc") or "")[: p.MAX_DESCRIPTION_CHARS]
    digest = trades.request_digest(p.PAGE_KIND, bank_id, amount, asked, return_url)
    echo = {"TrxInf": {"TrxId": ref}}
    with sandbox.store.transaction():
        found = sandbox.store.get_trade(sandbox.member_id, ref)
        if found is not None:
            if found.kind != p.PAGE_KIND or found.request_digest != digest:
                raise p.BusinessRefusal(p.CONFLICT, "TrxId 重复且信息不一致", echo)
            return answer(sandbox, expire_if_due(sandbox, found, now))
        if bank_code(bank_id) is None:
            raise p.BusinessRefusal(p.BANK_UNKNOWN, "付款行不存在", echo)
        trade = Trade(
            sandbox.member_id, ref, p.PAGE_KIND, "", "", bank_id, amount, 0, 0,
            wire.BIZ_PROCESSING, "", p.new_number("NU", now), notify_url, description, digest,
            now, expires, None, "", token=secrets.token_urlsafe(TOKEN_BYTES),
            return_url=return_url, expires_at=expires,
        )  # fmt: skip
        sandbox.store.insert_trade(trade)
    return answer(sandbox, trade)


def answer(sandbox: NetsUnionSandbox, trade: Trade) -> wire.Node:
    """The epcc.212 body: the order as it stands and its page."""
    signed = page.sign_fields(sandbox.keys, page_fields(sandbox, trade))
    info = {
        "PageUrl": page_url(sandbox, trade.bank_id),
        **{k: signed[k] for k in ("Tkn", "TrxExpDtTm", "SignSN", page.SIGNATURE_FIELD)},
    }
    return {**trades.answer(sandbox, trade), "PageInf": info}


def page_fields(sandbox: NetsUnionSandbox, trade: Trade) -> dict[str, str]:
    return {
        "IssrId": sandbox.creds.platform_id,
        "InstgId": trade.instg_id,
        "PyerAcctIssrId": trade.bank_id,
        "TrxId": trade.trx_id,
        "TrxAmt": wire.amount_text(trade.amount),
        "TrxExpDtTm": p.beijing(trade.expires_at) or "",
        "Tkn": trade.token,
        "SignSN": sandbox.creds.platform_cert_sn,
    }


def page_url(sandbox: NetsUnionSandbox, bank_id: str) -> str:
    return sandbox.public_base_url + PAGE_PATH.format(bank_id=bank_id)


def close(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    """epcc.213: an unpaid order closes; any other answers as it stands (paid, failed)."""
    ref = p.trx_id(message, "OriTrxInf/OriTrxId")
    echo = {"OriTrxInf": {"TrxId": ref}}
    with sandbox.store.transaction():
        found = sandbox.store.get_trade(sandbox.member_id, ref)
        if found is None:
            raise p.BusinessRefusal(p.NOT_FOUND, "原交易不存在", echo)
        if found.kind != p.PAGE_KIND:
            raise p.BusinessRefusal(p.NOT_CLOSABLE, "仅未支付的网关支付订单可关闭", echo)
        closed = trades.decide(sandbox, found, "CLOSE", now)
    return {"BizInf": {"BizStsCd": wire.BIZ_SUCCESS}, "OriTrxInf": p.trade_block(sandbox, closed)}


def expire_if_due(sandbox: NetsUnionSandbox, trade: Trade, now: float) -> Trade:
    """An unpaid order past its expiry closes now (the sweep may not have come by yet)."""
    due = trade.expires_at is not None and now >= trade.expires_at
    if trade.kind == p.PAGE_KIND and trade.status == wire.BIZ_PROCESSING and due:
        return trades.decide(sandbox, trade, "CLOSE", now)
    return trade


# --- the payer's side ---------------------------------------------------------------------------


def by_token(sandbox: NetsUnionSandbox, token: str, now: float) -> Trade:
    with sandbox.store.transaction():
        trade = sandbox.store.trade_by_token(token) if token else None
        if trade is None or trade.kind != p.PAGE_KIND:
            raise p.SandboxError(404, "TOKEN_UNKNOWN", "支付令牌无效：订单不存在")
        return expire_if_due(sandbox, trade, now)


def verified_form(
    sandbox: NetsUnionSandbox, bank_id: str, form: Mapping[str, str], now: float
) -> Trade:
    """The order a browser's POST of the page fields is for: the platform's signature, its
    ids, and the order behind the token must all agree; else a SandboxError (400/404)."""
    if not page.verify_fields(sandbox.keys.public, form):
        raise p.SandboxError(400, "SIGNATURE_INVALID", "支付请求验签失败或字段不全")
    ours = (sandbox.creds.platform_id, sandbox.creds.platform_cert_sn, sandbox.member_id, bank_id)
    if (form["IssrId"], form["SignSN"], form["InstgId"], form["PyerAcctIssrId"]) != ours:
        raise p.SandboxError(400, "PARAM_ERROR", "支付请求不属于本行或本机构")
    trade = by_token(sandbox, form["Tkn"], now)
    if page_fields(sandbox, trade) != {k: form[k] for k in page.PAGE_FIELDS}:
        raise p.SandboxError(400, "PARAM_ERROR", "支付请求与订单不符")
    return trade


def refusal(trade: Trade) -> p.SandboxError | None:
    """Why the order cannot be paid now; None while it can."""
    if trade.status == wire.TRX_CLOSED:
        return p.SandboxError(410, "ORDER_CLOSED", "订单已关闭或已超时，无法支付")
    if trade.status == wire.BIZ_SUCCESS:
        return p.SandboxError(409, "ORDER_PAID", "订单已支付")
    if trade.status == wire.BIZ_FAILED:
        return p.SandboxError(409, "ORDER_FAILED", "订单支付失败，请回到商户重新下单")
    return None


def pay_order(sandbox: NetsUnionSandbox, trade: Trade, outcome: str, now: float) -> Trade:
    """The payer pays (SUCCESS; the bank may still decline) or fails (FAIL). Inside a
    transaction; SandboxError when the order cannot be paid."""
    trade = expire_if_due(sandbox, trade, now)
    refused = refusal(trade)
    if refused is not None:
        raise refused
    config = sandbox.faults.config
    declined = outcome == "SUCCESS" and sandbox.faults.roll(config.decline_rate, trade.bank_id)
    return trades.decide(sandbox, trade, "FAIL" if declined else outcome, now)


def return_url(trade: Trade) -> str | None:
    """Where the page sends the payer back once the order is decided (MODELLED: TrxId and
    TrxStatus added, unsigned: the result is the notification's or the query's, never this)."""
    if not trade.return_url or trade.status == wire.BIZ_PROCESSING:
        return None
    joiner = "&" if "?" in trade.return_url else "?"
    query = urlencode({"TrxId": trade.trx_id, "TrxStatus": trade.status})
    return f"{trade.return_url}{joiner}{query}"


def pay(sandbox: NetsUnionSandbox, payload: Mapping[str, Any], now: float) -> Trade:
    """``POST /sandbox/pay``: a debit decided now, or a gateway order paid (or failed) as its
    payer would at the page."""
    outcome = payload.get("outcome", "SUCCESS")
    if outcome not in trades.OUTCOMES:
        raise p.SandboxError(400, "PARAM_ERROR", "outcome 只能是 SUCCESS 或 FAIL")
    ref = payload.get("out_trade_no") or payload.get("trx_id")
    if not isinstance(ref, str) or not ref:
        raise p.SandboxError(400, "PARAM_ERROR", "需要 out_trade_no（扣款或网关订单的 TrxId）")
    with sandbox.store.transaction():
        trade = sandbox.store.get_trade(sandbox.member_id, ref)
        if trade is None or trade.kind not in p.PAYMENT_KINDS:
            raise p.SandboxError(404, "TRADE_NOT_EXIST", "扣款或订单不存在")
        if trade.kind == p.PAGE_KIND:
            decided = pay_order(sandbox, trade, outcome, now)
        else:
            decided = trades.decide(sandbox, trade, outcome, now)
    sandbox.sender.wake()
    return decided
