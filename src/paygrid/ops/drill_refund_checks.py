"""The crash drill's final refund checks (退款核对): what the channels' sandboxes say they gave
back against what paygrid holds, its counters, its ledger and its merchant notifications, and
against what the drill was answered. :func:`gather` reads the state; :func:`refund_problems`
judges it, a pure function (tested on its own in tests/unit/test_drill_refunds.py)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select

from paygrid.channels import registry
from paygrid.ops.drill_refunds import ACCEPTED, Asked, RefundFigures
from paygrid.payments.events import RefundSucceeded
from paygrid.storage.database import Database
from paygrid.storage.schema import ledger_vouchers, notifications, payments, refunds

LISTED_MAX = 1000  # /sandbox/refunds answers at most this many: more cannot be verified


@dataclass(frozen=True, slots=True)
class ChannelRefund:
    """A refund as its channel's sandbox lists it; ``out_refund_no`` is paygrid's channel_ref."""

    channel: str
    out_refund_no: str
    amount: int
    status: str  # the channel's own word
    refunded: bool  # the money went back (the registry's sandbox_refunded_states)


@dataclass(frozen=True, slots=True)
class PaygridRefund:
    refund_id: str
    payment_id: str
    channel: str
    channel_ref: str
    out_refund_no: str
    amount: int
    status: str


@dataclass(frozen=True, slots=True)
class PaymentCounters:
    payment_id: str
    amount: int
    refunded_amount: int
    refunding_amount: int


@dataclass(frozen=True, slots=True)
class RefundState:
    """Everything the checks compare, read at one moment."""

    channel: Sequence[ChannelRefund]
    refunds: Sequence[PaygridRefund]
    payments: Mapping[str, PaymentCounters]  # the payments with refunds
    vouchers: Mapping[str, int]  # refund id -> its refund vouchers
    notified: Mapping[str, Sequence[str]]  # refund id -> its refund.succeeded notify ids


def channel_refunds(sandboxes: Mapping[str, str]) -> list[ChannelRefund]:
    """Every sandbox's refunds; raises if one lists too many to verify."""
    listed: list[ChannelRefund] = []
    for name, url in sandboxes.items():
        refunded = registry.spec(name).sandbox_refunded_states
        answer = httpx.get(f"{url}/sandbox/refunds", params={"limit": LISTED_MAX}, timeout=10)
        answer.raise_for_status()
        rows = answer.json()["refunds"]
        if len(rows) >= LISTED_MAX:
            raise RuntimeError(f"{name}'s sandbox holds {LISTED_MAX}+ refunds: too many to verify")
        listed += [
            ChannelRefund(
                name, r["out_refund_no"], int(r["amount"]), r["status"], r["status"] in refunded
            )
            for r in rows
        ]
    return listed


def gather(db: Database, sandboxes: Mapping[str, str]) -> RefundState:
    channel = channel_refunds(sandboxes)
    with db.read() as conn:
        held = [
            PaygridRefund(*row)
            for row in conn.execute(
                select(
                    refunds.c.refund_id,
                    refunds.c.payment_id,
                    refunds.c.channel,
                    refunds.c.channel_ref,
                    refunds.c.out_refund_no,
                    refunds.c.amount,
                    refunds.c.status,
                )
            )
        ]
        counters = {
            row.payment_id: PaymentCounters(*row)
            for row in conn.execute(
                select(
                    payments.c.payment_id,
                    payments.c.amount,
                    payments.c.refunded_amount,
                    payments.c.refunding_amount,
                ).where(payments.c.payment_id.in_(select(refunds.c.payment_id)))
            )
        }
        vouchers = {
            ref: int(n)
            for ref, n in conn.execute(
                select(ledger_vouchers.c.business_ref, func.count())
                .where(ledger_vouchers.c.kind == "refund")
                .group_by(ledger_vouchers.c.business_ref)
            )
        }
        notified: dict[str, list[str]] = defaultdict(list)
        for notify_id, body in conn.execute(
            select(notifications.c.notify_id, notifications.c.body).where(
                notifications.c.event_type == RefundSucceeded.TYPE
            )
        ):
            notified[json.loads(body)["data"]["refund_id"]].append(notify_id)
    return RefundState(channel, held, counters, vouchers, notified)


def verify(
    db: Database,
    sandboxes: Mapping[str, str],
    figures: RefundFigures,
    acknowledged: Collection[str],
    asked: Iterable[Asked],
) -> list[str]:
    """Read the state, count it into ``figures`` and judge it."""
    state = gather(db, sandboxes)
    figures.succeeded_at_channel = sum(c.refunded for c in state.channel)
    figures.success = sum(r.status == "SUCCESS" for r in state.refunds)
    figures.verified = len(state.refunds)
    return refund_problems(state, acknowledged, asked)


