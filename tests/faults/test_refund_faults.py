"""Every channel fault on refunds (退款) at once — refund callbacks duplicated, delayed,
reordered and dropped, refund API calls failing and timing out, and on WeChat Pay refunds that
end CLOSED or ABNORMAL — over many partial refunds of several payments, some racing each other
past the amount: every refund still ends in the state the channel holds, counted once (one
voucher, the payment's refunded_amount, one merchant notification), and `paygrid check` holds
(补单 fills what the callbacks miss)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from paygrid.api.client import MerchantClient
from paygrid.channels import registry
from paygrid.ops.check import check_database
from paygrid.storage.schema import ledger_vouchers, refund_callbacks
from tests.conftest import PlatformFactory
from tests.integration.test_refunds import paid
from tests.support import MerchantReceiver, RunningPlatform, wait_until

pytestmark = [pytest.mark.timeout(420), pytest.mark.serial]
PAYMENTS = 6  # of 100.00 each
FAULTS = {
    "duplicate_rate": 0.3,
    "delay_ms": 300,
    "reorder": True,
    "drop_rate": 0.25,
    "error_rate": 0.15,
    "timeout_rate": 0.05,
    "timeout_ms": 6000,
    "seed": 11,
}
# The channel's own refund outcomes, where it has them (docs/wechatpay.md), and what paygrid
# must make of each state the channel's sandbox lists a refund in (docs/refunds.md).
CHANNEL_FAULTS: dict[str, dict[str, float]] = {
    "wechatpay": {"refund_closed_rate": 0.3, "refund_abnormal_rate": 0.1},
    "alipay": {},
    "unionpay": {"pending_rate": 0.2},  # refunds done but answered 03/04/05: the query tells
    "netsunion": {},  # refunds answer PROCESSING; the credit comes by notification or query
}
PAYGRID_OF = {
    "wechatpay": {"SUCCESS": "SUCCESS", "CLOSED": "FAILED", "ABNORMAL": "PROCESSING"},
    "alipay": {"REFUND_SUCCESS": "SUCCESS"},
    "unionpay": {"SUCCESS": "SUCCESS"},
    "netsunion": {"SUCCESS": "SUCCESS"},
}
RETRIED = frozenset({"IDEMPOTENCY_REQUEST_IN_PROGRESS"})
HEARD = frozenset({"APPLY_SUCCESS", "APPLY_FAILED", "NOTED", "NO_CHANGE", "STALE"})


def ask(client: MerchantClient, body: dict[str, Any], key: str) -> Any:
    """The merchant asks until paygrid answers for good (a 5xx or an in-flight key: again)."""
    for _ in range(30):
        try:
            answer = client.create_refund(body, idempotency_key=key)
        except httpx.TransportError:  # the connection dropped: asked again, same key
            time.sleep(0.5)
            continue
        if answer.status_code < 500 and answer.json().get("code") not in RETRIED:
            return answer
        time.sleep(0.5)
    raise AssertionError(f"no answer for {body}")


def race(client: MerchantClient, payment_id: str, amounts: list[int]) -> list[Any]:
    """Partial refunds of one payment asked at once, each its own out_refund_no and key."""
    start = threading.Barrier(len(amounts))
    answers: list[Any] = [None] * len(amounts)

    def one(i: int) -> None:
        no = f"rf-{i}-{uuid.uuid4().hex[:10]}"
        body = {"payment_id": payment_id, "out_refund_no": no, "amount": amounts[i]}
        start.wait(10)
        answers[i] = ask(client, body, key=f"k-{no}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(amounts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers


def channel_refunds(running: RunningPlatform, channel: str) -> dict[str, str]:
    listed = running.channel_sandbox(channel, "GET", "/sandbox/refunds?limit=1000")
    assert listed.status_code == 200, listed.text
    return {r["out_refund_no"]: r["status"] for r in listed.json()["refunds"]}


def held(client: MerchantClient, payment_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every refund paygrid holds of these payments, by refund id (paygrid's refund number at
    the channel)."""
    refunds: dict[str, dict[str, Any]] = {}
    for payment_id in payment_ids:
        for listed in client.get_payment(payment_id).json()["refunds"]:
            got = client.get_refund(listed["refund_id"])
            refunds[listed["refund_id"]] = got.json()
    return refunds


