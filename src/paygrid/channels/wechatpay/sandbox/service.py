"""What the WeChat Pay sandbox does, independent of HTTP routing.

Authenticates merchant requests, validates them like the real API, keeps orders, pays them for
the payer and queues callbacks; refunds (refunds.py) and trade bills (bills.py) are desks of it.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from paygrid.channels.wechatpay import signing
from paygrid.channels.wechatpay.bill import BEIJING
from paygrid.channels.wechatpay.credentials import (
    SandboxCredentials,
    load_or_create_sandbox_credentials,
)
from paygrid.channels.wechatpay.sandbox.bills import BillDesk
from paygrid.channels.wechatpay.sandbox.callbacks import (
    CallbackSender,
    NotifyTarget,
    notification_body,
    queue_notification,
)
from paygrid.channels.wechatpay.sandbox.faults import FaultConfig, Faults
from paygrid.channels.wechatpay.sandbox.protocol import (
    CODE_URL_PREFIX,
    ORDER_KINDS,
    PAID,
    PUBLIC_KEY_ID_PREFIX,
    ApiError,
    OrderFields,
    beijing_time,
    json_object,
    new_token,
    new_transaction_id,
    request_digest,
    text_field,
    token_of_code_url,
    transaction_json,
    validate_order,
)
from paygrid.channels.wechatpay.sandbox.refund_wire import REFUND_EVENTS, refund_resource_json
from paygrid.channels.wechatpay.sandbox.refunds import RefundDesk, RefundWorker
from paygrid.channels.wechatpay.sandbox.settings import SandboxSettings
from paygrid.channels.wechatpay.sandbox.store import Order, Refund, Store


class WechatPaySandbox:
    """State and behaviour of one sandbox; routes in app.py call these methods."""

    def __init__(self, data_dir: Path, public_base_url: str) -> None:
        self.public_base_url = public_base_url.rstrip("/")
        self.creds: SandboxCredentials = load_or_create_sandbox_credentials(data_dir)
        self.store = Store(data_dir)
        self._merchant_key = _cert_key(self.creds.merchant_cert)
        self._platform_key = signing.load_private_key(self.creds.platform_private_key)
        self._pubkey_key = signing.load_private_key(self.creds.public_key_private)
        self._knobs_lock = threading.Lock()
        self._settings = SandboxSettings().updated(self._stored("settings", SandboxSettings))
        self.faults = Faults(FaultConfig().updated(self._stored("faults", FaultConfig)))
        self.sender = CallbackSender(
            self.store,
            self.sign_callback,
            lambda: self.settings.retry_scale,
            in_order=lambda: self.faults.config.reorder,
        )
        self.bills = BillDesk(self.store, self.faults, lambda: self.settings, self.creds.mchid)
        self.refunds = RefundDesk(
            self.store, self.faults, lambda: self.settings, self._queue_refund_callback
        )
        self.refund_worker = RefundWorker(self.refunds.complete_due, self.sender.wake)

    def _stored(self, name: str, kind: type[SandboxSettings | FaultConfig]) -> dict[str, Any]:
        """Knobs saved by an earlier run; names this version does not know are ignored."""
        saved = self.store.get_setting(name)
        known = {f.name for f in fields(kind)}
        return {k: v for k, v in saved.items() if k in known} if isinstance(saved, dict) else {}

    def start(self) -> None:
        self.sender.start()
        self.refund_worker.start()

    def stop(self) -> None:
        self.refund_worker.stop()
        self.sender.stop()
        self.store.close()

    # --- knobs ------------------------------------------------------------------------------

    @property
    def settings(self) -> SandboxSettings:
        with self._knobs_lock:
            return self._settings

    def update_settings(self, changes: Mapping[str, object]) -> SandboxSettings:
        with self._knobs_lock:
            self._settings = self._settings.updated(changes)
            self.store.put_setting("settings", _asdict(self._settings))
            return self._settings

    def update_faults(self, changes: Mapping[str, object] | None) -> FaultConfig:
        """Apply ``changes`` (None resets) and reseed, so the same faults replay the same way."""
        with self._knobs_lock:
            config = FaultConfig() if changes is None else self.faults.config.updated(changes)
            self.faults.set(config)
            self.store.put_setting("faults", _asdict(config))
            return config

    # --- signatures (验签/签名) -------------------------------------------------------------

    def authenticate(self, method: str, target: str, authorization: str | None, body: bytes) -> str:
        """Verify the merchant's Authorization; return its mchid or raise 401 SIGN_ERROR."""
        try:
            if not authorization:
                raise signing.SignatureError("no Authorization header")
            auth = signing.parse_authorization(authorization)
            if auth.mchid != self.creds.mchid:
                raise signing.SignatureError("unknown mchid")
            if not _same_serial(auth.serial_no, self.creds.cert_serial_no):
                raise signing.SignatureError("serial_no is not the merchant API certificate")
            self._verify_target(authorization, method, target, body)
        except signing.SignatureError as exc:
            raise ApiError(
                401, "SIGN_ERROR", "签名错误，请检查后再试", {"issue": str(exc)}
            ) from exc
        return auth.mchid

    def _verify_target(self, authorization: str, method: str, target: str, body: bytes) -> None:
        try:
            signing.verify_authorization(authorization, method, target, body, self._merchant_key)
        except signing.SignatureError:
            # clients that percent-encode after signing (e.g. '|' in out_trade_no) sign the
            # decoded path; accept that form too
            if unquote(target) == target:
                raise
            signing.verify_authorization(
                authorization, method, unquote(target), body, self._merchant_key
            )

    def sign_api_response(self, body: bytes, request_serial: str | None) -> dict[str, str]:
        """Public-key mode when the request named a PUB_KEY_ID (the SDK does), else 平台证书."""
        if request_serial and request_serial.startswith(PUBLIC_KEY_ID_PREFIX):
            return signing.sign_response(body, self._pubkey_key, self.creds.public_key_id)
        return signing.sign_response(body, self._platform_key, self.creds.platform_cert_serial_no)

    def sign_callback(self, body: bytes, probe: bool) -> dict[str, str]:
        if self.settings.callback_serial_mode == "certificate":
            headers = signing.sign_response(
                body, self._platform_key, self.creds.platform_cert_serial_no
            )
        else:
            headers = signing.sign_response(body, self._pubkey_key, self.creds.public_key_id)
        if probe:
            headers[signing.HEADER_SIGNATURE] = signing.SIGNTEST_PREFIX + new_token(64)
        return headers

    # --- orders (下单/查单/关单) -------------------------------------------------------------

    def create_order(self, kind: str, auth_mchid: str, body: bytes) -> dict[str, str]:
        data = json_object(body)
        now = time.time()
        checked = validate_order(kind, data, now)
        self._check_merchant(checked.mchid, auth_mchid, checked.appid)
        digest = request_digest(kind, data)
        with self.store.transaction():
            existing = self.store.get_order(checked.mchid, checked.out_trade_no)
            if existing is not None:
                return self._repeat_order(self._expired(existing, now), digest)
            order = self._new_order(kind, checked, digest, now)
            self.store.insert_order(order)
        return self._prepay(order)

    def _check_merchant(self, mchid: str, auth_mchid: str, appid: str | None = None) -> None:
        if mchid != auth_mchid:
            raise ApiError(400, "PARAM_ERROR", "mchid 与 Authorization 中的商户号不一致")
        if appid is not None and appid != self.creds.appid:
            raise ApiError(400, "APPID_MCHID_NOT_MATCH", "appid 和 mchid 不匹配")

    def _repeat_order(self, order: Order, digest: str) -> dict[str, str]:
        if order.request_digest != digest:
            raise ApiError(400, "INVALID_REQUEST", "商户订单号重复，且请求参数与原订单不一致")
        if order.trade_state in PAID:
            raise ApiError(400, "ORDERPAID", "该订单已支付")
        if order.trade_state == "CLOSED":
            raise ApiError(400, "ORDER_CLOSED", "订单已关闭")
        return self._prepay(order)

    def _new_order(self, kind: str, f: OrderFields, digest: str, now: float) -> Order:
        return Order(
            mchid=f.mchid,
            out_trade_no=f.out_trade_no,
            appid=f.appid,
            trade_type=ORDER_KINDS[kind],
            description=f.description,
            notify_url=f.notify_url,
            total=f.total,
            currency="CNY",
            attach=f.attach,
            time_expire=f.time_expire,
            expire_at=f.expire_at,
            request_digest=digest,
            token=new_token(11),
            prepay_id=f"wx{datetime.fromtimestamp(now, BEIJING):%d%H%M%S}{secrets.token_hex(12)}",
            payer_openid=f.payer_openid,
            trade_state="NOTPAY",
            transaction_id=None,
            success_at=None,
            bank_type=None,
            created_at=now,
            updated_at=now,
        )

    def _prepay(self, order: Order) -> dict[str, str]:
        if order.trade_type == "NATIVE":
            return {"code_url": CODE_URL_PREFIX + order.token}
        if order.trade_type == "MWEB":
            return {"h5_url": f"{self.public_base_url}/sandbox/scan/{order.token}"}
        return {"prepay_id": order.prepay_id}

    def _expired(self, order: Order, now: float) -> Order:
        """Honour time_expire (交易结束时间): an unpaid order past it is CLOSED."""
        if order.trade_state not in ("NOTPAY", "PAYERROR") or order.expire_at is None:
            return order
        if now < order.expire_at:
            return order
        closed = order.with_changes(trade_state="CLOSED", updated_at=now)
        self.store.update_order(closed)
        return closed

    def query(
        self,
        auth_mchid: str,
        mchid: str | None,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
    ) -> dict[str, Any]:
        if not mchid:
            raise ApiError(400, "PARAM_ERROR", "缺少参数 mchid", {"location": "query"})
        self._check_merchant(mchid, auth_mchid)
        with self.store.transaction():
            if out_trade_no is not None:
                order = self.store.get_order(mchid, out_trade_no)
            else:
                order = self.store.order_by_transaction_id(mchid, transaction_id or "")
            if order is None:
                raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
            return transaction_json(self._expired(order, time.time()))

    def close(self, auth_mchid: str, out_trade_no: str, body: bytes) -> None:
        data = json_object(body)
        self._check_merchant(text_field(data, "mchid", 1, 32), auth_mchid)
        now = time.time()
        with self.store.transaction():
            order = self.store.get_order(auth_mchid, out_trade_no)
            if order is None:
                raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
            order = self._expired(order, now)
            if order.trade_state in PAID:
                raise ApiError(400, "ORDERPAID", "订单已支付")
            if order.trade_state != "CLOSED":
                self.store.update_order(order.with_changes(trade_state="CLOSED", updated_at=now))

    def certificates(self) -> dict[str, Any]:
        """平台证书列表, each encrypted under the APIv3 key."""
        cert = x509.load_pem_x509_certificate(self.creds.platform_cert.encode("ascii"))
        encrypted = signing.aead_encrypt(
            self.creds.apiv3_key, self.creds.platform_cert, "certificate"
        )
        return {
            "data": [
                {
                    "serial_no": self.creds.platform_cert_serial_no,
                    "effective_time": beijing_time(cert.not_valid_before_utc.timestamp()),
                    "expire_time": beijing_time(cert.not_valid_after_utc.timestamp()),
                    "encrypt_certificate": encrypted,
                }
            ]
        }

    # --- the payer (沙箱付款) ---------------------------------------------------------------

    def find_order(self, payload: Mapping[str, Any]) -> Order:
        """Order named by ``code_url``, ``token``/``prepay_id``, or ``mchid``+``out_trade_no``."""
        code_url = payload.get("code_url")
        token = payload.get("token") or payload.get("prepay_id")
        if isinstance(code_url, str) and code_url:
            token = token_of_code_url(code_url)
        if isinstance(token, str) and token:
            order = self.store.order_by_token(token)
        elif isinstance(payload.get("mchid"), str) and isinstance(payload.get("out_trade_no"), str):
            order = self.store.get_order(payload["mchid"], payload["out_trade_no"])
        else:
            raise ApiError(400, "PARAM_ERROR", "需要 code_url，或 mchid 与 out_trade_no")
        if order is None:
            raise ApiError(404, "ORDER_NOT_EXIST", "订单不存在")
        return self._expired(order, time.time())

    def pay(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The payer pays (SUCCESS) or fails (PAYERROR); success queues the callback."""
        outcome = payload.get("outcome", "SUCCESS")
        if outcome not in ("SUCCESS", "FAIL"):
            raise ApiError(400, "PARAM_ERROR", "outcome 只能是 SUCCESS 或 FAIL")
        notify_ids: list[str] = []
        with self.store.transaction():
            order = self.find_order(payload)
            if order.trade_state == "CLOSED":
                raise ApiError(400, "ORDER_CLOSED", "订单已关闭")
            if order.trade_state not in PAID:
                order = self._settle(order, outcome == "SUCCESS")
                if order.trade_state == "SUCCESS":
                    notify_ids = self._queue_callback(order)
        self.sender.wake()
        return {"transaction": transaction_json(order), "notify_ids": notify_ids}

    def _settle(self, order: Order, success: bool) -> Order:
        now = time.time()
        openid = order.payer_openid or "o" + new_token(27)
        if not success:
            paid = order.with_changes(trade_state="PAYERROR", payer_openid=openid, updated_at=now)
        else:
            paid = order.with_changes(
                trade_state="SUCCESS",
                transaction_id=new_transaction_id(now),
                success_at=now,
                payer_openid=openid,
                bank_type="OTHERS",
                updated_at=now,
            )
        self.store.update_order(paid)
        return paid

    def _queue_callback(self, order: Order) -> list[str]:
        now = time.time()
        notify_id = str(uuid.uuid4())
        body = notification_body(
            self.creds.apiv3_key,
            notify_id,
            ("TRANSACTION.SUCCESS", "支付成功"),
            transaction_json(order),
            "transaction",
            now,
        )
        target = NotifyTarget(order.mchid, order.out_trade_no, None, order.notify_url)
        queue_notification(self.store, self.faults, target, notify_id, body)
        return [notify_id]

    def _queue_refund_callback(self, refund: Refund, order: Order) -> None:
        """退款结果通知 to the refund's notify_url, queued in the transaction that ends it."""
        assert refund.notify_url is not None
        notify_id = str(uuid.uuid4())
        event = REFUND_EVENTS[refund.status]
        resource = refund_resource_json(refund, order)
        body = notification_body(
            self.creds.apiv3_key, notify_id, event, resource, "refund", time.time()
        )
        target = NotifyTarget(
            refund.mchid, refund.out_trade_no, refund.out_refund_no, refund.notify_url
        )
        queue_notification(self.store, self.faults, target, notify_id, body)

    # --- refunds (退款) and bills (账单) -----------------------------------------------------

    def create_refund(self, auth_mchid: str, body: bytes) -> dict[str, object]:
        answer = self.refunds.create(auth_mchid, body)
        self.refund_worker.wake()
        return answer

    def query_refund(self, auth_mchid: str, out_refund_no: str) -> dict[str, object]:
        answer = self.refunds.query(auth_mchid, out_refund_no)
        self.sender.wake()
        return answer


def _same_serial(given: str, expected: str) -> bool:
    try:
        return int(given, 16) == int(expected, 16)
    except ValueError:
        return False


def _cert_key(pem: str) -> rsa.RSAPublicKey:
    key = x509.load_pem_x509_certificate(pem.encode("ascii")).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the merchant certificate must hold an RSA key")
    return key


def _asdict(value: SandboxSettings | FaultConfig) -> dict[str, object]:
    return asdict(value)
