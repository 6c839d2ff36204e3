"""`paygrid drill crash`: prove crash safety. Start the production profile, drive payments on
every channel of the registry in turn, refunds of a share of them (full, or several partial ones
at once: :mod:`paygrid.ops.drill_refunds`) and channel callbacks (duplicated, delayed, dropped)
through it, SIGKILL random processes at random moments (and NATS once, and PostgreSQL once), let
the supervisor restart them, then check that the platform converged: every payment the channel
took money for is SUCCESS and every refund it made is SUCCESS, each exactly once in the ledger,
no payment refunded beyond its amount, the merchant got every notification (deduplicable by
id), the outbox drained and nothing is stuck. Bounded in payments and seconds; stops by itself."""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from paygrid.api.client import MerchantClient
from paygrid.channels import registry
from paygrid.ops import drill_refund_checks
from paygrid.ops.check import check_database
from paygrid.ops.drill_merchant import Receiver
from paygrid.ops.drill_refunds import Refunder, RefundFigures
from paygrid.ops.launch import launch_prod
from paygrid.payments.events import PaymentSucceeded
from paygrid.platform.workers import COPY_SEPARATOR, ROLE_NAMES
from paygrid.storage.database import Database
from paygrid.storage.schema import notifications, outbox, payments

KILLABLE_ROLES = (*ROLE_NAMES, *(f"sandbox-{name}" for name in registry.NAMES))
PAID, UNPAID = "PAID", "UNPAID"  # a sandbox order's state, whatever the channel calls it
CONVERGE_TIMEOUT_S = 120.0
START_TIMEOUT_S = 120.0
REQUEST_RETRY_S = 60.0
WALK_AWAY_RATE = 0.1  # payers who never pay; the others pay (and retry for REQUEST_RETRY_S)


def min_paid(created: int, walk_away_rate: float = WALK_AWAY_RATE) -> int:
    """The fewest payments the channel may have been paid for, of ``created``: each payer pays
    with probability 1 - walk_away_rate; five standard deviations below the mean, and at
    least one. Fewer means payers did not really pay, and a drill that passed on that would
    prove nothing."""
    p = 1.0 - walk_away_rate
    return max(1, math.floor(created * p - 5 * math.sqrt(created * p * (1 - p))))


