"""The measured phases against a running platform: payments, then refunds of a share of them.

A payment: a signed ``POST /v1/payments`` (the channel's order placed at its sandbox before
paygrid answers), the payer pays at the sandbox, the sandbox's signed callback, the outbox relay,
the ledger's capture voucher, the merchant's payment.succeeded notification.
A refund: a signed ``POST /v1/refunds``, the channel's refund (its answer, or its refund callback
where the channel sends one), SUCCESS, the ledger's refund voucher, the merchant's
refund.succeeded notification. Each phase ends when every notification has arrived (or at
``--timeout``); its CPU time is read per process over the phase."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common import Probes, spread

from e2e.cpu import PARENT, cores_busy, cpu_meter, per_unit_ms
from e2e.load import PAYMENT_TOTAL, Job, LoadRun, RefundTask, Sample, run_load, split
from e2e.platform_rows import (
    db_counts,
    db_work,
    db_work_per,
    payment_stages,
    refund_stages,
    statuses_over_http,
    wait_drained,
)
from e2e.receiver import NotifyReceiver, Stamps

if TYPE_CHECKING:
    from paygrid.ops.running import RunningPlatform

MIN_DRAIN_S = 5.0
DRAIN_AFTER_S = 30.0  # the outbox and the notifications, once every merchant notification came
FULL_REFUND = (PAYMENT_TOTAL,)
PARTIAL_REFUNDS = (3_333, 2_222)  # two partial refunds of one payment, one after the other
BACKLOG_KEYS = (
    "payments_paying",
    "refunds_processing",
    "outbox_unpublished",
    "notifications_undelivered",
)


@dataclass(frozen=True, slots=True)
class Platform:
    """The running platform and whose CPU is read: ``probes`` are the totals reported,
    ``by_process`` paygrid's processes one by one (embedded: web and background)."""

    running: RunningPlatform
    probes: Probes
    by_process: Probes


def refund_plan(paid: list[Sample], ratio: float) -> list[RefundTask]:
    """The first ``ratio`` of the paid payments, in the order they were made; on each channel
    in turn a payment refunded in full, then one refunded in two partial refunds."""
    chosen = paid[: round(ratio * len(paid))]
    turn: dict[str, int] = {}
    tasks: list[RefundTask] = []
    for s in chosen:
        k = turn.get(s.channel, 0)
        turn[s.channel] = k + 1
        tasks.append(RefundTask(s.ref, s.channel, FULL_REFUND if k % 2 == 0 else PARTIAL_REFUNDS))
    return tasks


def _by_channel(samples: list[Sample], notified: Stamps, after_pay: bool) -> dict[str, Any]:
    """Per channel: how many, create p50/p99, and until the merchant was notified (from the
    payer's pay with ``after_pay``, else from sending the create)."""
    out: dict[str, Any] = {}
    for channel in sorted({s.channel for s in samples}):
        mine = [s for s in samples if s.channel == channel]
        waited = [
            notified[s.ref][1] - (s.start_wall + s.create_s + s.pay_s)
            if after_pay
            else notified[s.ref][0] - s.start
            for s in mine
            if s.ref in notified
        ]
        out[channel] = {"create": spread([s.create_s for s in mine]), "to_notified": spread(waited)}
    return out


def _measure(
    platform: Platform,
    jobs: list[Job],
    receiver: NotifyReceiver,
    kinds: tuple[str, ...],
    timeout: float,
) -> tuple[LoadRun, dict[str, int], bool, dict[str, float], dict[str, float], Any]:
    """Run the load and wait for its notifications, reading CPU time over both."""
    work_before = db_work(platform.running)
    with cpu_meter(platform.probes) as used, cpu_meter(platform.by_process) as used_each:
        load = run_load(jobs)
        backlog = db_counts(platform.running)  # where the work waits when the load returned
        budget = max(MIN_DRAIN_S, timeout - (load.t_end - load.t0))
        complete = receiver.wait_for({s.ref for s in load.samples}, budget, kinds)
    # db_counts' own read is one transaction and a few statements: noise beside N units
    work = db_work_per(work_before, db_work(platform.running), len(load.samples))
    return load, backlog, complete, used, used_each, work


def _writer_busy(db_work: Any, n: int, elapsed: float) -> float | None:
    """The share of the phase SQLite's one writer slot was held (1.0: writes serialise)."""
    held = (db_work or {}).get("write_slot_held_ms")
    return round(held * n / 1000 / elapsed, 3) if held and elapsed > 0 else None


