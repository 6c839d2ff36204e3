"""Reconciliation as a job (对账作业): what the ``recon`` role does every pass, and what the
``paygrid recon`` commands share with it.

A pass looks at the last ``recon_lookback_days`` business dates. For each channel (and the
bank's statement) whose bill of a date should be out (its bill-ready time after the date's end)
and is not in yet, it fetches it; a bill not out yet (BILL_NOT_READY) is tried again next pass,
never an error. Then it runs each channel's date (:func:`paygrid.recon.service.reconcile`: one
run at a time, crash-safe) when it has never run, when one of its inputs came in after its last
run (its bill, a neighbouring date's, a statement), or, while the date's window is open, when
its last run left something held or unexplained and is older than ``RERUN_AFTER``.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from paygrid.channels import registry
from paygrid.channels.bank import BANK, STATEMENT_READY_AFTER_S
from paygrid.channels.bank.bill_import import import_bill as import_statement
from paygrid.channels.bank.client import bank_credentials, download_statement
from paygrid.channels.ports import BILL_NOT_READY, ChannelAdapter, ChannelError
from paygrid.config import Settings
from paygrid.kernel.clock import business_date, utcnow
from paygrid.payments.service import PaymentService
from paygrid.recon.bill_store import CURRENT, ImportedBill, Reader, current_bill, import_file
from paygrid.recon.results import ChannelResult
from paygrid.recon.run import REPAIR_CAUSE, WINDOW_DAYS, Repairs, run_channel
from paygrid.recon.service import Outcome, reconcile
from paygrid.recon.settlement import SETTLE_DAYS, SETTLEMENT_WINDOW_DAYS, bank_only
from paygrid.storage.database import Database
from paygrid.storage.schema import recon_bills, recon_cases, recon_runs

log = logging.getLogger("paygrid.recon")

RERUN_AFTER = timedelta(hours=1)  # a date with held or unexplained items is run again this often
JOB_BY = "recon-job"  # who fetched and ran, in recon_bills and recon_runs


class Wiring(Protocol):
    """What a job needs of the bootstrapped platform."""

    settings: Settings
    db: Database
    channels: dict[str, ChannelAdapter]
    payments: PaymentService


class NoReader(LookupError):
    """A channel recon cannot read bills of (unknown, or without a bill reader yet)."""


def reader_for(channel: str) -> Reader:
    if channel == BANK:
        return import_statement
    try:
        reader: Reader | None = registry.spec(channel).bill_reader()
    except registry.UnknownChannel:
        known = ", ".join((*registry.NAMES, BANK))
        raise NoReader(f"unknown channel {channel!r}; known: {known}") from None
    if reader is None:
        raise NoReader(f"{channel} bills cannot be read yet (no bill reader): see docs/recon.md")
    return reader


def download(settings: Settings, channel: str, day: date, adapter: ChannelAdapter | None) -> bytes:
    """The channel's bill of ``day`` through its API; the bank's statement for ``bank``."""
    if channel == BANK:
        creds = bank_credentials(settings.bank_base_url, settings.bank_credentials)
        return download_statement(settings.bank_base_url, creds, day)
    assert adapter is not None and adapter.name == channel
    return adapter.download_bill(day)


def fetch(
    settings: Settings, db: Database, channel: str, day: date, content: bytes, by: str
) -> ImportedBill:
    """Take a downloaded bill in, as ``recon import`` does a dropped file."""
    incoming = settings.data_dir / "recon" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=incoming) as scratch:
        path = Path(scratch) / f"{channel}-{day.isoformat()}.bill"
        path.write_bytes(content)
        reader = reader_for(channel)
        return import_file(db, settings.data_dir, channel, day, path, reader, source="fetch", by=by)


def run_for(
    platform: Wiring, name: str, day: date, grace: timedelta, say: Callable[[str], None]
) -> ChannelResult:
    """Reconcile one channel's date, repairing statuses through the channel's answers."""
    s = platform.settings
    adapter, payments = platform.channels[name], platform.payments

    def repair_payment(payment_id: str, ref: str) -> bool:
        try:
            payments.apply_trade(name, payment_id, adapter.query(ref), REPAIR_CAUSE)
        except ChannelError as exc:  # reported all the same; the next run repairs it
            say(f"{name}: could not ask about {payment_id} to repair it: {exc}")
            return False
        return True

    def repair_refund(refund_id: str, ref: str, payment_ref: str) -> bool:
        try:
            trade = adapter.query_refund(ref, payment_ref)
            payments.apply_refund_trade(name, refund_id, trade, REPAIR_CAUSE)
        except ChannelError as exc:
            say(f"{name}: could not ask about {refund_id} to repair it: {exc}")
            return False
        return True

    return run_channel(
        platform.db,
        s.data_dir,
        name,
        day,
        zone=s.zone,
        fee_rate_ppm=s.channels[name].fee_rate_ppm,
        settlement_prefix=registry.spec(name).settlement_prefix,
        repairs=Repairs(repair_payment, repair_refund),
        voucher_grace=grace,
    )


def bank_run(platform: Wiring, day: date, by: str) -> Outcome | None:
    """The reserve account's side of a date: credits no channel explains (BANK_ONLY), run as
    the channel ``bank``; None without the date's statement."""
    if current_bill(platform.db, BANK, day) is None:
        return None
    prefixes = [spec.settlement_prefix for spec in registry.CHANNELS]

    def strays() -> ChannelResult:
        found = bank_only(platform.db, platform.settings.data_dir, day, prefixes)
        return ChannelResult(BANK, 0, 0, tuple(found), ())

    return reconcile(platform.db, BANK, day, strays, by=by)


