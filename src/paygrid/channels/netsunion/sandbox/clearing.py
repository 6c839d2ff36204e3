"""Clearing (清算): batches, the clearing file per batch, and settlement into the reserve
account (MODELLED: no public description of NetsUnion's batches or files).

A Beijing day has ``batches_per_day`` clearing batches, equal slices of the day; a trade
decided in slice n of day D is cleared in batch ``yyyyMMdd`` + ``nn`` with settlement date D.
The member downloads a day's files with epcc.421: one file per batch (empty batches too), each
announced with its SM3 digest and a one-time URL, out at ``bill_ready_hour`` on D+1 or at once
after ``POST /sandbox/close-day``. Closing a day also pays the day's net (debits − refunds −
fees + fees returned) into the reserve account at the bank sandbox, as the other sandboxes do.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from paygrid.channels.bank.settle import settle_day
from paygrid.channels.netsunion import crypto, wire
from paygrid.channels.netsunion.bill import ClearingRow, file_name, write_file
from paygrid.channels.netsunion.capabilities import SETTLEMENT_PREFIX
from paygrid.channels.netsunion.sandbox import protocol as p
from paygrid.channels.netsunion.sandbox.store import Trade
from paygrid.kernel.money import rate_fee

if TYPE_CHECKING:
    from paygrid.channels.netsunion.sandbox.service import NetsUnionSandbox

DAY_SECONDS = 86_400
FILE_URL_TTL_SECONDS = 60
FILES_PATH = "/epcc/files"
PAYER_NAME = "网联清算有限公司"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=wire.BEIJING)


def batch_of(epoch: float, batches: int) -> tuple[date, str]:
    """(settlement date, BatchId) of a trade decided at ``epoch``."""
    at = datetime.fromtimestamp(epoch, wire.BEIJING)
    seconds = at.hour * 3600 + at.minute * 60 + at.second
    number = seconds * batches // DAY_SECONDS + 1
    return at.date(), f"{at:%Y%m%d}{number:02d}"


def _date(text: object) -> date | None:
    if not isinstance(text, str) or not _DAY.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def ready(sandbox: NetsUnionSandbox, day: date, now: float) -> bool:
    if sandbox.store.day_closed_at(day.isoformat()) is not None:
        return True
    ready_at = _start(day) + timedelta(days=1, hours=sandbox.settings.bill_ready_hour)
    return now >= ready_at.timestamp()


def files(sandbox: NetsUnionSandbox, message: wire.Message, now: float) -> wire.Node:
    """The epcc.422 answer: every batch file of the day, each with digest and URL."""
    day = _date(message.text("FileInf/SttlmDt"))
    if day is None:
        raise p.bad("FileInf/SttlmDt 须为 YYYY-MM-DD")
    if not ready(sandbox, day, now):
        raise p.BusinessRefusal(p.FILES_NOT_READY, "清算文件尚未生成")
    entries = []
    for batch_id, rows in day_batches(sandbox, day).items():
        content = write_file(sandbox.member_id, batch_id, day, rows)
        token = secrets.token_urlsafe(24)
        name = file_name(sandbox.member_id, day, batch_id)
        sandbox.store.save_file(token, name, content, now + FILE_URL_TTL_SECONDS)
        entries.append(
            {
                "BatchId": batch_id,
                "FileNm": name,
                "FileSz": str(len(content)),
                "FileDgst": crypto.sm3(content).hex(),
                "FileUrl": f"{sandbox.public_base_url}{FILES_PATH}/{token}",
            }
        )
    return {
        "BizInf": {"BizStsCd": wire.BIZ_SUCCESS},
        "FileInf": {"SttlmDt": day.isoformat()},
        "FileList": {"FileInf": entries},
    }


def day_batches(sandbox: NetsUnionSandbox, day: date) -> dict[str, list[ClearingRow]]:
    """Every batch of the day (empty ones too) with its rows, the clearing faults applied."""
    batches = sandbox.settings.batches_per_day
    out: dict[str, list[ClearingRow]] = {f"{day:%Y%m%d}{n:02d}": [] for n in range(1, batches + 1)}
    for row, batch_id in _faulty(sandbox, _rows(sandbox, day), day):
        out.setdefault(batch_id, []).append(row)
    return out


def _rows(sandbox: NetsUnionSandbox, day: date) -> list[tuple[ClearingRow, str]]:
    start = _start(day).timestamp()
    traded = sandbox.store.finished_between(sandbox.member_id, start, start + DAY_SECONDS)
    return [(_row(t), t.batch_id) for t in traded]


def _row(trade: Trade) -> ClearingRow:
    assert trade.finished_at is not None
    debit = trade.kind in p.PAYMENT_KINDS
    return ClearingRow(
        trx_id=trade.trx_id,
        ori_trx_id="" if debit else trade.ori_trx_id,
        sys_trx_id=trade.sys_trx_id,
        category=wire.DEBIT_CATEGORY if debit else wire.REFUND_CATEGORY,
        bank_id=trade.bank_id,
        amount=trade.amount,
        fee=trade.fee,
        finished_at=datetime.fromtimestamp(trade.finished_at, wire.BEIJING),
        msg_tp=p.MSG_TPS[trade.kind],
    )


def _faulty(
    sandbox: NetsUnionSandbox, rows: list[tuple[ClearingRow, str]], day: date
) -> list[tuple[ClearingRow, str]]:
    faults = sandbox.faults
    config = faults.config
    kept = [r for r in rows if not faults.roll(config.missing_rate, scoped=False)]
    kept = [
        (replace(row, amount=row.amount + 1), batch)
        if faults.roll(config.wrong_amount_rate, scoped=False)
        else (row, batch)
        for row, batch in kept
    ]
    return kept + [_made_up(sandbox, day) for _ in range(config.extra_lines)]


def _made_up(sandbox: NetsUnionSandbox, day: date) -> tuple[ClearingRow, str]:
    """A debit line for a trade the sandbox never had (长款 for the member's recon)."""
    faults = sandbox.faults
    at = _start(day) + timedelta(seconds=faults.randint(0, DAY_SECONDS - 1))
    at = min(at, datetime.now(wire.BEIJING))
    amount = faults.randint(1, 100_000)
    _, batch = batch_of(at.timestamp(), sandbox.settings.batches_per_day)
    row = ClearingRow(
        trx_id=f"SBXEXTRA{faults.randint(0, 10**16):016d}",
        ori_trx_id="",
        sys_trx_id=p.new_number("NU", at.timestamp()),
        category=wire.DEBIT_CATEGORY,
        bank_id="C1010211000012",
        amount=amount,
        fee=rate_fee(amount, sandbox.settings.fee_rate_ppm),
        finished_at=at,
    )
    return row, batch


def close_day(sandbox: NetsUnionSandbox, text: object, now: float) -> dict[str, Any]:
    day = _date(text)
    if day is None:
        raise p.SandboxError(400, "PARAM_ERROR", "date 必须是 YYYY-MM-DD")
    if day > datetime.fromtimestamp(now, wire.BEIJING).date():
        raise p.SandboxError(400, "PARAM_ERROR", "不能结束尚未开始的营业日")
    closed_at = sandbox.store.close_day(day.isoformat(), now)
    return {
        "date": day.isoformat(),
        "closed_at": p.beijing(closed_at),
        "bill_ready": True,
        "batches": list(day_batches(sandbox, day)),
        "settlement": settle(sandbox, day),
    }


def settle(sandbox: NetsUnionSandbox, day: date) -> dict[str, object]:
    """Pay the day's net into the reserve account (T+``settle_days``), with the faults set."""
    net = 0
    for row, _ in _rows(sandbox, day):
        if row.category == wire.DEBIT_CATEGORY:
            net += row.amount - row.fee
        else:
            net -= row.amount - row.fee
    terms = sandbox.faults.config.settlement_terms(sandbox.settings.settle_days)
    return settle_day(SETTLEMENT_PREFIX, sandbox.member_id, day, net, terms, PAYER_NAME)