def _common_figures(
    load: LoadRun,
    notified: Stamps,
    used: dict[str, float],
    used_each: dict[str, float],
    unit: str,
    db_work: Any,
) -> dict[str, Any]:
    t_done = max((t for t, _ in notified.values()), default=load.t_end)
    elapsed, load_elapsed = t_done - load.t0, load.t_end - load.t0
    starts = {s.ref: s.start for s in load.samples}
    return {
        "client_errors": load.error_count,
        "error_examples": load.errors,
        "notified": len(notified),
        "load_phase_s": round(load_elapsed, 3),
        "elapsed_s": round(elapsed, 3),
        f"{unit}s_per_s": round(len(notified) / elapsed, 1) if elapsed > 0 else 0.0,
        "create": spread([s.create_s for s in load.samples]),
        "create_to_notified": spread([notified[r][0] - starts[r] for r in notified]),
        f"cpu_ms_per_{unit}": per_unit_ms(used, load.cpu_s, len(notified)),
        f"paygrid_cpu_ms_per_{unit}_by_process": {
            name: round(seconds * 1000 / max(len(notified), 1), 3)
            for name, seconds in sorted(used_each.items(), key=lambda kv: -kv[1])
            if name != PARENT
        },
        f"db_work_per_{unit}": db_work,
        "sqlite_writer_busy": _writer_busy(db_work, len(notified), elapsed),
        "cpu_cores_busy": cores_busy(used, load.cpu_s, elapsed),
    }


def run_payments(
    platform: Platform,
    receiver: NotifyReceiver,
    args: argparse.Namespace,
    channels: tuple[str, ...],
    run_id: str,
) -> tuple[dict[str, Any], list[Sample]]:
    """``args.payments`` payments over ``channels`` in turn; the figures, and the payments
    notified SUCCESS (in the order they were made)."""
    running = platform.running
    jobs = [
        Job(
            "payments",
            i,
            n,
            running.api_url,
            sandbox_urls=dict(running.sandbox_urls),
            channels=channels,
            notify_url=receiver.url,
            creds=running.credentials,
            run_id=run_id,
            deadline_s=args.timeout,
        )
        for i, n in enumerate(split(args.payments, args.concurrency))
        if n
    ]
    kinds = ("payment.succeeded",)
    load, backlog, complete, used, used_each, work = _measure(
        platform, jobs, receiver, kinds, args.timeout
    )
    notified = receiver.received(kinds[0], {s.ref for s in load.samples})
    figures = {
        "payments": args.payments,
        "created_and_paid": len(load.samples),
        "all_notified_within_timeout": complete,
        **_common_figures(load, notified, used, used_each, "payment", work),
        "pay": spread([s.pay_s for s in load.samples]),
        "stages": payment_stages(running, load.samples, notified),
        "by_channel": _by_channel(load.samples, notified, after_pay=True),
        "backlog_at_load_end": {k: backlog[k] for k in BACKLOG_KEYS},
    }
    paid = sorted((s for s in load.samples if s.ref in notified), key=lambda s: s.start)
    return figures, paid


def run_refunds(
    platform: Platform,
    receiver: NotifyReceiver,
    args: argparse.Namespace,
    paid: list[Sample],
    run_id: str,
) -> dict[str, Any]:
    """Refund ``args.refund_ratio`` of the paid payments (``refund_plan``) through the merchant
    API, after the payments' outbox and notifications have drained."""
    running = platform.running
    tasks = refund_plan(paid, args.refund_ratio)
    wait_drained(running, DRAIN_AFTER_S)  # so this phase's CPU is the refunds' own
    jobs = [
        Job(
            "refunds",
            i,
            len(mine),
            running.api_url,
            notify_url=receiver.url,
            creds=running.credentials,
            run_id=run_id,
            deadline_s=args.timeout,
            refunds=tuple(mine),
        )
        for i in range(args.concurrency)
        if (mine := tasks[i :: args.concurrency])
    ]
    kinds = ("refund.succeeded", "refund.failed")
    load, backlog, complete, used, used_each, work = _measure(
        platform, jobs, receiver, kinds, args.timeout
    )
    refs = {s.ref for s in load.samples}
    notified = receiver.received(kinds[0], refs)
    return {
        "refunded_payments": len(tasks),
        "full_refunds": sum(len(t.amounts) == 1 for t in tasks),
        "partial_refunds": sum(len(t.amounts) for t in tasks if len(t.amounts) > 1),
        "refunds": sum(len(t.amounts) for t in tasks),
        "created": len(load.samples),
        "failed_notified": len(receiver.received(kinds[1], refs)),
        "all_notified_within_timeout": complete,
        **_common_figures(load, notified, used, used_each, "refund", work),
        "stages": refund_stages(running, load.samples),
        "by_channel": _by_channel(load.samples, notified, after_pay=False),
        "backlog_at_load_end": {k: backlog[k] for k in BACKLOG_KEYS},
        "statuses_over_http": statuses_over_http(running, "/v1/refunds", sorted(refs)),
    }


def finish(running: RunningPlatform, payment_ids: list[str]) -> dict[str, Any]:
    """After both phases: drain, read every payment back over HTTP, run `paygrid check`."""
    counts = wait_drained(running, DRAIN_AFTER_S)
    statuses = statuses_over_http(running, "/v1/payments", payment_ids)
    check = running.paygrid("check", "--grace-seconds", "0")
    return {
        "payment_statuses_over_http": statuses,
        "db_after_drain": counts,
        "check_exit_code": check.returncode,
        "check_output": (check.stdout + check.stderr).strip()[-2000:],
    }
