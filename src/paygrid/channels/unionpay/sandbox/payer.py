"""The payer's side (沙箱付款), outside the protocol: the pay page a front consume lands on (or
the QR code opens), paying or failing, and the browser's way back to ``frontUrl``.

A payment notifies ``backUrl`` (UnionPay notifies successes only: a declined card leaves the
consume FAILED, origRespCode 01, which only a query tells) and hands the browser a signed
form to post to ``frontUrl`` (前台通知).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from paygrid.channels.unionpay.parsing import ref_of
from paygrid.channels.unionpay.sandbox import protocol as p
from paygrid.channels.unionpay.sandbox.protocol import SandboxError
from paygrid.channels.unionpay.sandbox.store import Consume
from paygrid.kernel.money import rate_fee

if TYPE_CHECKING:
    from paygrid.channels.unionpay.sandbox.service import UnionPaySandbox

FAILED_CODE = "01"  # 交易失败: the payer's bank declined


def find(sandbox: UnionPaySandbox, payload: Mapping[str, Any]) -> Consume:
    """Named by ``qrCode``, ``token``, ``form`` (the signed front form, posted now on the
    browser's behalf) or ``orderId`` + ``txnTime``."""
    form, qr_code, token = payload.get("form"), payload.get("qrCode"), payload.get("token")
    found: Consume | None
    if isinstance(form, dict):
        return front(sandbox, {str(k): str(v) for k, v in form.items()})
    if isinstance(qr_code, str) and qr_code:
        token = urlsplit(qr_code).path.rstrip("/").rsplit("/", 1)[-1]
    if isinstance(token, str) and token:
        found = sandbox.store.consume_by("token", token)
    elif isinstance(payload.get("orderId"), str) and isinstance(payload.get("txnTime"), str):
        mer_id = sandbox.creds.mer_id
        found = sandbox.store.get_consume(mer_id, payload["orderId"], payload["txnTime"])
    else:
        raise SandboxError(400, "PARAM_ERROR", "需要 qrCode、token、form，或 orderId 与 txnTime")
    if found is None:
        raise SandboxError(404, "TRADE_NOT_EXIST", "交易不存在")
    return found


def front(sandbox: UnionPaySandbox, form: Mapping[str, str]) -> Consume:
    """The browser posts the signed front consume (frontTransReq.do)."""
    try:
        sandbox.authenticate(form)
        return sandbox.order("front", form, time.time())
    except p.AcpError as exc:
        raise SandboxError(400, exc.code, exc.message) from exc


def pay(sandbox: UnionPaySandbox, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payer pays (SUCCESS) or the bank declines (FAIL); a consume already decided stays
    as it is; past payTimeout nothing is taken."""
    outcome = payload.get("outcome", "SUCCESS")
    if outcome not in ("SUCCESS", "FAIL"):
        raise SandboxError(400, "PARAM_ERROR", "outcome 只能是 SUCCESS 或 FAIL")
    with sandbox.store.transaction():
        consume = find(sandbox, payload)
        now = time.time()
        if consume.status == "UNPAID":
            if now >= consume.pay_timeout:
                raise SandboxError(409, "PAY_TIMEOUT", "交易已超过支付时间")
            consume = _decided(sandbox, consume, outcome, now)
    sandbox.sender.wake()
    return {
        "order": order_view(consume),
        "front_post": front_post(sandbox, consume),
    }


def _decided(sandbox: UnionPaySandbox, consume: Consume, outcome: str, now: float) -> Consume:
    if outcome == "FAIL":
        failed = consume.with_changes(status="FAILED", result_code=FAILED_CODE, updated_at=now)
        sandbox.store.update_consume(failed)
        return failed
    paid = consume.with_changes(
        status="PAID",
        result_code="00",
        paid_at=now,
        acc_no=p.masked_card(),
        fee=rate_fee(consume.amount, sandbox.settings.fee_rate_ppm),
        updated_at=now,
    )
    sandbox.store.update_consume(paid)
    sandbox.queue_notify(paid.back_url, p.consume_notification(paid), now)
    return paid


def front_post(sandbox: UnionPaySandbox, consume: Consume) -> dict[str, Any] | None:
    """The signed result the browser posts to ``frontUrl`` (前台通知), once decided."""
    if consume.kind != "front" or not consume.front_url or consume.status == "UNPAID":
        return None
    fields = p.consume_notification(consume)
    if consume.status == "FAILED":
        fields.update(respCode=consume.result_code, respMsg=p.MESSAGES["01"])
    return {"url": consume.front_url, "fields": sandbox.signed(fields)}


# /sandbox/orders' trade_state: UNPAID (issued or posted, not paid), PAID (refunds or not:
# see ``refunded``), FAILED; EXPIRED an unpaid one past its payTimeout.
def order_view(c: Consume, now: float | None = None) -> dict[str, Any]:
    at = time.time() if now is None else now
    state = "EXPIRED" if c.status == "UNPAID" and at >= c.pay_timeout else c.status
    return {
        "mer_id": c.mer_id,
        "out_trade_no": ref_of(c.order_id) or c.order_id,  # paygrid's ref (parsing.py)
        "order_id": c.order_id,
        "txn_time": c.txn_time,
        "kind": c.kind,
        "trade_state": state,
        "total": c.amount,
        "refunded": c.refunded,
        "query_id": c.query_id,
        "fee": c.fee,
        "token": c.token,
        "pay_timeout": c.pay_timeout,
        "paid_at": c.paid_at,
    }