# --- the role's pass ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PassDone:
    fetched: int
    ran: tuple[str, ...]  # the channel of each run it made
    failed: tuple[str, ...] = ()  # the channel of each run that raised (logged; next pass again)


def recon_pass(platform: Wiring, grace: timedelta) -> PassDone:
    """Fetch what is due, run what needs it."""
    s, now = platform.settings, utcnow()
    today = business_date(now, s.zone)
    days = [today - timedelta(days=k) for k in range(s.recon_lookback_days, -1, -1)]
    fetched = 0
    for party in _parties():
        for d in days:
            got = _fetch_due(platform, party, d, now)
            if got is None:  # unreachable: its other dates wait for the next pass
                break
            fetched += got
    ran: list[str] = []
    failed: list[str] = []
    for d in days:
        for name in _parties():
            if not _needs_run(platform.db, name, d, today, now):
                continue
            try:  # one date's fault (a bad statement, a bug) must not stop the others
                if _run_one(platform, name, d, grace):
                    ran.append(name)
            except Exception:
                log.exception("recon: the %s run of %s failed; tried again next pass", name, d)
                failed.append(name)
    return PassDone(fetched, tuple(ran), tuple(failed))


def _run_one(platform: Wiring, channel: str, day: date, grace: timedelta) -> bool:
    if channel == BANK:
        return bank_run(platform, day, JOB_BY) is not None
    job = functools.partial(run_for, platform, channel, day, grace, log.warning)
    reconcile(platform.db, channel, day, job, by=JOB_BY)
    return True


def _parties() -> tuple[str, ...]:
    return (*registry.NAMES, BANK)


def ready_at(settings: Settings, channel: str, day: date) -> datetime:
    """When ``channel``'s bill of ``day`` should be out."""
    after = settings.recon_bill_ready_after_s
    if after is None:
        after = (
            STATEMENT_READY_AFTER_S
            if channel == BANK
            else registry.spec(channel).bill_ready_after_s
        )
    end = datetime.combine(day + timedelta(days=1), time(0), ZoneInfo(settings.zone))
    return end + timedelta(seconds=after)