def refund_problems(
    state: RefundState, acknowledged: Collection[str], asked: Iterable[Asked]
) -> list[str]:
    """Every refund the channel made is SUCCESS in paygrid and none it did not make; no
    payment's refunds exceed it and its counters equal them; one voucher and one acknowledged
    notification per successful refund; paygrid holds what it accepted and nothing it refused."""
    return [
        *_against_channel(state),
        *_counters(state),
        *_books_and_notices(state, acknowledged),
        *_against_answers(state, list(asked)),
    ]


def _against_channel(state: RefundState) -> list[str]:
    problems: list[str] = []
    at_channel = {(c.channel, c.out_refund_no): c for c in state.channel}
    held = {(r.channel, r.channel_ref): r for r in state.refunds}
    for key, made in at_channel.items():
        mine = held.get(key)
        if mine is None:
            problems.append(f"{made.channel} holds refund {made.out_refund_no} paygrid never made")
        elif made.refunded and (mine.status, mine.amount) != ("SUCCESS", made.amount):
            problems.append(
                f"{made.channel} gave back {made.amount} for refund {mine.refund_id}, but "
                f"paygrid says {mine.status} of {mine.amount}"
            )
    for key, mine in held.items():
        made_at = at_channel.get(key)
        if mine.status == "SUCCESS" and (made_at is None or not made_at.refunded):
            word = made_at.status if made_at else "nothing"
            problems.append(f"refund {mine.refund_id} is SUCCESS but {mine.channel} says {word}")
        if mine.status == "PROCESSING":
            word = made_at.status if made_at else "nothing"
            problems.append(f"refund {mine.refund_id} is stuck PROCESSING ({mine.channel}: {word})")
    return problems


def _counters(state: RefundState) -> list[str]:
    problems: list[str] = []
    succeeded: Counter[str] = Counter()
    processing: Counter[str] = Counter()
    for r in state.refunds:
        if r.status == "SUCCESS":
            succeeded[r.payment_id] += r.amount
        elif r.status == "PROCESSING":
            processing[r.payment_id] += r.amount
    for payment_id, p in state.payments.items():
        back = succeeded[payment_id]
        if back > p.amount:
            problems.append(f"payment {payment_id} of {p.amount} was refunded {back}")
        if (p.refunded_amount, p.refunding_amount) != (back, processing[payment_id]):
            problems.append(
                f"payment {payment_id} says refunded {p.refunded_amount}, in progress "
                f"{p.refunding_amount}; its refunds: {back} SUCCESS, "
                f"{processing[payment_id]} PROCESSING"
            )
    return problems


def _books_and_notices(state: RefundState, acknowledged: Collection[str]) -> list[str]:
    problems: list[str] = []
    status = {r.refund_id: r.status for r in state.refunds}
    for refund_id in state.vouchers:
        if status.get(refund_id) != "SUCCESS":
            problems.append(f"refund voucher for {refund_id}, which is {status.get(refund_id)}")
    for refund_id, refund_status in status.items():
        if refund_status != "SUCCESS":
            continue
        if state.vouchers.get(refund_id, 0) != 1:
            problems.append(
                f"refund {refund_id} has {state.vouchers.get(refund_id, 0)} refund vouchers"
            )
        notes = state.notified.get(refund_id, ())
        if len(notes) != 1:
            problems.append(f"refund {refund_id} has {len(notes)} refund.succeeded notifications")
        elif notes[0] not in acknowledged:
            problems.append(f"merchant never acknowledged the notification of refund {refund_id}")
    return problems


def _against_answers(state: RefundState, asked: Sequence[Asked]) -> list[str]:
    problems: list[str] = []
    by_no = {r.out_refund_no: r for r in state.refunds}
    kept: Counter[str] = Counter()  # per payment: accepted, not FAILED
    for a in asked:
        mine = by_no.get(a.out_refund_no)
        if a.outcome == ACCEPTED:
            if mine is None or (mine.refund_id, mine.amount) != (a.refund_id, a.amount):
                problems.append(f"accepted refund {a.out_refund_no} ({a.refund_id}) is {mine}")
            elif mine.status != "FAILED":
                kept[a.payment_id] += a.amount
        elif mine is not None:
            problems.append(f"refund {a.out_refund_no} was refused ({a.outcome}) but is {mine}")
    for payment_id, total in kept.items():
        counters = state.payments.get(payment_id)
        if counters is None or total > counters.amount:
            problems.append(f"paygrid accepted {total} of refunds of {payment_id}: {counters}")
    return problems
