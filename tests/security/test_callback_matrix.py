"""Callbacks as only WeChat could send them (signed with the sandbox's platform key, sealed under
the APIv3 key) that must not move money: every field the state change depends on (amount total,
currency, trade state, mchid, appid, the resource's associated_data) present and equal, or the
payment stays unpaid, no voucher is booked and `paygrid check` names the callback. Forged and
undecryptable callbacks get an exact 4xx and change nothing. A notify id is deduplicated per
payment, not globally. Real `paygrid up`, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from paygrid.storage.schema import channel_callbacks, ledger_vouchers, notifications
from tests.conftest import PlatformFactory
from tests.integration.wechatpay_helpers import genuine_callback, sandbox_credentials
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = pytest.mark.timeout(300)

TOTAL = 900  # a 9.00 CNY payment
Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Edit:
    def edit(t: dict[str, Any]) -> None:
        *parents, name = path.split(".")
        for parent in parents:
            t = t[parent]
        t[name] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(t: dict[str, Any]) -> None:
        *parents, name = path.split(".")
        for parent in parents:
            t = t[parent]
        del t[name]

    return edit


# (case, change to a genuine transaction, associated_data, outcome `paygrid check` must name)
MISMATCHES: list[tuple[str, Edit, str, str]] = [
    ("over-paid", _set("amount.total", TOTAL + 1), "transaction", "AMOUNT_MISMATCH"),
    ("under-paid", _set("amount.total", 1), "transaction", "AMOUNT_MISMATCH"),
    ("other currency", _set("amount.currency", "USD"), "transaction", "AMOUNT_MISMATCH"),
    ("missing amount", _drop("amount"), "transaction", "MISSING_FIELD"),
    ("amount without total", _drop("amount.total"), "transaction", "MISSING_FIELD"),
    ("amount without currency", _drop("amount.currency"), "transaction", "MISSING_FIELD"),
    ("total as a string", _set("amount.total", str(TOTAL)), "transaction", "MISSING_FIELD"),
    ("missing trade_state", _drop("trade_state"), "transaction", "MISSING_FIELD"),
    ("missing mchid", _drop("mchid"), "transaction", "MISSING_FIELD"),
    ("another merchant's mchid", _set("mchid", "1900009999"), "transaction", "MERCHANT_MISMATCH"),
    ("another app's appid", _set("appid", "wx00000000000000"), "transaction", "MERCHANT_MISMATCH"),
    ("wrong associated_data", lambda t: None, "refund", "PROTOCOL_MISMATCH"),
]  # fmt: skip


def order(merchant: MerchantReceiver) -> dict[str, Any]:
    return {
        "out_trade_no": "cb-" + uuid.uuid4().hex[:16],
        "amount": {"total": TOTAL, "currency": "CNY"},
        "description": "callback matrix",
        "notify_url": merchant.url,
        "channel": "wechatpay",
        "method": "native",
    }


def transaction(creds: dict[str, str], payment_id: str) -> dict[str, Any]:
    """The Transaction WeChat sends when the payer paid ``payment_id`` in full."""
    return {
        "appid": creds["appid"],
        "mchid": creds["mchid"],
        "out_trade_no": payment_id,
        "transaction_id": "42000" + uuid.uuid4().hex[:23],
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": "2026-11-28T10:00:00+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": TOTAL, "payer_total": TOTAL, "currency": "CNY",
                   "payer_currency": "CNY"},
        "promotion_detail": [],
    }  # fmt: skip


def post(running: RunningPlatform, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{running.api_url}/callbacks/wechatpay", content=body, headers=headers, timeout=10
    )


def new_payment(running: RunningPlatform, merchant: MerchantReceiver) -> str:
    created = running.client().create_payment(order(merchant))
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "PAYING"
    payment_id: str = created.json()["payment_id"]
    return payment_id


def status(running: RunningPlatform, payment_id: str) -> str:
    found: str = running.client().get_payment(payment_id).json()["status"]
    return found


def check_lines(running: RunningPlatform) -> tuple[int, str]:
    result = running.paygrid("check", "--grace-seconds", "0")
    return result.returncode, " ".join(result.stderr.split())  # undo the console's wrapping


def test_callback_mismatch_matrix(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    running = platform_factory(database_url)
    creds = sandbox_credentials(running.data_dir)
    refused: dict[str, tuple[str, str]] = {}  # payment id -> (case, outcome)
    for case, edit, associated_data, outcome in MISMATCHES:
        payment_id = new_payment(running, merchant)
        changed = copy.deepcopy(transaction(creds, payment_id))
        edit(changed)
        body, headers = genuine_callback(running.data_dir, changed, associated_data=associated_data)
        reply = post(running, body, headers)
        # Authentic: acknowledged so WeChat stops resending; refused and reported instead.
        assert reply.status_code == 204, (case, reply.status_code, reply.text)
        assert status(running, payment_id) == "PAYING", case
        refused[payment_id] = (case, outcome)

    # A genuine callback next to them is applied: the platform is not just refusing everything.
    paid = new_payment(running, merchant)
    body, headers = genuine_callback(running.data_dir, transaction(creds, paid))
    assert post(running, body, headers).status_code == 204
    wait_until(lambda: status(running, paid) == "SUCCESS", timeout=30)

    db = running.database()

    def booked() -> set[str]:
        with db.read() as conn:
            rows = conn.execute(select(ledger_vouchers.c.business_ref)).all()
        return {r.business_ref for r in rows}

    def notified() -> set[str]:
        with db.read() as conn:
            return {r.resource_id for r in conn.execute(select(notifications.c.resource_id))}

    try:
        # Events are handled in order: once the genuine payment is booked, any voucher for an
        # earlier refused callback would be there too.
        wait_until(lambda: paid in booked() and paid in notified(), timeout=30)
        assert booked() == {paid}
        with db.read() as conn:
            rows = conn.execute(
                select(channel_callbacks.c.payment_id, channel_callbacks.c.outcome)
            ).all()
    finally:
        db.dispose()
    recorded = {r.payment_id: r.outcome for r in rows}
    assert recorded == {**{p: o for p, (_, o) in refused.items()}, paid: "APPLY_SUCCESS"}

    code, report = check_lines(running)
    assert code == 1, report
    for payment_id, (case, outcome) in refused.items():
        assert f"for {payment_id} said" in report, case
        line = report.split(f"for {payment_id} said", 1)[1].split("CALLBACK_ANOMALY")[0]
        assert outcome in line, (case, line)
    assert report.count("CALLBACK_ANOMALY") == len(refused)
    assert f"{len(refused)} violation(s)" in report  # nothing else: the genuine one is sound


def test_notify_id_is_deduplicated_per_payment(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    """WeChat's notify id names one notification of one order: the same id for another payment
    is another callback (applied), the same callback again is a redelivery (dropped)."""
    running = platform_factory(database_url)
    creds = sandbox_credentials(running.data_dir)
    first, second = new_payment(running, merchant), new_payment(running, merchant)
    reused = str(uuid.uuid4())
    body, headers = genuine_callback(running.data_dir, transaction(creds, first), notify_id=reused)
    assert post(running, body, headers).status_code == 204
    wait_until(lambda: status(running, first) == "SUCCESS", timeout=30)
    assert post(running, body, headers).status_code == 204  # redelivered: acknowledged again

    other, other_headers = genuine_callback(
        running.data_dir, transaction(creds, second), notify_id=reused
    )
    assert post(running, other, other_headers).status_code == 204
    wait_until(lambda: status(running, second) == "SUCCESS", timeout=30)

    db = running.database()
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(
                    channel_callbacks.c.notify_id,
                    channel_callbacks.c.payment_id,
                    channel_callbacks.c.outcome,
                    channel_callbacks.c.amount,
                    channel_callbacks.c.currency,
                )
            ).all()

        def captures() -> list[str]:
            with db.read() as conn:
                refs = select(ledger_vouchers.c.business_ref)
                q = refs.where(ledger_vouchers.c.kind == "capture")
                return sorted(r.business_ref for r in conn.execute(q))

        wait_until(lambda: len(captures()) == 2, timeout=30)
        assert captures() == sorted([first, second])
    finally:
        db.dispose()
    assert sorted(tuple(r) for r in rows) == sorted(
        [
            (reused, first, "APPLY_SUCCESS", TOTAL, "CNY"),
            (reused, second, "APPLY_SUCCESS", TOTAL, "CNY"),
        ]
    )


def test_forged_and_undecryptable_callbacks_get_an_exact_4xx(
    platform_factory: PlatformFactory, database_url: str | None, merchant: MerchantReceiver
) -> None:
    running = platform_factory(database_url)
    creds = sandbox_credentials(running.data_dir)
    payment_id = new_payment(running, merchant)
    genuine = transaction(creds, payment_id)
    body, headers = genuine_callback(running.data_dir, genuine)

    tampered = body.replace(b'"id": "', b'"id": "x', 1)  # the envelope changed after signing
    assert tampered != body
    other_key = genuine_callback(running.data_dir, genuine, apiv3_key="k" * 32)
    unknown = genuine_callback(running.data_dir, {**genuine, "out_trade_no": "pay_unknown"})
    sign = 401, "SIGN_ERROR"
    cases: list[tuple[str, bytes, dict[str, str], tuple[int, str]]] = [
        ("body changed after signing", tampered, headers, sign),
        ("signature of another body", body, {**headers, **_sig_of(running, b"{}")}, sign),
        ("unknown serial", body, {**headers, "Wechatpay-Serial": "PUB_KEY_ID_0000"}, sign),
        ("no signature", body, {"Content-Type": "application/json"}, sign),
        ("stale timestamp", body, {**headers, "Wechatpay-Timestamp": "1000000000"}, sign),
        ("signature probe", body, {**headers, "Wechatpay-Signature": "WECHATPAY/SIGNTEST/x"}, sign),
        ("sealed under another key", *other_key, (400, "DECRYPT_ERROR")),
        ("signed but not JSON", *_signed(running, b"not json"), (400, "PARAM_ERROR")),
        ("for a payment we do not hold", *unknown, (404, "ORDER_NOT_EXIST")),
    ]
    for case, content, case_headers, (expected, code) in cases:
        reply = post(running, content, case_headers)
        assert reply.status_code == expected, (case, reply.status_code, reply.text)
        assert reply.json()["code"] == code, case
        assert reply.json()["message"], case

    # The genuine callback after all of them still works; nothing before it left a trace.
    db = running.database()
    try:
        with db.read() as conn:
            assert conn.execute(select(channel_callbacks)).all() == []
            assert conn.execute(select(ledger_vouchers)).all() == []
    finally:
        db.dispose()
    assert status(running, payment_id) == "PAYING"
    assert post(running, body, headers).status_code == 204
    wait_until(lambda: status(running, payment_id) == "SUCCESS", timeout=30)


def _signed(running: RunningPlatform, body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {**_sig_of(running, body), "Content-Type": "application/json"}


def _sig_of(running: RunningPlatform, body: bytes) -> dict[str, str]:
    from paygrid.channels.wechatpay.signing import load_private_key, sign_response

    creds = sandbox_credentials(running.data_dir)
    key = load_private_key(creds["public_key_private"])
    return sign_response(body, key, creds["public_key_id"])