def _fetch_due(platform: Wiring, channel: str, day: date, now: datetime) -> int | None:
    """1 when the date's bill was taken in, 0 when not (not due, not out, refused), None when
    the party could not be reached."""
    s = platform.settings
    if now < ready_at(s, channel, day) or current_bill(platform.db, channel, day) is not None:
        return 0
    try:
        content = download(s, channel, day, platform.channels.get(channel))
        fetch(s, platform.db, channel, day, content, JOB_BY)
    except ChannelError as exc:
        if exc.code == BILL_NOT_READY:
            return 0
        log.warning("recon: %s bill of %s could not be fetched: %s", channel, day, exc)
        return None if exc.retryable else 0
    except Exception:  # a refused bill (BillRefused) or a fault: logged, tried next pass
        log.exception("recon: %s bill of %s could not be taken in", channel, day)
        return 0
    log.info("recon: fetched the %s bill of %s", channel, day)
    return 1


def _needs_run(db: Database, channel: str, day: date, today: date, now: datetime) -> bool:
    if current_bill(db, channel, day) is None:
        return False
    last = _last_run(db, channel, day)
    if last is None:
        return True
    if _inputs_since(db, channel, day) > last["finished_at"]:
        return True
    window_open = today <= day + timedelta(days=WINDOW_DAYS + SETTLE_DAYS + SETTLEMENT_WINDOW_DAYS)
    unsettled = last["held"] > 0 or last["differences"] > 0
    return window_open and unsettled and now - last["finished_at"] >= RERUN_AFTER


def _last_run(db: Database, channel: str, day: date) -> dict[str, Any] | None:
    query = (
        select(recon_runs.c.finished_at, recon_runs.c.held, recon_runs.c.differences)
        .where(recon_runs.c.channel == channel, recon_runs.c.business_date == day.isoformat())
        .order_by(recon_runs.c.finished_at.desc())
        .limit(1)
    )
    with db.read() as conn:
        row = conn.execute(query).first()
    return None if row is None else dict(row._mapping)


def _inputs_since(db: Database, channel: str, day: date) -> datetime:
    """When the last of a date's inputs came in: its bill, its neighbours', the statements."""
    last_statement = day + timedelta(days=SETTLE_DAYS + SETTLEMENT_WINDOW_DAYS)
    own = (recon_bills.c.channel == channel) & recon_bills.c.business_date.between(
        (day - timedelta(days=1)).isoformat(), (day + timedelta(days=1)).isoformat()
    )
    bank = (recon_bills.c.channel == BANK) & recon_bills.c.business_date.between(
        day.isoformat(), last_statement.isoformat()
    )
    query = select(func.max(recon_bills.c.imported_at)).where(
        recon_bills.c.status == CURRENT, own | bank
    )
    with db.read() as conn:
        found: datetime | None = conn.execute(query).scalar_one()
    return found or datetime.min.replace(tzinfo=ZoneInfo("UTC"))


# --- what /metrics shows --------------------------------------------------------------------
def gauges(db: Database) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """(differences by (channel, kind) in each channel's last run of its latest reconciled
    date, open cases by (channel, kind))."""
    with db.read() as conn:
        latest = (
            select(recon_runs.c.channel, func.max(recon_runs.c.business_date).label("day"))
            .group_by(recon_runs.c.channel)
            .subquery()
        )
        rows = conn.execute(
            select(recon_runs.c.channel, recon_runs.c.finished_at, recon_runs.c.result).join(
                latest,
                (latest.c.channel == recon_runs.c.channel)
                & (latest.c.day == recon_runs.c.business_date),
            )
        ).all()
        open_cases = conn.execute(
            select(recon_cases.c.channel, recon_cases.c.kind, func.count())
            .where(recon_cases.c.status == "OPEN")
            .group_by(recon_cases.c.channel, recon_cases.c.kind)
        ).all()
    last: dict[str, Any] = {}
    for r in rows:
        if r.channel not in last or r.finished_at > last[r.channel].finished_at:
            last[r.channel] = r
    differences: dict[tuple[str, str], int] = {}
    for channel, r in last.items():
        for d in json.loads(r.result)["differences"]:
            key = (channel, str(d["kind"]))
            differences[key] = differences.get(key, 0) + 1
    return differences, {(str(c), str(k)): int(n) for c, k, n in open_cases}
