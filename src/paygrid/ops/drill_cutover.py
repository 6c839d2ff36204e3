"""`paygrid drill cutover`: rehearse a cut-over (切量) under load. One bank's payments of one
method are routed between an incumbent channel and a newcomer; the newcomer's weight rises
1% -> 5% -> 20% -> 50% while payers pay; at 50% the newcomer's sandbox degrades for that bank
(its order calls fail), so failover and then the circuit breaker move the traffic back; the
sandbox heals and probes bring the newcomer in again. Then every payment is checked: paid
exactly once (one PAID channel order, one capture voucher, one paid order at the channels),
none left with a live order, the money invariants of `paygrid check` hold."""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from paygrid.api.client import MerchantClient
from paygrid.channels import registry
from paygrid.channels.ports import METHODS
from paygrid.kernel.banks import BANKS
from paygrid.ops.check import check_database
from paygrid.ops.drill_merchant import Receiver
from paygrid.ops.running import RunningPlatform, start_platform, wait_until
from paygrid.routing import store
from paygrid.routing.config import RoutingConfig
from paygrid.routing.rules_file import Vocabulary, parse
from paygrid.routing.service import RELOAD_INTERVAL_S
from paygrid.storage.schema import channel_orders

RAMP_PCT = (1, 5, 20)  # the newcomer's share of the bank, step by step, before the 50% step
TOP_PCT = 50
DEGRADED_ERROR_RATE = 0.8  # of the newcomer's order calls for the bank, while degraded
PAYERS = 4  # payers paying at once
CREATE_RETRY_S = 30.0
CONVERGE_TIMEOUT_S = 120.0
RECOVERY_TIMEOUT_S = 60.0  # the breaker must close again within this, once healed
BREAKER_TIMEOUT_S = 60.0  # and open within this, once degraded
OPEN = 2.0  # paygrid_channel_breaker_state of an open breaker
PROBE_PAUSE_S = 0.5
HEALTH = """\
[health]
window_s = 30
bucket_s = 1
min_calls = 6
max_failure_pct = 50
open_s = 5
probe_interval_s = 0.3
probe_successes = 3
"""
Say = Callable[[str], None]


@dataclass
class Phase:
    """One step of the cut-over and what routing did with its payments."""

    name: str
    weight_pct: int
    payments: list[str] = field(default_factory=list)
    first_choice: Counter[str] = field(default_factory=Counter)  # routing's first decision
    final: Counter[str] = field(default_factory=Counter)  # the channel that took the money
    failovers: int = 0
    breaker_out: int = 0  # decisions that left the newcomer out: its breaker was open

    def row(self, newcomer: str) -> dict[str, Any]:
        n = len(self.payments)
        return {
            "phase": self.name,
            "weight_pct": self.weight_pct,
            "payments": n,
            "routed_to_newcomer_pct": round(100 * self.first_choice[newcomer] / n, 1) if n else 0,
            "paid_through": dict(self.final),
            "failovers": self.failovers,
            "newcomer_out_by_breaker": self.breaker_out,
        }


