"""What the Alipay sandbox does, independent of HTTP routing.

Verifies gateway requests, keeps trades as Alipay does (a precreated QR or a page pay is no trade
until the payer opens it), moves them with the clock (expiry, the end of the refund window),
queues notifies. Refunds are in ``refunds.py``, bills in ``bills.py``, the payer in ``payer.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from paygrid.channels.alipay import signing
from paygrid.channels.alipay.credentials import (
    GATEWAY_PATH,
    SandboxCredentials,
    load_or_create_sandbox_credentials,
)
from paygrid.channels.alipay.sandbox import bills, refunds
from paygrid.channels.alipay.sandbox import protocol as p
from paygrid.channels.alipay.sandbox.callbacks import MAX_ACTIVE, NotifySender
from paygrid.channels.alipay.sandbox.faults import FaultConfig, Faults
from paygrid.channels.alipay.sandbox.settings import SandboxSettings
from paygrid.channels.alipay.sandbox.store import Notification, Refund, Store, Trade

SWEEP_BATCH = 200


class AlipaySandbox:
    """State and behaviour of one sandbox; routes in app.py call these methods."""

    def __init__(self, data_dir: Path, public_base_url: str) -> None:
        self.public_base_url = public_base_url.rstrip("/")
        self.creds: SandboxCredentials = load_or_create_sandbox_credentials(data_dir)
        self.store = Store(data_dir)
        self._app_key = signing.load_public_key(self.creds.app_public_key)
        self.alipay_key = signing.load_private_key(self.creds.alipay_private_key)
        self._knobs_lock = threading.Lock()
        self._settings = SandboxSettings().updated(self._stored("settings", SandboxSettings))
        self.faults = Faults(FaultConfig().updated(self._stored("faults", FaultConfig)))
        self.sender = NotifySender(
            self.store,
            lambda: self.settings.retry_scale,
            sweep=self.sweep,
            in_order=lambda: self.faults.config.reorder,
        )

    def _stored(self, name: str, kind: type[SandboxSettings | FaultConfig]) -> dict[str, Any]:
        """Knobs saved by an earlier run; names this version does not know are ignored."""
        saved = self.store.get_setting(name)
        known = {f.name for f in fields(kind)}
        return {k: v for k, v in saved.items() if k in known} if isinstance(saved, dict) else {}

    def start(self) -> None:
        self.sender.start()

    def stop(self) -> None:
        self.sender.stop()
        self.store.close()

    @property
    def gateway_url(self) -> str:
        return self.public_base_url + GATEWAY_PATH

    def merchant_credentials(self) -> dict[str, str]:
        return self.creds.merchant_view(self.gateway_url)

    # --- knobs ------------------------------------------------------------------------------

    @property
    def settings(self) -> SandboxSettings:
        with self._knobs_lock:
            return self._settings

    def update_settings(self, changes: Mapping[str, object]) -> SandboxSettings:
        with self._knobs_lock:
            self._settings = self._settings.updated(changes)
            self.store.put_setting("settings", asdict(self._settings))
        self.sender.wake()
        return self.settings

    def update_faults(self, changes: Mapping[str, object] | None) -> FaultConfig:
        """Apply ``changes`` (None resets) and reseed, so the same faults replay the same way."""
        with self._knobs_lock:
            config = FaultConfig() if changes is None else self.faults.config.updated(changes)
            self.faults.set(config)
            self.store.put_setting("faults", asdict(config))
            return config

    # --- the gateway (gateway.do) -----------------------------------------------------------

    def authenticate(self, params: Mapping[str, str]) -> str:
        """Check the common parameters and the RSA2 signature; the method, or GatewayError."""
        method = p.check_common(params)
        if params["app_id"] != self.creds.app_id:
            raise p.invalid("isv.invalid-app-id", "无效的AppID参数")
        try:
            signing.verify_request(params, self._app_key)
        except signing.SignatureError as exc:
            content = signing.request_sign_content(params)
            raise p.invalid(
                "isv.invalid-signature",
                "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，"
                f"网关生成的验签字符串为：{content}",
            ) from exc
        return method

    def signed(self, method: str | None, node: Mapping[str, Any]) -> str:
        """The answer body: the node as compact JSON, signed over exactly that text."""
        known = method in p.SERVER_METHODS or method in p.BROWSER_METHODS
        name = signing.response_node_name(method) if known and method else signing.ERROR_NODE
        text = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        return signing.signed_response(name, text, self.alipay_key)

    def api(self, params: Mapping[str, str], base_url: str) -> str:
        """A server API call, answered (errors included) with a signed node."""
        method = params.get("method")
        try:
            method = self.authenticate(params)
            if method in p.BROWSER_METHODS:
                raise p.invalid("isv.invalid-method", "该方法须在浏览器中跳转调用")
            node = self._dispatch(method, params, base_url)
        except p.GatewayError as exc:
            return self.signed(method, exc.node())
        return self.signed(method, node)

    def _dispatch(self, method: str, params: Mapping[str, str], base_url: str) -> dict[str, Any]:
        biz = p.biz_content(params)
        now = time.time()
        if method == p.PRECREATE:
            trade = self._order("precreate", params, biz, now)
            qr_code = f"{self.public_base_url}/sandbox/qr/{trade.token}"
            return {"code": "10000", "msg": "Success", "out_trade_no": trade.out_trade_no,
                    "qr_code": qr_code}  # fmt: skip
        if method == p.QUERY:
            with self.store.transaction():
                return p.trade_node(self.trade_of(params["app_id"], biz, now))
        if method == p.CLOSE:
            return self._close(params["app_id"], biz, now)
        if method == p.REFUND:
            return refunds.refund(self, params["app_id"], biz, now)
        if method == p.REFUND_QUERY:
            return refunds.refund_query(self, params["app_id"], biz, now)
        return bills.download_url(self, params["app_id"], biz, base_url, now)

    # --- orders (预下单/电脑网站/手机网站支付) -------------------------------------------------

    def browser_order(self, params: Mapping[str, str]) -> Trade:
        """A page/wap pay request the browser brought: the trade waiting for the payer."""
        method = self.authenticate(params)
        if method not in p.BROWSER_METHODS:
            raise p.invalid("isv.invalid-method", "该方法须由服务端调用")
        return self._order(p.BROWSER_METHODS[method], params, p.biz_content(params), time.time())

    def _order(
        self, kind: str, params: Mapping[str, str], biz: Mapping[str, Any], now: float
    ) -> Trade:
        out_trade_no = p.required(biz, "out_trade_no", 64, p.OUT_NO)
        total = p.amount_field(biz, "total_amount")
        subject = p.required(biz, "subject", 256)
        product_code = p.text_field(biz, "product_code", 64)
        if product_code is not None and product_code not in p.PRODUCT_CODES[kind]:
            raise p.bad_param(f"product_code 应为 {p.PRODUCT_CODES[kind][0]}")
        seller_id = p.text_field(biz, "seller_id", 28)
        if seller_id is not None and seller_id != self.creds.seller_id:
            raise p.bad_param("seller_id 与应用的签约商户不一致")
        digest = hashlib.sha256(json.dumps([kind, total, subject]).encode()).hexdigest()
        with self.store.transaction():
            existing = self.store.get_trade(params["app_id"], out_trade_no)
            if existing is not None:
                return self._repeat(self.refresh(existing, now), digest, out_trade_no)
            trade = self._new_trade(kind, params, biz, (out_trade_no, total, subject, digest), now)
            self.store.insert_trade(trade)
            return trade

    def _repeat(self, trade: Trade, digest: str, out_trade_no: str) -> Trade:
        if trade.request_digest != digest:
            raise p.business(
                "ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改", out_trade_no=out_trade_no
            )
        if trade.status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            raise p.business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付", out_trade_no=out_trade_no)
        if trade.status in ("TRADE_CLOSED", "EXPIRED"):
            raise p.business("ACQ.TRADE_HAS_CLOSED", "交易已经关闭", out_trade_no=out_trade_no)
        return trade

    def _new_trade(
        self,
        kind: str,
        params: Mapping[str, str],
        biz: Mapping[str, Any],
        order: tuple[str, int, str, str],
        now: float,
    ) -> Trade:
        out_trade_no, total, subject, digest = order
        expire_at = p.expiry(biz, now)
        scan_until = min(expire_at, now + p.QR_SCAN_WINDOW.total_seconds())
        return Trade(
            app_id=params["app_id"],
            out_trade_no=out_trade_no,
            kind=kind,
            subject=subject,
            body=p.text_field(biz, "body", 128) or "",
            total=total,
            notify_url=_url(params.get("notify_url"), "notify_url"),
            return_url=_url(params.get("return_url"), "return_url"),
            passback_params=p.text_field(biz, "passback_params", 512) or "",
            store_id=p.text_field(biz, "store_id", 32) or "",
            request_digest=digest,
            token=p.new_token(),
            trade_no=p.new_trade_no(now),
            status="UNSCANNED",
            buyer_id="",
            buyer_logon_id="",
            expire_at=expire_at,
            scan_until=scan_until if kind == "precreate" else expire_at,
            requested_at=now,
            created_at=None,
            paid_at=None,
            closed_at=None,
            refunded=0,
            fee=0,
            updated_at=now,
        )

    # --- query and close (查询/关闭) ----------------------------------------------------------

    def trade_of(self, app_id: str, biz: Mapping[str, Any], now: float) -> Trade:
        """The trade named by ``trade_no`` (wins) or ``out_trade_no``; ACQ.TRADE_NOT_EXIST
        unless the payer has opened it. Call inside a transaction."""
        trade_no = p.text_field(biz, "trade_no", 64)
        out_trade_no = p.text_field(biz, "out_trade_no", 64)
        if trade_no is not None:
            trade = self.store.trade_by_trade_no(app_id, trade_no)
        elif out_trade_no is not None:
            trade = self.store.get_trade(app_id, out_trade_no)
        else:
            raise p.bad_param("trade_no 与 out_trade_no 不能同时为空")
        if trade is not None:
            trade = self.refresh(trade, now)
        if trade is None or trade.status not in p.VISIBLE:
            extra = {"out_trade_no": out_trade_no} if out_trade_no else {}
            raise p.business("ACQ.TRADE_NOT_EXIST", "交易不存在", **extra)
        return trade

    def _close(self, app_id: str, biz: Mapping[str, Any], now: float) -> dict[str, Any]:
        with self.store.transaction():
            trade = self.trade_of(app_id, biz, now)
            if trade.status != "WAIT_BUYER_PAY":
                raise p.business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            closed = trade.with_changes(status="TRADE_CLOSED", closed_at=now, updated_at=now)
            self.store.update_trade(closed)
            self.queue_notify(closed, now)
        self.sender.wake()
        return {"code": "10000", "msg": "Success", "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no}  # fmt: skip

    # --- the clock ----------------------------------------------------------------------------

    def refresh(self, trade: Trade, now: float) -> Trade:
        """``trade`` moved on by the clock: an unopened QR dies, an unpaid trade closes at its
        expiry, a paid one is TRADE_FINISHED after the refund window. Inside a transaction."""
        status = trade.status
        if status == "UNSCANNED" and now >= min(trade.expire_at, trade.scan_until):
            moved = trade.with_changes(status="EXPIRED", updated_at=now)
        elif status == "WAIT_BUYER_PAY" and now >= trade.expire_at:
            moved = trade.with_changes(status="TRADE_CLOSED", closed_at=now, updated_at=now)
        elif (
            status == "TRADE_SUCCESS"
            and trade.paid_at is not None
            and (now >= trade.paid_at + self.settings.refund_window_seconds)
        ):
            moved = trade.with_changes(status="TRADE_FINISHED", closed_at=now, updated_at=now)
        else:
            return trade
        self.store.update_trade(moved)
        if moved.status in p.VISIBLE:
            self.queue_notify(moved, now)
        return moved

    def sweep(self, now: float) -> None:
        finish_before = now - self.settings.refund_window_seconds
        with self.store.transaction():
            for trade in self.store.due_trades(now, finish_before, SWEEP_BATCH):
                self.refresh(trade, now)

    # --- notifies (异步通知) ------------------------------------------------------------------

    def queue_notify(self, trade: Trade, now: float, refund: Refund | None = None) -> list[str]:
        """Queue the notify of the trade's status (with faults); inside a transaction."""
        if not trade.notify_url:
            return []
        unsigned = p.notify_fields(trade, self.creds.seller_id, now, refund)
        form = signing.sign_notify(unsigned, self.alipay_key)
        body = urlencode(form).encode("ascii")
        config = self.faults.config
        dropped = self.store.active_notification_count() >= MAX_ACTIVE or self.faults.roll(
            config.drop_rate
        )
        copies = 2 if self.faults.roll(config.duplicate_rate) else 1
        state = "DROPPED" if dropped else ("HELD" if config.reorder else "PENDING")
        for _ in range(1 if dropped else copies):
            self.store.add_notification(
                Notification(
                    id=0,
                    notify_id=form["notify_id"],
                    app_id=trade.app_id,
                    out_trade_no=trade.out_trade_no,
                    trade_status=trade.status,
                    url=trade.notify_url,
                    body=body,
                    state=state,
                    attempts=0,
                    next_at=now + config.delay_ms / 1000,
                    created_at=now,
                    last_status=None,
                    last_answer=None,
                    last_error=None,
                )
            )
        return [form["notify_id"]]


def _url(value: str | None, name: str) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 256:
        raise p.bad_param(f"{name} 必须是可直接访问的 http(s) 地址")
    return value
