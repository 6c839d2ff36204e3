"""What the NetsUnion sandbox does, independent of HTTP routing: the platform with its banks.

It reads and verifies member messages (signature, certificate serial, member id, send time),
dispatches them (agreements in ``agreements.py``, debits, refunds and queries in ``trades.py``,
gateway orders in ``pages.py``, clearing files in ``clearing.py``) and signs every answer,
errors included. The banks decide debits and refunds on the sender thread's clock (``sweep``);
unpaid gateway orders expire on it; results are notified (epcc.711).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from paygrid.channels.netsunion import crypto, wire
from paygrid.channels.netsunion.credentials import (
    GATEWAY_PATH,
    SandboxCredentials,
    load_or_create_sandbox_credentials,
)
from paygrid.channels.netsunion.sandbox import agreements, clearing, pages, trades
from paygrid.channels.netsunion.sandbox import protocol as p
from paygrid.channels.netsunion.sandbox.callbacks import MAX_ACTIVE, NotifySender
from paygrid.channels.netsunion.sandbox.faults import FaultConfig, Faults
from paygrid.channels.netsunion.sandbox.settings import SandboxSettings
from paygrid.channels.netsunion.sandbox.store import Notification, Store, Trade

MAX_CLOCK_SKEW_S = 300  # SndDt must be within five minutes of the platform's clock (MODELLED)
SWEEP_BATCH = 200


class NetsUnionSandbox:
    def __init__(self, data_dir: Path, public_base_url: str) -> None:
        self.public_base_url = public_base_url.rstrip("/")
        self.creds: SandboxCredentials = load_or_create_sandbox_credentials(data_dir)
        self.store = Store(data_dir)
        self.keys = crypto.load_private(self.creds.platform_private_key)
        self.member_key = crypto.load_public(self.creds.member_public_key)
        self._knobs_lock = threading.Lock()
        self._settings = SandboxSettings().updated(self._stored("settings", SandboxSettings))
        self.faults = Faults(FaultConfig().updated(self._stored("faults", FaultConfig)))
        self.sender = NotifySender(
            self.store,
            lambda: self.settings.retry_scale,
            acknowledged=self.acknowledged,
            sweep=self.sweep,
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

    @property
    def member_id(self) -> str:
        return self.creds.member_id

    def merchant_credentials(self) -> dict[str, str]:
        return self.creds.merchant_view(self.public_base_url + GATEWAY_PATH)

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

    # --- messages in and out ----------------------------------------------------------------

    def read(self, body: bytes, headers: Mapping[str, str]) -> wire.Message:
        """A member's message, verified; SystemRefusal when it is not one we process."""
        try:
            message = wire.parse(body, headers)
        except wire.WireError as exc:
            raise p.bad(str(exc)) from exc
        if message.msg_tp not in wire.ANSWERS or message.msg_tp == wire.NOTIFY:
            raise p.bad("不支持的报文类型")
        if message.issuer != self.member_id or message.text("InstgInf/InstgId") != self.member_id:
            raise p.SystemRefusal(wire.SYS_MEMBER, "机构标识不存在")
        serial = message.header.get("SignSN", "")
        if not hmac.compare_digest(serial, self.creds.member_cert_sn):
            raise p.SystemRefusal(wire.SYS_SIGNATURE, "签名证书序列号不匹配")
        if not wire.verified(message, self.member_key):
            raise p.SystemRefusal(wire.SYS_SIGNATURE, "验签失败")
        sent = wire.parse_time(message.header.get("SndDt"))
        if sent is None or abs(sent.timestamp() - time.time()) > MAX_CLOCK_SKEW_S:
            raise p.bad("SndDt 缺失或与平台时间相差过大")
        return message

    def bank_of(self, message: wire.Message) -> str | None:
        """The payer bank a message is about (the trade faults' scope)."""
        if message.msg_tp == wire.AGREEMENT:
            named = message.text("SgnInf/SgnAcctIssrId")
            if named is None:
                found = self.store.get_agreement(self.member_id, message.text("TrxInf/TrxId") or "")
                return found.bank_id if found else None
            return named
        if message.msg_tp in (wire.DEBIT, wire.GATEWAY):
            return message.text("PyerInf/PyerAcctIssrId")
        ref = message.text("OriTrxInf/OriTrxId")
        trade = self.store.get_trade(self.member_id, ref) if ref else None
        return trade.bank_id if trade else None

    def dispatch(self, message: wire.Message) -> bytes:
        """The signed answer to a verified message, business refusals included."""
        answer = wire.ANSWERS[message.msg_tp]
        now = time.time()
        try:
            if message.msg_tp == wire.AGREEMENT:
                body = agreements.handle(self, message, now)
            elif message.msg_tp == wire.FILES:
                body = clearing.files(self, message, now)
            elif message.msg_tp in (wire.GATEWAY, wire.GATEWAY_CLOSE):
                body = pages.handle(self, message, now)
            else:
                body = trades.handle(self, message, now)
        except p.BusinessRefusal as refusal:
            body = {
                "BizInf": {
                    "BizStsCd": wire.BIZ_FAILED,
                    "BizRtnCd": refusal.code,
                    "BizRtnDesc": refusal.description,
                },
                **refusal.extra,
            }
        except p.SystemRefusal as refusal:
            return self.refusal(answer, refusal)
        self.sender.wake()
        return self.answer(answer, {"SysRtnInf": _sys_ok(), **body})

    def answer(self, msg_tp: str, body: wire.Node) -> bytes:
        head = wire.header(
            msg_tp, self.creds.platform_id, self.creds.platform_cert_sn, wire.FROM_PLATFORM,
            datetime.now(UTC),
        )  # fmt: skip
        return wire.build(head, body, self.keys, self.member_key)

    def refusal(self, msg_tp: str, refusal: p.SystemRefusal) -> bytes:
        info = {"SysRtnCd": refusal.code, "SysRtnDesc": refusal.description}
        return self.answer(msg_tp, {"SysRtnInf": info})

    def acknowledged(self, status: int, body: bytes) -> bool:
        """A member's answer to a notification: signed by the member, SysRtnCd success."""
        if status != 200:
            return False
        try:
            message = wire.parse(body)
        except wire.WireError:
            return False
        return (
            message.msg_tp == wire.NOTIFY_ANSWER
            and message.issuer == self.member_id
            and message.text("SysRtnInf/SysRtnCd") == wire.SYS_OK
            and wire.verified(message, self.member_key)
        )

    # --- the clock and the notifications ----------------------------------------------------

    def sweep(self, now: float) -> None:
        """The banks decide the debits and refunds that are due; unpaid gateway orders expire."""
        with self.store.transaction():
            for trade in self.store.due_trades(now, SWEEP_BATCH):
                trades.decide(self, trade, None, now)

    def settlement_date(self, trade: Trade) -> date | None:
        if trade.finished_at is None or trade.status != wire.BIZ_SUCCESS:
            return None
        return clearing.batch_of(trade.finished_at, self.settings.batches_per_day)[0]

    def queue_notify(self, trade: Trade, now: float) -> None:
        """Queue the result notification of ``trade`` (with faults); inside a transaction."""
        if not trade.notify_url:
            return
        notify_id = p.new_number("NT", now)
        body = {
            "NtfyInf": {"NtfyId": notify_id},
            "OriTrxInf": p.trade_block(self, trade),
            "InstgInf": {"InstgId": trade.instg_id},
        }
        data = self.answer(wire.NOTIFY, body)
        config, faults = self.faults.config, self.faults
        dropped = self.store.active_notification_count() >= MAX_ACTIVE or faults.roll(
            config.drop_rate, trade.bank_id
        )
        copies = 2 if faults.roll(config.duplicate_rate, trade.bank_id) else 1
        held = config.reorder and config.hits(trade.bank_id)
        state = "DROPPED" if dropped else ("HELD" if held else "PENDING")
        delay = config.delay_ms / 1000 if config.hits(trade.bank_id) else 0.0
        row = Notification(
            id=0,
            notify_id=notify_id,
            trx_id=trade.trx_id,
            bank_id=trade.bank_id,
            url=trade.notify_url,
            body=data,
            state=state,
            attempts=0,
            next_at=now + delay,
            created_at=now,
            last_status=None,
            last_answer=None,
            last_error=None,
        )
        for _ in range(1 if dropped else copies):
            self.store.add_notification(row)


def _sys_ok() -> dict[str, str]:
    return {
        "SysRtnCd": wire.SYS_OK,
        "SysRtnDesc": "成功",
        "SysRtnTm": wire.beijing_text(datetime.now(UTC)),
    }