@dataclass
class CutoverReport:
    phases: list[Phase] = field(default_factory=list)
    breaker_states: dict[str, float] = field(default_factory=dict)  # after degrade / after heal
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class CutoverDrill:
    def __init__(self, running: RunningPlatform, payments: int, seed: int, say: Say) -> None:
        self.running, self.per_phase, self.seed, self.say = running, payments, seed, say
        self.pair = registry.DRILL_CUTOVER
        self.client: MerchantClient = running.client()
        self.receiver = Receiver(running.credentials["secret"], 0.0, random.Random(seed))
        self.http = httpx.Client(timeout=10)
        self.lock = threading.Lock()
        self.report = CutoverReport()

    # --- the operator's side: rules, weights, faults ---------------------------------------
    def configure(self) -> None:
        p = self.pair
        text = HEALTH + (
            f'[[rule]]\nname = "cutover-{p.bank.lower()}"\nmethods = ["{p.method}"]\n'
            f'banks = ["{p.bank}"]\nchannels = ["{p.incumbent}", "{p.newcomer}"]\n'
        )
        vocabulary = Vocabulary(registry.NAMES, METHODS, tuple(BANKS))

        def rules(base: RoutingConfig) -> RoutingConfig:
            return parse(text, vocabulary, base).config

        self._change("rules-apply", "the cut-over rule", rules)

    def set_weight(self, pct: int) -> None:
        p = self.pair
        self._change(
            "set-weight", f"{p.newcomer} at {pct}% of {p.bank}",
            lambda c: c.with_weight(p.bank, p.newcomer, pct * 100),
        )  # fmt: skip

    def _change(
        self, action: str, why: str, make: Callable[[RoutingConfig], RoutingConfig]
    ) -> None:
        db = self.running.database()
        try:
            version = store.change(db, action, "drill", why, make)
        finally:
            db.dispose()
        self.say(f"routing version {version.version}: {why}")
        time.sleep(RELOAD_INTERVAL_S + 0.5)  # every process takes it within the interval

    def degrade(self, rate: float) -> None:
        p = self.pair
        faults = {"bank": p.bank, "error_rate": rate, "seed": self.seed}
        got = self.running.channel_sandbox(p.newcomer, "POST", "/sandbox/faults", faults)
        if not got.is_success:
            raise RuntimeError(f"{p.newcomer} sandbox refused the faults: {got.text}")
        self.say(f"{p.newcomer} degraded for {p.bank}: error rate {rate:.0%}")

    # --- the payers -------------------------------------------------------------------------
    def drive(self, phase: Phase, count: int | None = None) -> None:
        first = len(phase.payments)
        numbers = range(first, first + (count or self.per_phase))
        with ThreadPoolExecutor(PAYERS) as pool:
            list(pool.map(lambda i: self._one(phase, i), numbers))

    def _one(self, phase: Phase, i: int) -> None:
        p = self.pair
        body = {
            "out_trade_no": f"cut-{phase.name}-{i}-{secrets.token_hex(3)}",
            "amount": {"total": 100 + i, "currency": "CNY"},
            "description": "cut-over drill",
            "notify_url": self.receiver.url,
            "method": p.method,
            "payer": {"bank": p.bank},
            "return_url": "https://shop.example/back",
        }
        payment = self._create(body)
        if payment is None:
            with self.lock:
                self.report.problems.append(f"{body['out_trade_no']}: never placed")
            return
        channel = str(payment["channel"])
        pay = registry.spec(channel).sandbox_pay(payment, "SUCCESS")
        url = self.running.sandbox_urls[channel] + "/sandbox/pay"
        paid = self.http.post(url, json=pay)
        with self.lock:
            phase.payments.append(str(payment["payment_id"]))
            if paid.status_code != 200:
                self.report.problems.append(f"{payment['payment_id']}: pay {paid.text[:200]}")

    def _create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """As a merchant does: a 503 (the channel could not confirm) is repeated, same body."""
        deadline = time.monotonic() + CREATE_RETRY_S
        while time.monotonic() < deadline:
            answer = self.client.create_payment(body)
            if answer.status_code in (200, 201):
                created: dict[str, Any] = answer.json()
                return created
            time.sleep(0.2)
        return None

    # --- what happened ----------------------------------------------------------------------
    def tally(self, phase: Phase) -> None:
        """Routing's decisions and the paying channel of each payment, from the database."""
        shown = _orders(self.running, phase.payments)
        for orders in shown.values():
            first = json.loads(orders[0]["route"] or "{}")
            phase.first_choice[first.get("channel") or orders[0]["channel"]] += 1
            out = first.get("out") or {}
            if "breaker" in str(out.get(self.pair.newcomer, "")):
                phase.breaker_out += 1
            phase.failovers += len(orders) > 1
            phase.final[orders[-1]["channel"]] += 1  # the live or paid one: the last
        self.report.phases.append(phase)

    def breaker(self) -> float:
        p = self.pair
        needle = f'paygrid_channel_breaker_state{{bank="{p.bank}",channel="{p.newcomer}"}} '
        for url in self.running.ops_urls():
            for line in self.http.get(url + "/metrics").text.splitlines():
                if line.startswith(needle):
                    return float(line.split()[-1])
        return 0.0


def _orders(running: RunningPlatform, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    db = running.database()
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(channel_orders)
                .where(channel_orders.c.payment_id.in_(ids))
                .order_by(channel_orders.c.created_at, channel_orders.c.order_id)
            ).all()
    finally:
        db.dispose()
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row.payment_id, []).append(dict(row._mapping))
    return found


def run_cutover(payments: int, seed: int, data_dir: Path, say: Say) -> CutoverReport:
    """Start the embedded platform in ``data_dir``, rehearse the cut-over, check, stop."""
    running = start_platform(data_dir)
    try:
        drill = CutoverDrill(running, payments, seed, say)
        try:
            _rehearse(drill)
            _verify(drill)
        finally:
            drill.receiver.server.shutdown()
            drill.receiver.server.server_close()
            drill.http.close()
        return drill.report
    finally:
        running.stop()


