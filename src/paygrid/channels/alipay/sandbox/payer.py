"""The payer's side (沙箱付款), outside the protocol: scanning a QR or reaching the cashier
creates the trade (交易创建), paying it or failing, and the browser's way back to the merchant."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from paygrid.channels.alipay import signing
from paygrid.channels.alipay.sandbox import protocol as p
from paygrid.channels.alipay.sandbox.protocol import SandboxError
from paygrid.channels.alipay.sandbox.store import Trade
from paygrid.kernel.money import rate_fee

if TYPE_CHECKING:
    from paygrid.channels.alipay.sandbox.service import AlipaySandbox


def find_trade(sandbox: AlipaySandbox, payload: Mapping[str, Any]) -> Trade:
    """Named by ``qr_code``, ``token`` or ``app_id`` + ``out_trade_no``."""
    with sandbox.store.transaction():
        return sandbox.refresh(_lookup(sandbox, payload), time.time())


def _lookup(sandbox: AlipaySandbox, payload: Mapping[str, Any]) -> Trade:
    qr_code, token = payload.get("qr_code"), payload.get("token")
    if isinstance(qr_code, str) and qr_code:
        token = urlsplit(qr_code).path.rstrip("/").rsplit("/", 1)[-1]
    if isinstance(token, str) and token:
        trade = sandbox.store.trade_by_token(token)
    elif isinstance(payload.get("app_id"), str) and isinstance(payload.get("out_trade_no"), str):
        trade = sandbox.store.get_trade(payload["app_id"], payload["out_trade_no"])
    else:
        raise SandboxError(400, "PARAM_ERROR", "需要 qr_code，或 app_id 与 out_trade_no")
    if trade is None:
        raise SandboxError(404, "TRADE_NOT_EXIST", "交易不存在")
    return trade


def open_trade(sandbox: AlipaySandbox, payload: Mapping[str, Any]) -> Trade:
    """The payer scans the QR or reaches the cashier: now the trade exists (交易创建)."""
    with sandbox.store.transaction():
        trade = find_trade(sandbox, payload)
        if trade.status == "EXPIRED":
            raise SandboxError(410, "QR_CODE_EXPIRED", "二维码已失效")
        if trade.status != "UNSCANNED":
            return trade
        now = time.time()
        buyer_id, logon_id = p.new_buyer()
        opened = trade.with_changes(
            status="WAIT_BUYER_PAY",
            buyer_id=buyer_id,
            buyer_logon_id=logon_id,
            created_at=now,
            updated_at=now,
        )
        sandbox.store.update_trade(opened)
        return opened


def pay(sandbox: AlipaySandbox, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payer pays (SUCCESS) or fails (FAIL: the trade stays WAIT_BUYER_PAY)."""
    outcome = payload.get("outcome", "SUCCESS")
    if outcome not in ("SUCCESS", "FAIL"):
        raise SandboxError(400, "PARAM_ERROR", "outcome 只能是 SUCCESS 或 FAIL")
    notify_ids: list[str] = []
    with sandbox.store.transaction():
        trade = open_trade(sandbox, payload)
        if trade.status in ("TRADE_CLOSED", "TRADE_FINISHED") and trade.paid_at is None:
            raise SandboxError(409, "TRADE_CLOSED", "交易已关闭")
        if trade.status == "WAIT_BUYER_PAY" and outcome == "SUCCESS":
            now = time.time()
            fee = rate_fee(trade.total, sandbox.settings.fee_rate_ppm)
            trade = trade.with_changes(status="TRADE_SUCCESS", paid_at=now, fee=fee, updated_at=now)
            sandbox.store.update_trade(trade)
            notify_ids = sandbox.queue_notify(trade, now)
    sandbox.sender.wake()
    return {
        "trade": {**p.trade_node(trade), "kind": trade.kind},
        "notify_ids": notify_ids,
        "return_url": return_url(sandbox, trade),
    }


def return_url(sandbox: AlipaySandbox, trade: Trade) -> str | None:
    """Where the browser goes back after paying (page/wap pay): ``return_url`` + the
    signed return parameters; None when unpaid or without a return_url."""
    if trade.paid_at is None or not trade.return_url or trade.kind == "precreate":
        return None
    unsigned = p.return_params(trade, sandbox.creds.seller_id, time.time())
    signed = signing.sign_notify(unsigned, sandbox.alipay_key)
    joiner = "&" if "?" in trade.return_url else "?"
    return f"{trade.return_url}{joiner}{urlencode(signed)}"
