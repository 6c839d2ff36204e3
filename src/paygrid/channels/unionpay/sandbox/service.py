"""What the UnionPay sandbox does, independent of HTTP routing.

Verifies requests (the merchant's certificate: ``certId``, then the signature), keeps consumes
as UnionPay does (a front consume exists once the payer's browser posts its form; a QR
consume once issued), answers queries, signs every answer and notification with UnionPay's
signing certificate (``signPubKeyCert``), queues notifications. Refunds and revokes are in
``refunds.py``, the reconciliation file in ``bills.py``, the payer in ``payer.py``.
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
from urllib.parse import urlencode

from paygrid.channels.unionpay import signing
from paygrid.channels.unionpay.credentials import (
    SandboxCredentials,
    gateway_urls,
    load_or_create_sandbox_credentials,
)
from paygrid.channels.unionpay.sandbox import bills, refunds
from paygrid.channels.unionpay.sandbox import protocol as p
from paygrid.channels.unionpay.sandbox.callbacks import MAX_ACTIVE, NotifySender
from paygrid.channels.unionpay.sandbox.faults import FaultConfig, Faults
from paygrid.channels.unionpay.sandbox.settings import SandboxSettings
from paygrid.channels.unionpay.sandbox.store import Consume, Notification, Store

DEFAULT_PAY_WINDOW_SECONDS = 86_400  # without payTimeout, a consume is payable a day
KINDS = {"front": ("01", p.GATEWAY_BIZ), "qr": ("07", p.QUERY_BIZ)}  # txnSubType, bizType


class UnionPaySandbox:
    """State and behaviour of one sandbox; routes in app.py call these methods."""

    def __init__(self, data_dir: Path, public_base_url: str) -> None:
        self.public_base_url = public_base_url.rstrip("/")
        self.creds: SandboxCredentials = load_or_create_sandbox_credentials(data_dir)
        self.store = Store(data_dir)
        merchant_cert = signing.load_cert(self.creds.sign_cert)
        self._merchant_key = signing.rsa_public_key(merchant_cert)
        self._merchant_cert_id = signing.cert_id(merchant_cert)
        self._key = signing.load_private_key(self.creds.unionpay_sign_key)
        self._knobs_lock = threading.Lock()
        self._settings = SandboxSettings().updated(self._stored("settings", SandboxSettings))
        self.faults = Faults(FaultConfig().updated(self._stored("faults", FaultConfig)))
        self.sender = NotifySender(
            self.store,
            lambda: self.settings.retry_scale,
            in_order=lambda: self.faults.config.reorder,
        )

    def _stored(self, name: str, kind: type[SandboxSettings | FaultConfig]) -> dict[str, Any]:
        saved = self.store.get_setting(name)
        known = {f.name for f in fields(kind)}
        return {k: v for k, v in saved.items() if k in known} if isinstance(saved, dict) else {}

    def start(self) -> None:
        self.sender.start()

    def stop(self) -> None:
        self.sender.stop()
        self.store.close()

    def merchant_credentials(self) -> dict[str, str]:
        return self.creds.merchant_view(self.public_base_url)

    @property
    def urls(self) -> dict[str, str]:
        return gateway_urls(self.public_base_url)

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
        with self._knobs_lock:
            config = FaultConfig() if changes is None else self.faults.config.updated(changes)
            self.faults.set(config)
            self.store.put_setting("faults", asdict(config))
            return config

    # --- signatures -------------------------------------------------------------------------

    def authenticate(self, form: Mapping[str, str]) -> None:
        """Common fields, our merchant, its certificate (certId), its signature; AcpError."""
        p.check_common(form)
        if form["merId"] != self.creds.mer_id:
            raise p.AcpError("31", "merId")
        if form["certId"] != self._merchant_cert_id:
            raise p.AcpError("11", "certId")
        if not signing.verify(form, self._merchant_key):
            raise p.AcpError("11")

    def signed(self, unsigned: Mapping[str, str]) -> dict[str, str]:
        return signing.sign_answer(unsigned, self._key, self.creds.unionpay_sign_cert)

    def answer_text(self, unsigned: Mapping[str, str]) -> str:
        return signing.format_kv(self.signed(unsigned))

    def handle(self, kind: str, form: Mapping[str, str]) -> str:
        """A back-end request (``back``, ``query`` or ``file``), answered signed, errors too."""
        try:
            self.authenticate(form)
            fields_ = self._dispatch(kind, form)
        except p.AcpError as exc:
            fields_ = p.answer(form, exc.code, exc.message)
        return self.answer_text(fields_)

    def _dispatch(self, kind: str, form: Mapping[str, str]) -> dict[str, str]:
        txn_type = form["txnType"]
        now = time.time()
        if kind == "query":
            if txn_type != p.QUERY:
                raise p.AcpError("32", "txnType")
            return self.query(form)
        if kind == "file":
            if txn_type != p.FILE_TRANSFER:
                raise p.AcpError("32", "txnType")
            return bills.file_transfer(self, form, now)
        if txn_type == p.CONSUME:
            consume = self.order("qr", form, now)
            qr_code = f"{self.public_base_url}/sandbox/qr/{consume.token}"
            return {**p.answer(form, "00"), "qrCode": qr_code}
        if txn_type in (p.REFUND, p.REVOKE):
            return refunds.back(self, form, now)
        raise p.AcpError("32", "txnType")

    # --- consumes (消费) ----------------------------------------------------------------------

    def order(self, kind: str, form: Mapping[str, str], now: float) -> Consume:
        """A front consume the browser posted, or a QR consume: the consume, created once per
        orderId + txnTime (the same again is the same consume; another order under them 12)."""
        sub_type, biz_type = KINDS[kind]
        if form["txnType"] != p.CONSUME or form.get("txnSubType") != sub_type:
            raise p.AcpError("32", "txnSubType")
        if form.get("bizType") != biz_type:
            raise p.AcpError("32", "bizType")
        order_id = p.required(form, "orderId", p.ORDER_ID)
        txn_time = p.txn_time(form)
        amount = p.amount(form)
        channel_type = form.get("channelType", "")
        if channel_type not in ("07", "08"):
            raise p.AcpError("10", "channelType")
        back_url = p.url_field(form, "backUrl", needed=True)
        digest = hashlib.sha256(json.dumps([kind, amount, channel_type]).encode()).hexdigest()
        with self.store.transaction():
            existing = self.store.get_consume(self.creds.mer_id, order_id, txn_time)
            taken = self.store.get_back(self.creds.mer_id, order_id, txn_time)
            if taken is not None or (existing and existing.request_digest != digest):
                raise p.AcpError("12")
            if existing is not None:
                return existing
            consume = Consume(
                mer_id=self.creds.mer_id,
                order_id=order_id,
                txn_time=txn_time,
                kind=kind,
                channel_type=channel_type,
                amount=amount,
                back_url=back_url,
                front_url=p.url_field(form, "frontUrl", needed=False),
                iss_ins_code=form.get("issInsCode", "")[:11],
                pay_timeout=self._pay_timeout(form, now),
                request_digest=digest,
                token=p.new_token(),
                query_id=p.new_query_id(now),
                status="UNPAID",
                result_code="",
                trace_no=p.new_trace_no(),
                acc_no="",
                requested_at=now,
                paid_at=None,
                refunded=0,
                fee=0,
                updated_at=now,
            )
            self.store.insert_consume(consume)
            return consume

    def _pay_timeout(self, form: Mapping[str, str], now: float) -> float:
        text = form.get("payTimeout", "")
        if not text:
            return now + DEFAULT_PAY_WINDOW_SECONDS
        at = p.parse_time(text)
        if at is None:
            raise p.AcpError("10", "payTimeout")
        if at.timestamp() <= now:
            raise p.AcpError("39", "payTimeout")
        return at.timestamp()

    # --- query (交易状态查询) ---------------------------------------------------------------

    def query(self, form: Mapping[str, str]) -> dict[str, str]:
        """A consume, refund or revoke by orderId + txnTime; 34 for none, or a consume not
        paid (yet): UnionPay has nothing to say of it."""
        order_id = p.required(form, "orderId", p.ORDER_ID)
        txn_time = p.txn_time(form)
        consume = self.store.get_consume(self.creds.mer_id, order_id, txn_time)
        if consume is not None and consume.status != "UNPAID":
            code = "00" if consume.status == "PAID" else consume.result_code
            return {
                **p.answer(form, "00"),
                **p.consume_fields(consume),
                "origRespCode": code,
                "origRespMsg": p.MESSAGES.get(code, "交易失败"),
            }
        back = self.store.get_back(self.creds.mer_id, order_id, txn_time)
        if back is not None:
            return {
                **p.answer(form, "00"),
                **p.back_fields(back),
                "origRespCode": "00",
                "origRespMsg": p.MESSAGES["00"],
            }
        return p.answer(form, "34")

    # --- notifications (后台通知) -------------------------------------------------------------

    def queue_notify(self, url: str, unsigned: Mapping[str, str], now: float) -> None:
        """Queue the signed notification (with the notification faults); in a transaction."""
        if not url:
            return
        form = self.signed(unsigned)
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
                    order_id=form["orderId"],
                    txn_type=form["txnType"],
                    query_id=form["queryId"],
                    url=url,
                    body=body,
                    state=state,
                    attempts=0,
                    next_at=now + config.delay_ms / 1000,
                    created_at=now,
                    last_status=None,
                    last_error=None,
                )
            )