def _rehearse(drill: CutoverDrill) -> None:
    p, say, report = drill.pair, drill.say, drill.report
    drill.configure()
    for pct in RAMP_PCT:
        drill.set_weight(pct)
        phase = Phase(f"ramp-{pct}", pct)
        drill.drive(phase)
        drill.tally(phase)
        say(f"{pct}% of {p.bank} to {p.newcomer}: {phase.row(p.newcomer)}")
    drill.set_weight(TOP_PCT)
    drill.degrade(DEGRADED_ERROR_RATE)
    phase = Phase("degraded", TOP_PCT)  # failover saves these payments; the breaker learns
    drill.drive(phase)
    deadline = time.monotonic() + BREAKER_TIMEOUT_S
    while drill.breaker() != OPEN and time.monotonic() < deadline:
        drill.drive(phase, PAYERS)  # load until the breaker has seen enough failures
    drill.tally(phase)
    say(f"{TOP_PCT}%, degraded: {phase.row(p.newcomer)}")
    phase = Phase("held-out", TOP_PCT)  # still degraded: the breaker keeps traffic away
    drill.drive(phase)
    drill.tally(phase)
    report.breaker_states["while_degraded"] = drill.breaker()
    say(f"{TOP_PCT}%, still degraded: {phase.row(p.newcomer)}")
    drill.degrade(0.0)
    # Probes bring the newcomer back: payments flow until its breaker reads closed again.
    recovering = Phase("recovering", TOP_PCT)
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while drill.breaker() != 0 and time.monotonic() < deadline:
        drill.drive(recovering, PAYERS)
        time.sleep(PROBE_PAUSE_S)
    drill.tally(recovering)
    say(f"{TOP_PCT}%, recovering: {recovering.row(p.newcomer)}")
    phase = Phase("healed", TOP_PCT)
    drill.drive(phase)
    drill.tally(phase)
    report.breaker_states["after_heal"] = drill.breaker()
    say(f"{TOP_PCT}%, healed: {phase.row(p.newcomer)}")


def _verify(drill: CutoverDrill) -> None:
    """Nothing lost, nothing doubled: each payment paid once, at one channel, once booked."""
    report, p = drill.report, drill.pair
    ids = [pid for phase in report.phases for pid in phase.payments]

    def all_paid() -> bool:
        return all(drill.client.get_payment(pid).json()["status"] == "SUCCESS" for pid in ids)

    with contextlib.suppress(TimeoutError):  # what did not converge is reported below
        wait_until(all_paid, timeout=CONVERGE_TIMEOUT_S, interval=1.0)
        wait_until(lambda: set(ids) <= set(drill.receiver.ids.values()), timeout=30.0)
    unnotified = set(ids) - set(drill.receiver.ids.values())
    if unnotified:
        report.problems.append(f"{len(unnotified)} payments never notified the merchant")
    orders = _orders(drill.running, ids)
    paid_refs: Counter[str] = Counter()
    for channel in (p.incumbent, p.newcomer):
        spec = registry.spec(channel)
        listed = drill.running.channel_sandbox(channel, "GET", "/sandbox/orders?limit=1000")
        for o in listed.json()["orders"]:
            if o["trade_state"] in spec.sandbox_paid_states:
                paid_refs[f"{channel}:{o['out_trade_no']}"] += 1
    for pid in ids:
        status = drill.client.get_payment(pid).json()["status"]
        mine = orders.get(pid, [])
        at_channels = sum(paid_refs[f"{o['channel']}:{o['channel_ref']}"] for o in mine)
        paid_orders = [o for o in mine if o["status"] == "PAID"]
        live = [o for o in mine if o["status"] in ("REQUESTED", "OPEN")]
        if status != "SUCCESS" or len(paid_orders) != 1 or at_channels != 1 or live:
            report.problems.append(
                f"{pid}: {status}, {len(paid_orders)} paid orders, paid {at_channels}x at the "
                f"channels, {len(live)} live orders"
            )
    db = drill.running.database()
    try:
        report.problems += [f"paygrid check: {v}" for v in check_database(db, timedelta(0))]
    finally:
        db.dispose()
    held_out = next(ph for ph in report.phases if ph.name == "held-out")
    recovering = next(ph for ph in report.phases if ph.name == "recovering")
    healed = next(ph for ph in report.phases if ph.name == "healed")
    if not held_out.breaker_out or report.breaker_states.get("while_degraded", 0) < 1:
        report.problems.append("the breaker never took the degraded channel out")
    elif (
        2 * held_out.first_choice[p.newcomer] >= held_out.weight_pct * len(held_out.payments) / 100
    ):
        report.problems.append("the degraded channel kept more than half its share")
    back = recovering.first_choice[p.newcomer] + healed.first_choice[p.newcomer]
    if not back or report.breaker_states.get("after_heal") != 0:
        report.problems.append("the healed channel was never probed back in")


def summary(report: CutoverReport) -> dict[str, Any]:
    pair = registry.DRILL_CUTOVER
    return {
        "cutover": f"{pair.bank} {pair.method}: {pair.incumbent} -> {pair.newcomer}",
        "phases": [ph.row(pair.newcomer) for ph in report.phases],
        "breaker_state": report.breaker_states,
        "problems": len(report.problems),
    }