@dataclass
class DrillReport:
    kills: list[str] = field(default_factory=list)
    created: int = 0
    payers: int = 0  # payers who went to pay (the rest walked away)
    pay_confirmed: int = 0  # of them, those the channel answered "paid"
    paid_at_channel: int = 0
    success: int = 0
    closed: int = 0
    notified_ids: int = 0
    notification_posts: int = 0
    converge_s: float = 0.0
    refunds: RefundFigures = field(default_factory=RefundFigures)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Drill:
    def __init__(
        self,
        data_dir: Path,
        payments_n: int,
        seconds: float,
        seed: int,
        say: Callable[[str], None],
        copies: str = "",
    ) -> None:
        self.data_dir = data_dir
        self.copies = copies
        self.n = payments_n
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.say = say
        self.report = DrillReport()
        self.stop_load = threading.Event()
        self.payment_ids: list[str] = []
        self.lock = threading.Lock()

    # --- platform -------------------------------------------------------------------------
    def start(self) -> None:
        launched = launch_prod(
            self.data_dir,
            {
                "PAYGRID_RECOVERY_AFTER_S": "2",
                "PAYGRID_SCHEDULER_INTERVAL_S": "1",
                "PAYGRID_NOTIFY_RETRY_SCALE": "0.02",
                "PAYGRID_COPIES": self.copies,
            },
        )
        self.proc = launched.proc
        self.api = launched.api_url
        self.sandboxes = launched.sandbox_urls
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.data_dir / "profile.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"platform did not start; see {self.data_dir}/paygrid.log")
            time.sleep(0.2)
        profile = json.loads((self.data_dir / "profile.json").read_text())
        self.db = Database(profile["database_url"])
        creds = json.loads((self.data_dir / "demo-merchant.json").read_text())
        self.client = MerchantClient(self.api, creds["mchid"], creds["key_id"], creds["secret"])
        self.receiver = Receiver(creds["secret"], 0.1, random.Random(self.rng.random()))
        self.refunder = Refunder(
            self.client, random.Random(self.rng.random()), REQUEST_RETRY_S, self.say
        )
        self.report.refunds = self.refunder.figures
        faults = {
            "duplicate_rate": 0.2,
            "drop_rate": 0.1,
            "delay_ms": 200,
            "error_rate": 0.03,  # channel API answers 500
            "timeout_rate": 0.02,  # ...or answers after the client gave up
            "timeout_ms": 6000,
            "seed": self.rng.randint(0, 10**6),
        }
        for sandbox in self.sandboxes.values():
            httpx.post(f"{sandbox}/sandbox/faults", json=faults, timeout=5).raise_for_status()
            httpx.post(
                f"{sandbox}/sandbox/settings", json={"retry_scale": 0.02}, timeout=5
            ).raise_for_status()
        self.say(f"platform up: api {self.api}, sandbox faults {faults}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.receiver.server.shutdown()
        self.db.dispose()

    # --- load -----------------------------------------------------------------------------
    def _retry(
        self, call: Callable[[], httpx.Response], accept: tuple[int, ...]
    ) -> httpx.Response | None:
        deadline = time.monotonic() + REQUEST_RETRY_S
        while time.monotonic() < deadline:
            try:
                response = call()
                if response.status_code in accept:
                    return response
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return None

    def _one_payment(self, i: int) -> None:
        channel = registry.NAMES[i % len(registry.NAMES)]  # every channel in turn
        total = self.rng.randint(1, 50_000)
        body = {
            "out_trade_no": f"drill-{i}-{secrets.token_hex(4)}",
            "amount": {"total": total, "currency": "CNY"},
            "description": f"drill {i}",
            "notify_url": self.receiver.url,
            **registry.spec(channel).test_order(),
        }
        key = f"drill-create-{i}-{body['out_trade_no']}"
        created = self._retry(
            lambda: self.client.create_payment(body, idempotency_key=key), (200, 201)
        )
        if created is None or not registry.spec(channel).placed(created.json()):
            self.report.problems.append(
                f"payment {i} could not be created within {REQUEST_RETRY_S}s"
            )
            return
        payment = created.json()
        with self.lock:
            self.payment_ids.append(payment["payment_id"])
            self.report.created += 1
        if self.rng.random() < WALK_AWAY_RATE:
            return  # the payer walks away; closed at the end
        with self.lock:
            self.report.payers += 1
        paid = self._retry(
            lambda: httpx.post(
                f"{self.sandboxes[channel]}/sandbox/pay",
                timeout=5,
                json=registry.spec(channel).sandbox_pay(payment, "SUCCESS"),
            ),
            (200,),
        )
        if paid is not None:
            with self.lock:
                self.report.pay_confirmed += 1
            self.refunder.maybe_refund(payment["payment_id"], total)

    def _load(self) -> None:
        started = time.monotonic()
        workers: list[threading.Thread] = []
        for i in range(self.n):
            if self.stop_load.is_set():
                break
            # Spread the payments over the drill's duration.
            while time.monotonic() < started + self.seconds * i / self.n:
                time.sleep(0.01)
            t = threading.Thread(target=self._one_payment, args=(i,), daemon=True)
            t.start()
            workers.append(t)
            while sum(w.is_alive() for w in workers) >= 8:
                time.sleep(0.01)
        for w in workers:
            w.join(REQUEST_RETRY_S * 2)

    # --- chaos ----------------------------------------------------------------------------
    def _pids(self) -> dict[str, int]:
        body = json.loads((self.data_dir / "status.json").read_text())
        return {p["name"]: p["pid"] for p in body["processes"] if p["alive"]}

    def _killable(self) -> list[str]:
        """Every role and sandbox, and every copy of a role the platform runs."""
        copies = [n for n in self._pids() if n.split(COPY_SEPARATOR)[0] in ROLE_NAMES]
        return sorted({*KILLABLE_ROLES, *copies})

    def _kill(self, name: str, started: float) -> None:
        pid = self._pids().get(name)
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        note = f"t+{time.monotonic() - started:5.1f}s SIGKILL {name} (pid {pid})"
        self.report.kills.append(note)
        self.say(note)

    def _chaos(self, started: float) -> None:
        once = {
            "nats": self.rng.uniform(0.2, 0.5) * self.seconds,
            "postgres": self.rng.uniform(0.55, 0.8) * self.seconds,
        }
        while time.monotonic() - started < self.seconds:
            time.sleep(self.rng.uniform(0.5, 2.0))
            elapsed = time.monotonic() - started
            for name, at in list(once.items()):
                if elapsed >= at:
                    self._kill(name, started)
                    del once[name]
            self._kill(self.rng.choice(self._killable()), started)

    # --- run and verify -------------------------------------------------------------------
    def run(self) -> DrillReport:
        self.start()
        try:
            started = time.monotonic()
            chaos = threading.Thread(target=self._chaos, args=(started,), daemon=True)
            chaos.start()
            self._load()
            chaos.join()
            self.refunder.finish()
            self.report.problems.extend(self.refunder.problems)
            self.say(f"load done: {self.report.created} payments created; converging")
            self._close_unpaid()
            self._converge()
        finally:
            self.stop()
        return self.report

    def _close_unpaid(self) -> None:
        for payment_id in list(self.payment_ids):
            got = self._retry(lambda pid=payment_id: self.client.get_payment(pid), (200,))  # type: ignore[misc]
            if got is not None and got.json()["status"] in ("CREATED", "PAYING"):
                orders = self._channel_orders()
                if orders.get(payment_id) == UNPAID:
                    self._retry(
                        lambda pid=payment_id: self.client.close_payment(pid),  # type: ignore[misc]
                        (200, 409),
                    )

    def _channel_orders(self) -> dict[str, str]:
        """Every sandbox's orders: PAID, UNPAID, or the channel's own word for the rest."""
        states: dict[str, str] = {}
        for name, sandbox in self.sandboxes.items():
            spec = registry.spec(name)
            listed = httpx.get(
                f"{sandbox}/sandbox/orders", params={"limit": 1000}, timeout=10
            ).json()["orders"]
            for order in listed:
                state = order["trade_state"]
                if state in spec.sandbox_paid_states:
                    state = PAID
                elif state in spec.sandbox_unpaid_states:
                    state = UNPAID
                states[order["out_trade_no"]] = state
        return states

    def _converge(self) -> None:
        started = time.monotonic()
        last: list[str] = []
        while time.monotonic() - started < CONVERGE_TIMEOUT_S:
            try:
                last = self._verify()
            except Exception as exc:  # the platform may still be coming back
                last = [f"verification could not run: {exc}"]
            if not last:
                break
            time.sleep(1.0)
        self.report.converge_s = round(time.monotonic() - started, 1)
        self.report.problems.extend(last)

    def _verify(self) -> list[str]:
        problems: list[str] = []
        channel = self._channel_orders()
        with self.db.read() as conn:
            rows = {
                r.payment_id: r.status
                for r in conn.execute(select(payments.c.payment_id, payments.c.status))
            }
            pending_notes = conn.execute(
                select(func.count()).where(notifications.c.status != "DELIVERED")
            ).scalar_one()
            unpublished = conn.execute(
                select(func.count()).where(outbox.c.published_at.is_(None))
            ).scalar_one()
            success_ids = {
                r.resource_id: r.notify_id
                for r in conn.execute(
                    select(notifications.c.resource_id, notifications.c.notify_id).where(
                        notifications.c.event_type == PaymentSucceeded.TYPE
                    )
                )
            }
        paid = [pid for pid, state in channel.items() if state == PAID]
        self.report.paid_at_channel = len(paid)
        self.report.success = sum(1 for s in rows.values() if s == "SUCCESS")
        self.report.closed = sum(1 for s in rows.values() if s == "CLOSED")
        for pid in paid:
            if rows.get(pid) != "SUCCESS":
                problems.append(f"channel took money for {pid} but paygrid says {rows.get(pid)}")
        problems += self._payers_paid()
        for pid, status in rows.items():
            if status == "SUCCESS" and channel.get(pid) != PAID:
                problems.append(f"{pid} is SUCCESS but the channel says {channel.get(pid)}")
            if status in ("CREATED", "PAYING"):
                problems.append(f"{pid} is stuck in {status}")
            if status == "SUCCESS" and success_ids.get(pid) not in self.receiver.ids:
                problems.append(f"merchant never acknowledged the notification for {pid}")
        if pending_notes:
            problems.append(f"{pending_notes} notifications not delivered")
        if unpublished:
            problems.append(f"{unpublished} events still in the outbox")
        problems += [f"{v.code}: {v.detail}" for v in check_database(self.db, timedelta(0))]
        problems += drill_refund_checks.verify(
            self.db,
            self.sandboxes,
            self.report.refunds,
            set(self.receiver.ids),
            self.refunder.asked,
        )
        if self.receiver.bad_signatures:
            problems.append(f"{self.receiver.bad_signatures} notifications had bad signatures")
        self.report.notified_ids = len(self.receiver.ids)
        self.report.notification_posts = self.receiver.posts
        return problems

    def _payers_paid(self) -> list[str]:
        """The drill proves something only if payers really paid, as many as expected."""
        r = self.report
        problems = []
        if r.paid_at_channel < min_paid(r.created):
            problems.append(
                f"only {r.paid_at_channel} of {r.created} payments were paid at the channel "
                f"(at least {min_paid(r.created)} expected)"
            )
        if not r.pay_confirmed <= r.paid_at_channel <= r.payers:
            problems.append(
                f"{r.paid_at_channel} paid at the channel, but {r.payers} payers went to pay "
                f"and {r.pay_confirmed} were told they paid"
            )
        if r.success != r.paid_at_channel:
            problems.append(f"{r.success} SUCCESS in paygrid, {r.paid_at_channel} at the channel")
        return problems


def run_drill(
    payments_n: int,
    seconds: float,
    seed: int,
    data_dir: Path | None,
    say: Callable[[str], None],
    copies: str = "",
) -> DrillReport:
    """``copies``: more copies of roles (the ``copies`` setting), killed at random too."""
    assert 1 <= payments_n <= 1000 and 5 <= seconds <= 600, "drill bounds"
    root = data_dir or Path(tempfile.mkdtemp(prefix="paygrid-drill-"))
    return Drill(root, payments_n, seconds, seed, say, copies).run()


def summary(report: DrillReport) -> dict[str, Any]:
    return {
        "kills": len(report.kills),
        "created": report.created,
        "payers": report.payers,
        "pay_confirmed": report.pay_confirmed,
        "paid_at_channel": report.paid_at_channel,
        "success": report.success,
        "closed": report.closed,
        "notified_ids": report.notified_ids,
        "notification_posts": report.notification_posts,
        **report.refunds.summary(),
        "converge_s": report.converge_s,
        "ok": report.ok,
    }