def converge(
    running: RunningPlatform, client: MerchantClient, channel: str, payment_ids: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Wait until every refund paygrid holds is the channel's and in the state the channel's
    word means; return both."""
    expected = PAYGRID_OF[channel]
    seen: list[tuple[dict[str, dict[str, Any]], dict[str, str]]] = []

    def done() -> bool:
        mine, theirs = held(client, payment_ids), channel_refunds(running, channel)
        seen[:] = [(mine, theirs)]
        return set(mine) == set(theirs) and all(
            theirs[rid] in expected and r["status"] == expected[theirs[rid]]
            for rid, r in mine.items()
        )

    wait_until(done, timeout=150, interval=1.0)
    return seen[0]


@pytest.mark.parametrize("channel", registry.NAMES)
def test_refund_faults_converge_and_count_once(
    channel: str, platform_factory: PlatformFactory, merchant: MerchantReceiver
) -> None:
    running = platform_factory(env={"PAYGRID_RECOVERY_AFTER_S": "1"})
    client = running.client()
    payment_ids = [paid(running, merchant, channel)["payment_id"] for _ in range(PAYMENTS)]
    faults = {**FAULTS, **CHANNEL_FAULTS[channel]}
    assert running.channel_sandbox(channel, "POST", "/sandbox/faults", faults).is_success

    # Round 1: four partial refunds at once per payment, 110.00 and more of 100.00 asked.
    answers = {
        pid: race(client, pid, [2_500 + i * 100, 3_000, 3_500 - i * 50, 2_000 + i * 300])
        for i, pid in enumerate(payment_ids)
    }
    for pid, got in answers.items():
        codes = Counter(a.status_code for a in got)
        assert codes == {201: 3, 409: 1}, (pid, [a.text for a in got])
        refused = next(a for a in got if a.status_code == 409)
        assert refused.json()["code"] == "REFUND_EXCEEDS_REMAINING"
    first = next(a for a in answers[payment_ids[0]] if a.status_code == 201).json()
    again = client.create_refund(
        {k: first[k] for k in ("payment_id", "out_refund_no", "amount")},
        idempotency_key=f"k-{first['out_refund_no']}",
    )
    assert (again.status_code, again.json()["refund_id"]) == (201, first["refund_id"])
    assert again.headers["Idempotent-Replayed"] == "true"
    converge(running, client, channel, payment_ids)

    # Round 2: what remains of each payment (a closed refund's amount is free again).
    for pid in payment_ids:
        shown = client.get_payment(pid).json()
        rest = shown["amount"]["total"] - shown["refunded_amount"] - _processing(shown)
        if rest:
            no = f"rest-{uuid.uuid4().hex[:10]}"
            body = {"payment_id": pid, "out_refund_no": no, "amount": rest}
            assert ask(client, body, key=f"k-{no}").status_code == 201
    mine, theirs = converge(running, client, channel, payment_ids)
    _counted_once(running, client, merchant, payment_ids, mine)
    _check_lists_only_abnormal(running, mine)
    states = Counter(theirs.values())
    assert states[next(iter(PAYGRID_OF[channel]))] >= PAYMENTS, states  # most succeed
    if "CLOSED" in PAYGRID_OF[channel]:
        assert states["CLOSED"] >= 1, states  # the channel's own failures were exercised


def _processing(payment: dict[str, Any]) -> int:
    return sum(r["amount"] for r in payment["refunds"] if r["status"] == "PROCESSING")


def _counted_once(
    running: RunningPlatform,
    client: MerchantClient,
    merchant: MerchantReceiver,
    payment_ids: list[str],
    mine: dict[str, dict[str, Any]],
) -> None:
    """The payment's refunded_amount, the vouchers and the merchant's notifications each count
    every refund once, by its end."""
    for pid in payment_ids:
        shown = client.get_payment(pid).json()
        ok = [r["amount"] for r in shown["refunds"] if r["status"] == "SUCCESS"]
        assert shown["refunded_amount"] == sum(ok) <= shown["amount"]["total"], shown
    db = running.database()
    try:
        with db.read() as conn:
            outcomes = Counter(conn.execute(select(refund_callbacks.c.outcome)).scalars())
            vouchers = {
                ref: n
                for ref, n in conn.execute(
                    select(ledger_vouchers.c.business_ref, func.count())
                    .where(ledger_vouchers.c.kind == "refund")
                    .group_by(ledger_vouchers.c.business_ref)
                )
            }
    finally:
        db.dispose()
    assert vouchers == {rid: 1 for rid, r in mine.items() if r["status"] == "SUCCESS"}
    # The callbacks that got through were heard, none refused (late and repeated ones change
    # nothing); the ones dropped were made up for by 补单.
    assert outcomes and set(outcomes) <= HEARD, outcomes
    ends = {"SUCCESS": "refund.succeeded", "FAILED": "refund.failed"}
    want = Counter((rid, ends[r["status"]]) for rid, r in mine.items() if r["status"] in ends)

    def told() -> Counter[tuple[str, str]]:
        notes = {h["Paygrid-Notify-Id"]: json.loads(b) for h, b in merchant.received}
        return Counter(
            (n["data"]["refund_id"], n["type"]) for n in notes.values() if "refund_id" in n["data"]
        )

    wait_until(lambda: told() == want, timeout=60, interval=0.5)


def _check_lists_only_abnormal(running: RunningPlatform, mine: dict[str, dict[str, Any]]) -> None:
    """`paygrid check` holds; a refund ABNORMAL at the channel is listed as still PROCESSING
    (the merchant settles it in the channel's platform), and nothing else."""
    abnormal = {rid for rid, r in mine.items() if r["channel_status"] == "ABNORMAL"}
    db = running.database()
    try:
        found = check_database(db, grace=timedelta(0))
    finally:
        db.dispose()
    assert {v.code for v in found} <= {"REFUND_PROCESSING"}, found
    assert {rid for rid in abnormal if any(rid in v.detail for v in found)} == abnormal
    assert len(found) == len(abnormal), found
    if not abnormal:
        check = running.paygrid("check", "--grace-seconds", "0")
        assert check.returncode == 0, check.stdout + check.stderr
