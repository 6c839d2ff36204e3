"""Bills taken in (账单导入): a channel's bill of a business date, read by the channel's own
reader into recon's normalised lines, kept as a Parquet file under the data dir, registered in
``recon_bills`` with its totals.

Importing the same file again changes nothing. A different file for the same channel and date
replaces the current one: the old row stays, marked REPLACED with when and by which (the audit
record), and the new one is CURRENT. A refused file leaves nothing behind: the Parquet file is
written only once the whole bill has read and added up, and registered after that, in one
transaction.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import Connection, insert, select, update

from paygrid.kernel.clock import utcnow
from paygrid.kernel.ids import new_id
from paygrid.recon.bill_format import BillRefused, BillTotals
from paygrid.storage.database import Database
from paygrid.storage.schema import recon_bills

Reader = Callable[[duckdb.DuckDBPyConnection, Path, date, str], BillTotals]
"""A channel's bill reader: (connection, file, business date, table to create) -> totals."""
DUCKDB_THREADS = 2
DUCKDB_MEMORY_LIMIT = "4GB"  # a 10-million-line day stays well inside it (docs/recon.md)
MAX_BILL_BYTES = 8 * 1024**3
CURRENT, REPLACED = "CURRENT", "REPLACED"


@dataclass(frozen=True, slots=True)
class ImportedBill:
    bill_id: str
    channel: str
    business_date: date
    file_name: str
    sha256: str
    totals: BillTotals
    already: bool  # this very file was the current bill: nothing changed
    replaced: str | None  # the bill it replaced


def bills_dir(data_dir: Path) -> Path:
    return data_dir / "recon" / "bills"


def import_file(
    db: Database,
    data_dir: Path,
    channel: str,
    day: date,
    path: Path,
    reader: Reader,
    *,
    source: str,
    by: str,
) -> ImportedBill:
    """Take ``path`` in as ``channel``'s bill of ``day`` (idempotent); BillRefused when bad."""
    size = _checked_size(path)
    sha = file_sha256(path)
    current = current_bill(db, channel, day)
    if current is not None and current["sha256"] == sha:
        return _imported(current, already=True, replaced=None)
    stored = _normalise(path, day, reader, bills_dir(data_dir) / channel / day.isoformat(), sha)
    totals, parquet = stored
    relative = str(parquet.relative_to(data_dir))
    row = {
        "bill_id": new_id("bil"),
        "channel": channel,
        "business_date": day.isoformat(),
        "source": source,
        "file_name": path.name[:255],
        "sha256": sha,
        "size_bytes": size,
        "lines": totals.lines,
        "payments": totals.payments,
        "payment_amount": totals.payment_amount,
        "refunds": totals.refunds,
        "refund_amount": totals.refund_amount,
        "fee": totals.fee,
        "stored_path": relative,
        "status": CURRENT,
        "imported_at": utcnow(),
        "imported_by": by[:64],
    }
    with db.transaction() as conn:
        return _register(conn, row)


def _register(conn: Connection, row: dict[str, Any]) -> ImportedBill:
    """Make ``row`` the current bill of its channel and date, in the caller's transaction."""
    current = _current_in(conn, row["channel"], row["business_date"])
    if current is not None and current["sha256"] == row["sha256"]:  # imported meanwhile
        return _imported(current, already=True, replaced=None)
    if current is not None:
        conn.execute(
            update(recon_bills)
            .where(recon_bills.c.bill_id == current["bill_id"], recon_bills.c.status == CURRENT)
            .values(status=REPLACED, replaced_at=row["imported_at"], replaced_by=row["bill_id"])
        )
    conn.execute(insert(recon_bills).values(**row))
    return _imported(row, already=False, replaced=current["bill_id"] if current else None)


def _normalise(
    path: Path, day: date, reader: Reader, out_dir: Path, sha: str
) -> tuple[BillTotals, Path]:
    """Read and check the bill with DuckDB, then write its normalised lines as Parquet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet = out_dir / f"{sha[:16]}.parquet"
    partial = parquet.with_suffix(".parquet.partial")
    config: dict[str, str | bool | int | float | list[str]] = {
        "threads": DUCKDB_THREADS,
        "memory_limit": DUCKDB_MEMORY_LIMIT,
    }
    with duckdb.connect(config=config) as con:
        totals = reader(con, path, day, "bill")
        con.execute(f"COPY bill TO '{_sql_text(partial)}' (FORMAT parquet)")
    os.replace(partial, parquet)
    return totals, parquet


def bills(
    db: Database, channel: str | None = None, day: date | None = None
) -> list[dict[str, Any]]:
    """Every bill taken in (newest first), current and replaced, optionally of one channel or
    date: what `recon bills` lists."""
    query = select(recon_bills).order_by(recon_bills.c.imported_at.desc())
    if channel is not None:
        query = query.where(recon_bills.c.channel == channel)
    if day is not None:
        query = query.where(recon_bills.c.business_date == day.isoformat())
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _checked_size(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BillRefused(path.name, 0, "", f"cannot read the file ({exc.strerror})") from None
    if size > MAX_BILL_BYTES:
        raise BillRefused(path.name, 0, "", f"larger than {MAX_BILL_BYTES} bytes")
    return size


def current_bill(db: Database, channel: str, day: date) -> dict[str, Any] | None:
    """The CURRENT bill of ``channel`` (or the bank) and ``day``, if taken in."""
    with db.read() as conn:
        return _current_in(conn, channel, day.isoformat())


def _current_in(conn: Connection, channel: str, day: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(recon_bills).where(
            recon_bills.c.channel == channel,
            recon_bills.c.business_date == day,
            recon_bills.c.status == CURRENT,
        )
    ).first()
    return dict(row._mapping) if row is not None else None


def _imported(row: dict[str, Any], *, already: bool, replaced: str | None) -> ImportedBill:
    totals = BillTotals(
        row["lines"],
        row["payments"],
        row["payment_amount"],
        row["refunds"],
        row["refund_amount"],
        row["fee"],
    )
    return ImportedBill(
        row["bill_id"],
        row["channel"],
        date.fromisoformat(row["business_date"]),
        row["file_name"],
        row["sha256"],
        totals,
        already,
        replaced,
    )


def _sql_text(path: Path) -> str:
    return str(path).replace("'", "''")
